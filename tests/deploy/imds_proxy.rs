//! The azure-imds-proxy overlay, run as written. The init container that fetches secrets
//! runs as in azure-workload-identity. Then, in a network namespace laid out like the
//! pod's (root; skipped with a message otherwise): the redirect init container with
//! exactly its arguments and NET_ADMIN as its only capability, the native sidecar with
//! its arguments, environment and user plus what the AKS webhook injects, its startup
//! probe as written, and a client as the app would be one: plain HTTP to 169.254.169.254
//! for the Deployment, the App Service contract with the task's IDENTITY_ENDPOINT and the
//! Secret key behind IDENTITY_HEADER for the Job.
//!
//! Replaced, because they point off this machine: Entra ID, reached under its public name
//! through a CONNECT proxy with the test CA as the whole trust store, and the paths of the
//! projected token and of the Secret volume.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::azure::{aks_identity, aks_token, init_container_runs_as_written};
use super::{
    AZURE_IMDS_PROXY, K8sWorkload, container_env, k8s_ids, k8s_workloads, pod_volume, readable_file,
};
use testkit::azure::{ConnectProxy, Entra};
use testkit::deploy::{binary_for, command_as, documented_env_vars, str_at, strings};
use testkit::{Run, Scratch, netns};

#[test]
fn kubernetes_azure_imds_proxy_overlay_runs_as_written() {
    let workloads = k8s_workloads(AZURE_IMDS_PROXY);
    for workload in &workloads {
        init_container_runs_as_written(workload);
    }
    if !netns::is_root() {
        eprintln!(
            "skipped: the proxy and its redirect run in a network namespace, which needs root"
        );
        return;
    }
    let mut forms = Vec::new();
    for workload in workloads {
        let form = std::thread::spawn(move || {
            netns::enter_new();
            netns::pod_network();
            proxy_runs_as_written(&workload)
        })
        .join()
        .unwrap();
        forms.push(form);
    }
    forms.sort();
    assert_eq!(
        forms,
        ["app service", "redirect"],
        "the Deployment and the Job show one each"
    );
}

fn init_containers(workload: &K8sWorkload) -> Vec<Value> {
    workload.template["spec"]["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Runs the workload's IMDS proxy (and its redirect) as written; returns which form it is.
fn proxy_runs_as_written(workload: &K8sWorkload) -> &'static str {
    let what = &workload.what;
    let pod = &workload.template["spec"];
    let containers = init_containers(workload);
    let is_proxy =
        |c: &&Value| strings(c.get("args")).first().map(String::as_str) == Some("imds-proxy");
    let redirect = containers
        .iter()
        .filter(is_proxy)
        .find(|c| strings(c.get("args")).contains(&"--install-redirect".to_owned()));
    let sidecar = containers
        .iter()
        .filter(is_proxy)
        .find(|c| c["restartPolicy"] == "Always")
        .unwrap_or_else(|| panic!("{what}: no imds-proxy native sidecar"));
    let skipped =
        workload.template["metadata"]["annotations"]["azure.workload.identity/skip-containers"]
            .as_str()
            .unwrap_or_default();
    assert!(
        !skipped
            .split(';')
            .any(|c| c.trim() == str_at(sidecar, "/name")),
        "{what}: the webhook must give imds-proxy the identity"
    );

    let bin_dir = Scratch::tmpfs("imds-bin");
    let binary = binary_for(testkit::binary!(), &bin_dir);
    if let Some(redirect) = redirect {
        install_redirect_as_written(what, redirect, &binary);
    }

    // What the AKS webhook injects, and Entra ID under its public name.
    let (client_id, tenant) = aks_identity(workload);
    let files = Scratch::tmpfs("imds-aks-token");
    let (token, token_file, ca_file) = aks_token(workload, tenant, &files);
    let entra = Entra::start_for(&token, tenant, client_id);
    let connect = ConnectProxy::start(entra.server.port, entra.server.port);

    // The Secret volume the App Service form mounts, as the kubelet writes it.
    let header = format!(
        "{}0123456789abcdef0123456789abcdef",
        testkit::unique_id('x')
    );
    let secret_dir = Scratch::tmpfs("imds-header");
    let mut args = strings(sidecar.get("args"));
    for mount in sidecar["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod_volume(pod, str_at(mount, "/name"), what);
        let secret = str_at(volume, "/secret/secretName");
        let mount_path = str_at(mount, "/mountPath");
        assert_eq!(mount["readOnly"], true, "{what}");
        readable_file(&secret_dir, "header", &header);
        let host = secret_dir.path.display().to_string();
        args = args
            .iter()
            .map(|a| a.replacen(mount_path, &host, 1))
            .collect();
        eprintln!("{what}: the Secret {secret} is mounted at {mount_path}");
    }
    let env = container_env(sidecar, what);
    let documented = documented_env_vars(testkit::binary!());
    for (name, _) in &env {
        if name.starts_with("SECRET_SIDECAR_") {
            assert!(documented.contains(name), "{what}: {name} is not read");
        }
    }
    let user = k8s_ids(pod, sidecar, what);
    let log = Scratch::disk("imds-sidecar-log");
    let mut command = command_as(&user, &binary);
    command
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .env("AZURE_CLIENT_ID", client_id)
        .env("AZURE_TENANT_ID", tenant)
        .env("AZURE_FEDERATED_TOKEN_FILE", &token_file)
        .env("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/")
        .env("HTTPS_PROXY", &connect.url)
        .env("SSL_CERT_FILE", &ca_file)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log.path.join("out")).unwrap())
        .stderr(std::fs::File::create(log.path.join("err")).unwrap());
    let mut child = command.spawn().unwrap();
    let log_text = || std::fs::read_to_string(log.path.join("err")).unwrap_or_default();

    // The startup probe, as written, with the image's path to the binary.
    let probe = strings(sidecar.pointer("/startupProbe/exec/command"));
    assert_eq!(
        probe.first().map(String::as_str),
        Some("/usr/local/bin/secret-sidecar"),
        "{what}"
    );
    let started = Instant::now();
    while !command_as(&user, &binary)
        .args(&probe[1..])
        .env_clear()
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{what}: exited: {}",
            log_text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: never ready: {}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let resource = args
        .iter()
        .find_map(|a| a.strip_prefix("--resource="))
        .unwrap_or_else(|| panic!("{what}: --resource"))
        .to_owned();
    let expected = match resource.as_str() {
        r if r == testkit::azure::ARM_RESOURCE => entra.arm_token.clone(),
        _ => entra.access_token.clone(),
    };

    let form = match redirect {
        Some(_) => {
            // The app knows only IMDS's address.
            let answer = curl(&[
                "-H",
                "Metadata: true",
                &format!(
                    "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}"
                ),
            ]);
            assert_eq!(
                answer["access_token"],
                expected.as_str(),
                "{what}: {answer}"
            );
            "redirect"
        }
        None => {
            let task = pod["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| has_env(c, "IDENTITY_ENDPOINT"))
                .unwrap_or_else(|| panic!("{what}: no container has IDENTITY_ENDPOINT"));
            let (endpoint, header_ref) = app_service_env(task, what);
            let secret_volume = pod_volume(pod, str_at(&sidecar["volumeMounts"][0], "/name"), what);
            assert_eq!(
                header_ref,
                (
                    str_at(secret_volume, "/secret/secretName").to_owned(),
                    "header".to_owned()
                ),
                "{what}: IDENTITY_HEADER must come from the Secret key the proxy reads"
            );
            let answer = curl(&[
                "-H",
                &format!("X-IDENTITY-HEADER: {header}"),
                &format!("{endpoint}?api-version=2019-08-01&resource={resource}"),
            ]);
            assert_eq!(
                answer["access_token"],
                expected.as_str(),
                "{what}: {answer}"
            );
            "app service"
        }
    };

    let run = stop(child, &log);
    run.expect_code(0)
        .expect_no_leak(token.as_bytes())
        .expect_no_leak(header.as_bytes());
    run.expect_no_leak(entra.access_token.as_bytes())
        .expect_no_leak(entra.arm_token.as_bytes());
    assert_eq!(entra.token_requests()[0]["client_id"], client_id, "{what}");
    form
}

/// The redirect init container, as written, as uid 0 with NET_ADMIN its only capability.
fn install_redirect_as_written(what: &str, redirect: &Value, binary: &std::path::Path) {
    let context = &redirect["securityContext"];
    assert_eq!(context["runAsUser"], 0, "{what}: capabilities need uid 0");
    assert_eq!(
        context["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN"]),
        "{what}"
    );
    assert_eq!(
        context["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{what}"
    );
    assert_eq!(context["allowPrivilegeEscalation"], false, "{what}");
    assert_ne!(context["privileged"], true, "{what}");
    let output = Command::new("setpriv")
        .args(["--bounding-set=-all,+net_admin", "--inh-caps=-all", "--"])
        .arg(binary)
        .args(strings(redirect.get("args")))
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run::from(output)
        .expect_code(0)
        .expect_stderr("redirect installed");
}

fn has_env(container: &Value, name: &str) -> bool {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["name"] == name)
}

/// IDENTITY_ENDPOINT's value and the (Secret, key) IDENTITY_HEADER comes from.
fn app_service_env(task: &Value, what: &str) -> (String, (String, String)) {
    let env = task["env"].as_array().unwrap();
    let find = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{what}: {name}"))
    };
    let endpoint = str_at(find("IDENTITY_ENDPOINT"), "/value").to_owned();
    let reference = &find("IDENTITY_HEADER")["valueFrom"]["secretKeyRef"];
    (
        endpoint,
        (
            str_at(reference, "/name").to_owned(),
            str_at(reference, "/key").to_owned(),
        ),
    )
}

fn curl(args: &[&str]) -> Value {
    let output = Command::new("curl")
        .args(["-s", "--noproxy", "*", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "curl: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn stop(child: Child, log: &Scratch) -> Run {
    let mut child = child;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    Run::from(std::process::Output {
        status,
        stdout: std::fs::read(log.path.join("out")).unwrap(),
        stderr: std::fs::read(log.path.join("err")).unwrap(),
    })
}
