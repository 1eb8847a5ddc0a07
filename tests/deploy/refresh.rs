//! The rotation artifacts, run as written: the aws-irsa-refresh overlay's native sidecar,
//! the ECS task whose app waits for the sidecar's health check, and the Compose refresh
//! service. Each runs with its own arguments and environment and is probed with its own
//! probe command; then a secret is rotated and must reach the file, and SIGTERM must
//! leave the set in place.
//!
//! Replaced besides what tests/deploy.rs replaces: the interval (`--refresh`, minutes in
//! the artifacts) is shortened so that the rotation arrives within the test, and each
//! runs in an AWS account of its own (STS, the ECS agent or the static key name it), so
//! that rotating a demo secret cannot disturb the other deployment tests that read it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use super::{
    COMPOSE, Deployment, REFRESH_OVERLAY, REFRESH_TASK_DEFINITION, compose_env, compose_mounts,
    compose_readers, compose_strings, container, credentials_server, ecs_invocation,
    k8s_deployment, pod_specs,
};
use testkit::deploy::{
    DemoSecrets, Ids, Invocation, Reader, Volume, VolumeDir, binary_for, command_as,
    documented_env_vars, image_parts, json, kustomize, read_as_app, seed, sidecar_command, str_at,
    strings, yaml,
};
use testkit::localstack::Seeder;
use testkit::refresh::{Running, wait_until};
use testkit::sts::Sts;
use testkit::{Scratch, fake_jwt};

const BINARY: &str = "/usr/local/bin/secret-sidecar";
const WAIT: Duration = Duration::from_secs(30);

/// A 12-digit account no other test uses.
fn fresh_account() -> String {
    format!("{:012}", fastrand::u64(100_000_000_000..999_999_999_999))
}

/// Runs `deployment`'s refresh sidecar until its own `probe` passes, checks its readers,
/// rotates a secret, sees the file change, and stops it.
fn run_refresh(
    deployment: &Deployment,
    probe: &[String],
    account: &str,
    identity: &[(&str, String)],
) {
    let sidecar = &deployment.sidecar;
    let what = &sidecar.what;
    let documented = documented_env_vars(testkit::binary!());
    for (name, _) in &sidecar.env {
        if name.starts_with("SECRET_SIDECAR_") {
            assert!(documented.contains(name), "{what}: {name} is not read");
        }
    }
    assert!(
        sidecar.option("refresh").is_some(),
        "{what}: runs without --refresh"
    );
    let output_dir = sidecar.option("output-dir").expect("--output-dir");
    assert_eq!(
        probe,
        [BINARY, "--probe", &format!("--output-dir={output_dir}")],
        "{what}: the probe checks the sidecar's own output directory with the image's binary"
    );

    let expected = seed(sidecar, account);
    let volume = VolumeDir::new(deployment.volume, "refresh-volume");
    let bin_dir = Scratch::tmpfs("refresh-bin");
    let binary = binary_for(testkit::binary!(), &bin_dir);
    let shortened = sidecar.refreshing_every("200ms");
    let running = Running::spawn(sidecar_command(&shortened, &binary, &volume.path, identity));
    let probe_passes = || {
        command_as(&sidecar.user, &binary)
            .args(&probe[1..2])
            .arg(format!("--output-dir={}", volume.path.display()))
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };
    wait_until(&format!("{what}: its probe"), WAIT, probe_passes);

    for reader in &deployment.readers {
        assert!(
            reader.read_only,
            "{}: mount the secrets read-only",
            reader.what
        );
        for path in reader.paths.iter().filter(|p| !p.contains("/..")) {
            let file = path
                .strip_prefix(&format!("{}/", reader.mount_path.trim_end_matches('/')))
                .unwrap();
            let got = read_as_app(reader, &volume.path, path)
                .unwrap_or_else(|e| panic!("{}: cannot read {path}: {e}", reader.what));
            assert_eq!(Some(&got), expected.get(file), "{}: {path}", reader.what);
        }
    }

    // A rotation of a whole-secret file reaches it within the (shortened) interval.
    let demo = DemoSecrets::of(sidecar, "aws");
    let (file, name) = sidecar
        .secrets()
        .iter()
        .map(|s| testkit::deploy::SecretArg::parse(s, "aws"))
        .find(|s| s.key.is_none())
        .map(|s| (s.file, s.name))
        .expect("a whole secret to rotate");
    assert!(demo.stored.contains_key(&name));
    let rotated = format!("rotated value of {name}");
    Seeder::in_account(account).put_in(&sidecar.region(), &name, &rotated);
    wait_until(&format!("{what}: the rotated {file}"), WAIT, || {
        fs::read(volume.path.join(&file)).ok() == Some(rotated.clone().into_bytes())
    });

    let run = running.stop();
    run.expect_code(0)
        .expect_stderr("secret changed")
        .expect_no_leak(rotated.as_bytes());
    assert!(run.stdout.is_empty(), "{what}: stdout {}", run.stdout);
    assert_eq!(
        fs::read(volume.path.join(&file)).ok(),
        Some(rotated.into_bytes()),
        "{what}: the set stays after SIGTERM"
    );
    assert!(
        !probe_passes(),
        "{what}: the probe of a stopped sidecar passes"
    );
}

#[test]
fn kubernetes_refresh_overlay_runs_as_written() {
    let _ = Seeder::connect();
    let objects = kustomize(REFRESH_OVERLAY);
    let mut natives = 0;
    for (name, _, pod) in pod_specs(&objects) {
        let what = format!("{REFRESH_OVERLAY} {name}");
        let Some(native) = pod["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                image_parts(str_at(c, "/image")).0 == "secret-sidecar"
                    && c["restartPolicy"] == "Always"
            })
        else {
            continue;
        };
        natives += 1;
        // The app is a regular container: the kubelet starts it only once the native
        // sidecar's startup probe has passed.
        let probe = strings(native.pointer("/startupProbe/exec/command"));
        assert_eq!(
            strings(native.pointer("/livenessProbe/exec/command")),
            probe,
            "{what}: liveness reports a stale set"
        );
        let deployment = k8s_deployment(pod, native, &what);

        // IRSA as the webhook injects it, with STS handing out keys of an account of
        // this test's own.
        let account_name = str_at(pod, "/serviceAccountName");
        let account = objects
            .iter()
            .find(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == account_name)
            .unwrap_or_else(|| panic!("{what}: no ServiceAccount {account_name}"));
        let role = str_at(account, "/metadata/annotations/eks.amazonaws.com~1role-arn");
        let aws_account = fresh_account();
        let sts = Sts::issuing(&aws_account);
        let token_dir = Scratch::tmpfs("refresh-irsa-token");
        let token = token_dir.path.join("token");
        fs::write(
            &token,
            fake_jwt("system:serviceaccount:secret-sidecar-demo:demo-app"),
        )
        .unwrap();
        fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
        run_refresh(
            &deployment,
            &probe,
            &aws_account,
            &[
                ("AWS_ROLE_ARN", role.to_owned()),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
                ("AWS_ENDPOINT_URL_STS", sts.url().to_owned()),
            ],
        );
        assert!(!sts.tokens().is_empty(), "{what}: STS never asked");
    }
    assert_eq!(
        natives, 1,
        "{REFRESH_OVERLAY}: the Deployment runs the refresh sidecar"
    );
}

#[test]
fn ecs_refresh_task_definition_runs_as_written() {
    let _ = Seeder::connect();
    let path = REFRESH_TASK_DEFINITION;
    let task = json(path);
    let sidecar_def = container(&task, "secret-sidecar");
    let what = format!("{path} secret-sidecar");
    assert_eq!(
        sidecar_def["essential"], false,
        "{what}: a sidecar that may stop without the app"
    );
    let health = strings(sidecar_def.pointer("/healthCheck/command"));
    assert_eq!(
        health.first().map(String::as_str),
        Some("CMD"),
        "{what}: exec form"
    );
    let app = task["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["essential"] == true)
        .expect("an essential app");
    let depends: Vec<&Value> = app["dependsOn"].as_array().into_iter().flatten().collect();
    assert!(
        depends
            .iter()
            .any(|d| d["containerName"] == "secret-sidecar" && d["condition"] == "HEALTHY"),
        "{path}: the app must wait for the sidecar's health check (HEALTHY): SUCCESS needs an exit"
    );
    let sidecar = ecs_invocation(sidecar_def, &what);
    let volume_def = &task["volumes"][0];
    let volume = Volume::docker_tmpfs(
        volume_def
            .pointer("/dockerVolumeConfiguration/driverOpts/o")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let mount = app["mountPoints"][0].clone();
    let mut command = strings(app.get("entryPoint"));
    command.extend(strings(app.get("command")));
    let reader = Reader::new(
        &format!("{path} app"),
        &command,
        str_at(&mount, "/containerPath"),
        mount["readOnly"] == true,
        Ids::docker(str_at(app, "/user")),
    );
    let account = fresh_account();
    let agent = credentials_server(&account);
    run_refresh(
        &Deployment {
            sidecar,
            readers: vec![reader],
            volume,
        },
        &health[1..],
        &account,
        &[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/v2/credentials/task", agent.url),
        )],
    );
}

#[test]
fn compose_refresh_service_runs_as_written() {
    let _ = Seeder::connect();
    let compose = yaml(COMPOSE);
    let services = compose["services"].as_object().unwrap();
    let (name, service) = services
        .iter()
        .find(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| image_parts(i).0 == "secret-sidecar")
                && strings(s.get("command"))
                    .iter()
                    .any(|a| a.starts_with("--refresh"))
        })
        .expect("a secret-sidecar service with --refresh");
    let what = format!("{COMPOSE} {name}");
    let health = compose_strings(&service["healthcheck"]["test"], &what);
    assert_eq!(
        health.first().map(String::as_str),
        Some("CMD"),
        "{what}: exec form"
    );
    // LocalStack takes a 12-digit access key id as the account: one of this test's own.
    let account = fresh_account();
    let env = compose_env(service, &what)
        .into_iter()
        .map(|(name, value)| match name.as_str() {
            "AWS_ACCESS_KEY_ID" => (name, account.clone()),
            _ => (name, value),
        })
        .collect();
    let sidecar = Invocation {
        what: what.clone(),
        args: compose_strings(&service["command"], &what),
        env,
        user: Ids::docker(str_at(service, "/user")),
    };
    let output_dir = sidecar.option("output-dir").expect("--output-dir");
    let (volume_name, _, _) = compose_mounts(service)
        .into_iter()
        .find(|(_, target, _)| *target == output_dir)
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {output_dir}"));
    let volume_def = &compose["volumes"][&volume_name];
    let volume = Volume::docker_tmpfs(volume_def["driver_opts"]["o"].as_str().unwrap_or_default());
    let readers = compose_readers(services, name, "service_healthy", &volume_name);
    assert!(
        !readers.is_empty(),
        "{what}: no app waits for its health check"
    );
    run_refresh(
        &Deployment {
            sidecar,
            readers,
            volume,
        },
        &health[1..],
        &account,
        &[],
    );
}
