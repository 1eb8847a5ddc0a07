//! The cross-cloud overlays, run as written: gke-to-aws (a Google ID token from the
//! metadata server fake, exchanged at an STS fake) and external-idp-token (an access token
//! from an OAuth2 fake, for the init container and for the native sidecar that keeps one
//! fresh for the app). STS hands out keys for an account of its own, so LocalStack serves
//! the secrets only to the exchanged credentials.
//!
//! Replaced, because they point off this machine: the IdP's token URL and the mounted
//! client-secret file (each checked against the manifest first), the metadata server, and
//! STS.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    EXTERNAL_IDP_TOKEN, GKE_TO_AWS, container_env, exercise_with, k8s_ids, k8s_workloads,
    pod_volume,
};
use testkit::deploy::{
    Reader, Volume, VolumeDir, binary_for, command_as, documented_env_vars, exits_zero,
    read_as_app, seed, str_at, strings,
};
use testkit::gcp::Metadata;
use testkit::localstack::Seeder;
use testkit::oauth2::{Client, IdP};
use testkit::sts::Sts;
use testkit::{Run, Scratch, jwt_subject};

/// The account STS's keys belong to: the secrets are seeded there and nowhere else.
const GKE_ACCOUNT: &str = "444455556666";
const IDP_ACCOUNT: &str = "777788889999";

fn var<'e>(env: &'e [(String, String)], name: &str, what: &str) -> &'e str {
    env.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{what}: {name} is not set"))
}

#[test]
fn kubernetes_gke_to_aws_overlay_runs_as_written() {
    let _ = Seeder::connect(); // a clear message when LocalStack is not running
    for workload in k8s_workloads(GKE_TO_AWS) {
        let what = &workload.what;
        let sidecar = &workload.deployment.sidecar;
        assert!(
            workload.egress_allows("169.254.169.254/32", 80),
            "{what}: the GKE metadata server (169.254.169.254:80) must be reachable"
        );
        let google_account = workload
            .annotation("iam.gke.io/gcp-service-account")
            .unwrap_or_else(|| panic!("{what}: ID tokens need a Google service account"));
        let audience = sidecar
            .option("aws-token-audience")
            .unwrap_or_else(|| panic!("{what}: no --aws-token-audience"));
        let role = sidecar.env_var("AWS_ROLE_ARN").expect("AWS_ROLE_ARN");

        let metadata = Metadata::start("ya29.unused-by-aws", google_account);
        let sts = Sts::issuing(GKE_ACCOUNT);
        let expected = seed(sidecar, GKE_ACCOUNT);
        let run = exercise_with(
            &workload.deployment,
            &expected,
            &[
                ("GCE_METADATA_HOST", metadata.host()),
                ("AWS_ENDPOINT_URL_STS", sts.url().to_owned()),
            ],
            "web-identity token obtained",
        );
        run.expect_stderr("WebIdentityToken");

        // STS got the metadata server's ID token for the manifest's audience, once, for
        // the manifest's role.
        let tokens = sts.tokens();
        assert_eq!(tokens.len(), 1, "{what}");
        assert_eq!(
            jwt_subject(&tokens[0]),
            format!("{google_account}|{audience}")
        );
        let form = testkit::http::form(&sts.server.requests()[0].body);
        assert_eq!(form["RoleArn"], role, "{what}");
        run.expect_no_leak(tokens[0].as_bytes());
    }
}

#[test]
fn kubernetes_external_idp_token_overlay_runs_as_written() {
    let _ = Seeder::connect(); // a clear message when LocalStack is not running
    let mut sidecars_run = 0;
    for workload in k8s_workloads(EXTERNAL_IDP_TOKEN) {
        let what = &workload.what;
        let sidecar = &workload.deployment.sidecar;
        let env = &sidecar.env;
        assert!(
            workload.egress_allows("0.0.0.0/0", 443),
            "{what}: the identity provider and AWS need egress on 443"
        );
        let secret_path = var(env, "SECRET_SIDECAR_OAUTH2_CLIENT_SECRET_FILE", what);
        let (volume, key) = workload.volume_for(secret_path);
        assert!(
            volume["secret"]["secretName"].is_string(),
            "{what}: the client secret must come from a Secret: {volume}"
        );
        let idp = IdP::start(Client {
            id: var(env, "SECRET_SIDECAR_OAUTH2_CLIENT_ID", what).to_owned(),
            secret: "idp-client-secret-deploy-never-log-me".to_owned(),
            scope: Some(var(env, "SECRET_SIDECAR_OAUTH2_SCOPE", what).to_owned()),
            lifetime: 3600,
        });
        // What the kubelet mounts from the Secret: its key as a file.
        let mounted = Scratch::tmpfs("idp-client");
        let secret_file = mounted.path.join(&key);
        fs::write(&secret_file, "idp-client-secret-deploy-never-log-me\n").unwrap();
        allow_everyone(&mounted.path, &secret_file);

        let sts = Sts::issuing(IDP_ACCOUNT);
        let expected = seed(sidecar, IDP_ACCOUNT);
        let redirected = [
            ("SECRET_SIDECAR_OAUTH2_TOKEN_URL", idp.token_url()),
            (
                "SECRET_SIDECAR_OAUTH2_CLIENT_SECRET_FILE",
                secret_file.display().to_string(),
            ),
            ("AWS_ENDPOINT_URL_STS", sts.url().to_owned()),
        ];
        let run = exercise_with(
            &workload.deployment,
            &expected,
            &redirected,
            "web-identity token obtained",
        );
        assert_eq!(
            sts.tokens(),
            idp.issued(),
            "{what}: STS got the IdP's token"
        );
        run.expect_no_leak(b"idp-client-secret-deploy-never-log-me");

        // The native sidecar that keeps a token for the app, where there is one.
        let natives: Vec<&Value> = workload.template["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["restartPolicy"] == "Always")
            .collect();
        for native in natives {
            token_sidecar_runs_as_written(&workload, native, &idp, &redirected[..2]);
            sidecars_run += 1;
        }
    }
    assert_eq!(sidecars_run, 1, "the Deployment shows the token sidecar");
}

/// Runs the native sidecar with its arguments and environment, probes it with its own
/// startup probe, and reads the token as the app that names it in
/// AWS_WEB_IDENTITY_TOKEN_FILE.
fn token_sidecar_runs_as_written(
    workload: &super::K8sWorkload,
    native: &Value,
    idp: &IdP,
    redirected: &[(&str, String)],
) {
    let what = format!("{} container {}", workload.what, str_at(native, "/name"));
    let pod = &workload.template["spec"];
    let args = strings(native.get("args"));
    assert_eq!(args.first().map(String::as_str), Some("token"), "{what}");
    let out = args
        .iter()
        .find_map(|a| a.strip_prefix("--out="))
        .unwrap_or_else(|| panic!("{what}: --out=FILE"))
        .to_owned();
    let env = container_env(native, &what);
    let documented = documented_env_vars(testkit::binary!());
    for (name, _) in &env {
        if name.starts_with("SECRET_SIDECAR_") {
            assert!(documented.contains(name), "{what}: {name} is not read");
        }
    }

    // Its token volume, prepared as the kubelet prepares an emptyDir with fsGroup.
    let mount = native["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| out.starts_with(&format!("{}/", str_at(m, "/mountPath"))))
        .unwrap_or_else(|| panic!("{what}: nothing mounted holds {out}"));
    let volume_name = str_at(mount, "/name");
    let volume = pod_volume(pod, volume_name, &what);
    assert_eq!(volume["emptyDir"]["medium"], "Memory", "{what}: {volume}");
    let fs_group = pod["securityContext"]["fsGroup"].as_u64().map(|g| g as u32);
    let dir = VolumeDir::new(Volume::EmptyDir { fs_group }, "token-volume");
    let mount_path = str_at(mount, "/mountPath");
    let host = |path: &str| path.replacen(mount_path, &dir.path.display().to_string(), 1);
    let args: Vec<String> = args.iter().map(|a| host(a)).collect();

    let bin_dir = Scratch::tmpfs("token-bin");
    let binary = binary_for(testkit::binary!(), &bin_dir);
    let user = k8s_ids(pod, native, &what);
    let mut command = command_as(&user, &binary);
    command
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .envs(redirected.iter().map(|(n, v)| (*n, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();

    // The startup probe, as written, with the image's path to the binary.
    let probe = strings(native.pointer("/startupProbe/exec/command"));
    assert_eq!(
        probe.first().map(String::as_str),
        Some("/usr/local/bin/secret-sidecar"),
        "{what}: the probe runs the image's binary"
    );
    let probe_passes = || exits_zero(&user, &binary, probe[1..].iter().map(|a| host(a)));
    let started = Instant::now();
    while !probe_passes() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{what}: exited before the first token"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: no token"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The app reads the token where AWS_WEB_IDENTITY_TOKEN_FILE says, as its own user.
    let app = pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| {
            container_env(c, &what)
                .iter()
                .any(|(n, _)| n == "AWS_WEB_IDENTITY_TOKEN_FILE")
        })
        .unwrap_or_else(|| panic!("{what}: no container reads the token"));
    let app_env = container_env(app, &what);
    let token_path = var(&app_env, "AWS_WEB_IDENTITY_TOKEN_FILE", &what);
    assert_eq!(token_path, out, "{what}: the app reads another file");
    var(&app_env, "AWS_ROLE_ARN", &what);
    let app_mount = app["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"].as_str() == Some(volume_name))
        .unwrap_or_else(|| panic!("{what}: the app does not mount {volume_name}"));
    let app_what = format!("{} container {}", workload.what, str_at(app, "/name"));
    let reader = Reader::new(
        &app_what,
        &[token_path.to_owned()],
        str_at(app_mount, "/mountPath"),
        app_mount["readOnly"] == true,
        k8s_ids(pod, app, &app_what),
    );
    assert!(
        reader.read_only,
        "{what}: mount the token read-only in the app"
    );
    let token = read_as_app(&reader, &dir.path, token_path)
        .unwrap_or_else(|e| panic!("{app_what}: cannot read the token: {e}"));
    assert_eq!(
        Some(String::from_utf8(token).unwrap()),
        idp.issued().last().cloned()
    );

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(0)
        .expect_no_leak(b"idp-client-secret-deploy-never-log-me");
    for token in idp.issued() {
        run.expect_no_leak(token.as_bytes());
    }
}

/// The Secret volume's file, readable by whichever user the manifest runs as (the kubelet
/// gives it the pod's fsGroup).
fn allow_everyone(dir: &Path, file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(file, fs::Permissions::from_mode(0o644)).unwrap();
}
