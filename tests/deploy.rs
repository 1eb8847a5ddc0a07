#![cfg(feature = "aws")]
//! The deployment artifacts cannot drift from the binary: each one is read as its platform
//! would read it, and the real binary runs with exactly the arguments and environment it
//! gives, against LocalStack or the Azure and Google protocol fakes, as the user it names,
//! into a directory prepared the way the platform prepares the shared volume; then the
//! files the app's command names are read as the app's user. Renaming a flag or a
//! variable, moving a mount, or changing a user or group in one place only makes one of
//! these tests fail.
//!
//! Replaced, because they point off this machine: the output directory (a scratch
//! directory), the service endpoints (LocalStack; Entra ID and Key Vault under their
//! public names through a CONNECT proxy, with the test CA as the trust store; Secret
//! Manager and Google STS on loopback), and what the platform injects for identity (a
//! web-identity token file for IRSA; a loopback stand-in for the EKS Pod Identity Agent and
//! the ECS credentials endpoint; the AKS webhook's variables and token file; the GKE
//! metadata server; for federation, the token the kubelet projects, at the path the
//! rendered credential configuration names).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use testkit::deploy::{
    DEFAULT_ACCOUNT, Ids, Invocation, Reader, Volume, VolumeDir, binary_for, documented_env_vars,
    image_parts, json, kustomize, read, read_as_app, repo, run_sidecar, seed, str_at, strings,
    yaml,
};
use testkit::http::{Response, Server};
use testkit::localstack::Seeder;
use testkit::{Run, Scratch, fake_jwt};

/// The crate version every artifact must name.
const VERSION: &str = env!("CARGO_PKG_VERSION");
const AWS_IRSA: &str = "kubernetes-manifests/overlays/aws-irsa";
const AWS_POD_IDENTITY: &str = "kubernetes-manifests/overlays/aws-pod-identity";
const AZURE_WORKLOAD_IDENTITY: &str = "kubernetes-manifests/overlays/azure-workload-identity";
const AZURE_IMDS_PROXY: &str = "kubernetes-manifests/overlays/azure-imds-proxy";
const GCP_WORKLOAD_IDENTITY: &str = "kubernetes-manifests/overlays/gcp-workload-identity";
const GCP_FEDERATION: &str = "kubernetes-manifests/overlays/gcp-federation";
const GKE_TO_AWS: &str = "kubernetes-manifests/overlays/gke-to-aws";
const EXTERNAL_IDP_TOKEN: &str = "kubernetes-manifests/overlays/external-idp-token";
const REFRESH_OVERLAY: &str = "kubernetes-manifests/overlays/aws-irsa-refresh";
/// Every overlay, each run by one test below.
const OVERLAYS: [&str; 9] = [
    AWS_IRSA,
    AWS_POD_IDENTITY,
    AZURE_WORKLOAD_IDENTITY,
    AZURE_IMDS_PROXY,
    GCP_WORKLOAD_IDENTITY,
    GCP_FEDERATION,
    GKE_TO_AWS,
    EXTERNAL_IDP_TOKEN,
    REFRESH_OVERLAY,
];
const TASK_DEFINITIONS: [&str; 2] = ["ecs-task-def/ec2.json", "ecs-task-def/fargate.json"];
/// The rotation variant: the app waits for the sidecar's health check (tests/deploy/refresh.rs).
const REFRESH_TASK_DEFINITION: &str = "ecs-task-def/ec2-refresh.json";
const COMPOSE: &str = "docker-compose.yml";

/// One deployment of secret-sidecar: how it runs, who reads its output, and the volume.
struct Deployment {
    sidecar: Invocation,
    readers: Vec<Reader>,
    volume: Volume,
}

/// Seeds LocalStack, runs, and checks one AWS deployment; `identity` is what the platform
/// injects and `source` the identity source the run must report.
fn exercise(deployment: &Deployment, account: &str, identity: &[(&str, String)], source: &str) {
    let _ = Seeder::connect(); // a clear message when LocalStack is not running
    let expected = seed(&deployment.sidecar, account);
    exercise_with(deployment, &expected, identity, source);
}

/// Runs one deployment whose secrets are already stored (`expected`: file → content),
/// checks what its readers see, and returns the run for further checks.
fn exercise_with(
    deployment: &Deployment,
    expected: &BTreeMap<String, Vec<u8>>,
    identity: &[(&str, String)],
    source: &str,
) -> Run {
    let sidecar = &deployment.sidecar;
    let documented = documented_env_vars(testkit::binary!());
    for (name, _) in &sidecar.env {
        if name.starts_with("SECRET_SIDECAR_") {
            assert!(
                documented.contains(name),
                "{}: {name} is not a variable the binary reads ({documented:?})",
                sidecar.what
            );
        }
    }

    let bin_dir = Scratch::tmpfs("deploy-bin");
    let binary = binary_for(testkit::binary!(), &bin_dir);
    let volume = VolumeDir::new(deployment.volume, "deploy-volume");

    let run = run_sidecar(sidecar, &binary, &volume.path, identity);
    run.expect_code(0).expect_stderr(source);
    assert!(
        run.stdout.is_empty(),
        "{}: stdout {}",
        sidecar.what,
        run.stdout
    );
    if sidecar.option("log-format").as_deref() == Some("json") {
        for line in run.stderr.lines().filter(|l| !l.trim().is_empty()) {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("{}: log line is not JSON ({e}): {line}", sidecar.what));
        }
    }
    for (file, content) in expected {
        run.expect_no_leak(content);
        assert!(
            volume.path.join(file).exists(),
            "{}: {file} was not published",
            sidecar.what
        );
    }

    let mode = sidecar
        .option("mode")
        .map_or(0o440, |m| u32::from_str_radix(&m, 8).unwrap());
    assert!(
        !deployment.readers.is_empty(),
        "{}: nobody reads the volume",
        sidecar.what
    );
    for reader in &deployment.readers {
        assert!(
            reader.read_only,
            "{}: mount the secrets read-only",
            reader.what
        );
        for path in &reader.paths {
            let file = path
                .strip_prefix(&format!("{}/", reader.mount_path.trim_end_matches('/')))
                .unwrap();
            let want = expected.get(file).unwrap_or_else(|| {
                panic!(
                    "{}: reads {path}, but the sidecar publishes only {:?}",
                    reader.what,
                    expected.keys()
                )
            });
            let got = read_as_app(reader, &volume.path, path).unwrap_or_else(|err| {
                panic!(
                    "{}: user {:?} cannot read {path}: {err}",
                    reader.what, reader.user
                )
            });
            assert_eq!(&got, want, "{}: content of {path}", reader.what);
            let actual = fs::metadata(volume.path.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(actual & 0o7777, mode, "{}: mode of {path}", reader.what);
        }
    }
    run
}

/// A loopback stand-in for a container credentials endpoint (the EKS Pod Identity Agent,
/// the ECS agent): it hands out static credentials for `account`.
fn credentials_server(account: &str) -> Server {
    Server::start(vec![Response::json(
        200,
        format!(
            r#"{{"AccessKeyId":"{account}","SecretAccessKey":"test","Token":"test-session","Expiration":"2099-01-01T00:00:00Z"}}"#
        ),
    )])
}

// ---------------------------------------------------------------------------------------
// Kubernetes

/// Every workload's pod spec in a rendered overlay, with a name for messages.
fn pod_specs(objects: &[Value]) -> Vec<(String, &Value, &Value)> {
    objects
        .iter()
        .filter_map(|object| {
            let template = match object["kind"].as_str()? {
                "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => &object["spec"]["template"],
                "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"],
                "Pod" => object,
                _ => return None,
            };
            let name = format!(
                "{}/{}",
                object["kind"].as_str()?,
                str_at(object, "/metadata/name")
            );
            Some((name, template, &template["spec"]))
        })
        .collect()
}

fn k8s_ids(pod: &Value, container: &Value, what: &str) -> Ids {
    let field = |name: &str| {
        container["securityContext"][name]
            .as_u64()
            .or_else(|| pod["securityContext"][name].as_u64())
            .unwrap_or_else(|| panic!("{what}: no numeric {name}"))
            .try_into()
            .unwrap()
    };
    let mut groups: Vec<u32> = pod["securityContext"]["supplementalGroups"]
        .as_array()
        .map(|gs| gs.iter().map(|g| g.as_u64().unwrap() as u32).collect())
        .unwrap_or_default();
    if let Some(fs_group) = pod["securityContext"]["fsGroup"].as_u64() {
        groups.push(fs_group as u32);
    }
    Ids {
        uid: field("runAsUser"),
        gid: field("runAsGroup"),
        groups,
    }
}

/// One workload of a rendered overlay: its deployment as the tests run it, and the
/// rendered objects the identity set-up is read from.
#[cfg_attr(not(any(feature = "azure", feature = "gcp")), allow(dead_code))]
struct K8sWorkload {
    what: String,
    deployment: Deployment,
    service_account: Value,
    /// The pod template (metadata and spec).
    template: Value,
    /// The secret-sidecar init container.
    container: Value,
    /// Everything the overlay renders.
    objects: Vec<Value>,
}

#[cfg_attr(not(any(feature = "azure", feature = "gcp")), allow(dead_code))]
impl K8sWorkload {
    fn annotation(&self, name: &str) -> Option<&str> {
        self.service_account["metadata"]["annotations"][name].as_str()
    }

    /// The rendered volume that the sidecar mounts at a directory holding `path`, and the
    /// file's path inside that volume.
    fn volume_for(&self, path: &str) -> (&Value, String) {
        let mount = self.container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                path.starts_with(&format!(
                    "{}/",
                    str_at(m, "/mountPath").trim_end_matches('/')
                ))
            })
            .unwrap_or_else(|| panic!("{}: nothing mounted holds {path}", self.what));
        assert_eq!(
            mount["readOnly"], true,
            "{}: mount {path} read-only",
            self.what
        );
        assert!(
            mount.get("subPath").is_none(),
            "{}: a subPath mount is not updated when its source changes",
            self.what
        );
        let inside = path[str_at(mount, "/mountPath").trim_end_matches('/').len() + 1..].to_owned();
        let name = str_at(mount, "/name");
        (pod_volume(&self.template["spec"], name, &self.what), inside)
    }

    /// Whether a container other than the sidecar mounts the volume `name`.
    fn others_mount(&self, name: &str) -> bool {
        ["initContainers", "containers"]
            .iter()
            .flat_map(|list| self.template["spec"][list].as_array().into_iter().flatten())
            .filter(|c| c["name"] != self.container["name"])
            .flat_map(|c| c["volumeMounts"].as_array().into_iter().flatten())
            .any(|m| m["name"].as_str() == Some(name))
    }

    /// Whether a NetworkPolicy selecting this pod lets it reach `cidr` (exactly, or any
    /// address) on TCP `port`.
    fn egress_allows(&self, cidr: &str, port: u64) -> bool {
        let labels = &self.template["metadata"]["labels"];
        self.objects
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .filter(|policy| {
                policy["spec"]["podSelector"]["matchLabels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .all(|(k, v)| labels[k] == *v)
            })
            .flat_map(|policy| policy["spec"]["egress"].as_array().into_iter().flatten())
            .any(|rule| {
                let to_ok = rule["to"].as_array().is_none_or(|peers| {
                    peers
                        .iter()
                        .any(|p| p["ipBlock"]["cidr"].as_str() == Some(cidr))
                });
                let port_ok = rule["ports"].as_array().is_none_or(|ports| {
                    ports.iter().any(|p| {
                        p["port"].as_u64() == Some(port)
                            && p["protocol"].as_str().unwrap_or("TCP") == "TCP"
                    })
                });
                to_ok && port_ok
            })
    }
}

/// The pod's volume `name`.
fn pod_volume<'p>(pod: &'p Value, name: &str, what: &str) -> &'p Value {
    pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{what}: no volume {name}"))
}

/// A container's environment, every value a literal (a `valueFrom` could not be run here).
fn container_env(container: &Value, what: &str) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: env {e} has no literal value"));
            (str_at(e, "/name").to_owned(), value.to_owned())
        })
        .collect()
}

/// Every workload of a rendered overlay, read as the kubelet would run it.
/// The deployment a pod describes: `container` (a secret-sidecar in `pod`) as it is
/// invoked, the in-memory volume it publishes into and the containers that read it.
fn k8s_deployment(pod: &Value, container: &Value, what: &str) -> Deployment {
    assert!(
        container.get("command").is_none(),
        "{what}: `command` would replace the image's entrypoint; use `args`"
    );
    let sidecar = Invocation {
        what: what.to_owned(),
        args: strings(container.get("args")),
        env: container_env(container, what),
        user: k8s_ids(pod, container, what),
    };
    let output_dir = sidecar.option("output-dir").expect("--output-dir");
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"].as_str() == Some(output_dir.as_str()))
        .unwrap_or_else(|| panic!("{what}: no volume is mounted at {output_dir}"));
    let volume_name = str_at(mount, "/name");
    let volume = pod_volume(pod, volume_name, what);
    assert_eq!(
        volume["emptyDir"]["medium"].as_str(),
        Some("Memory"),
        "{what}: the secrets volume must be emptyDir {{medium: Memory}}"
    );
    let readers = pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|app| {
            let mount = app["volumeMounts"]
                .as_array()?
                .iter()
                .find(|m| m["name"].as_str() == Some(volume_name))?;
            let mut command = strings(app.get("command"));
            command.extend(strings(app.get("args")));
            let app_what = format!("{what} container {}", str_at(app, "/name"));
            Some(Reader::new(
                &app_what,
                &command,
                str_at(mount, "/mountPath"),
                mount["readOnly"].as_bool() == Some(true),
                k8s_ids(pod, app, &app_what),
            ))
        })
        .collect();
    let fs_group = pod["securityContext"]["fsGroup"].as_u64().map(|g| g as u32);
    Deployment {
        sidecar,
        readers,
        volume: Volume::EmptyDir { fs_group },
    }
}

fn k8s_workloads(overlay: &str) -> Vec<K8sWorkload> {
    let objects = kustomize(overlay);
    let mut out = Vec::new();
    for (name, template, pod) in pod_specs(&objects) {
        let what = format!("{overlay} {name}");
        let sidecars: Vec<&Value> = pod["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| image_parts(str_at(c, "/image")).0 == "secret-sidecar")
            // A native sidecar (restartPolicy: Always) runs `token` or `imds-proxy` beside
            // the app, and `imds-proxy --install-redirect` is an init container that
            // publishes nothing; the overlay's own test runs them.
            .filter(|c| c["restartPolicy"] != "Always")
            .filter(|c| strings(c.get("args")).first().map(String::as_str) != Some("imds-proxy"))
            .collect();
        assert_eq!(
            sidecars.len(),
            1,
            "{what}: one secret-sidecar init container"
        );
        let container = sidecars[0];
        let deployment = k8s_deployment(pod, container, &what);

        // The identity webhooks inject into every container but those named here.
        for (annotation, separator) in [
            ("eks.amazonaws.com/skip-containers", ','),
            ("azure.workload.identity/skip-containers", ';'),
        ] {
            let skipped = template["metadata"]["annotations"][annotation]
                .as_str()
                .unwrap_or_default();
            assert!(
                !skipped
                    .split(separator)
                    .any(|c| c.trim() == str_at(container, "/name")),
                "{what}: {annotation} must not name the sidecar"
            );
        }

        let service_account = objects
            .iter()
            .find(|o| {
                o["kind"] == "ServiceAccount" && o["metadata"]["name"] == pod["serviceAccountName"]
            })
            .unwrap_or_else(|| panic!("{what}: its ServiceAccount is not in the overlay"))
            .clone();
        out.push(K8sWorkload {
            what,
            deployment,
            service_account,
            template: template.clone(),
            container: container.clone(),
            objects: Vec::new(),
        });
    }
    for workload in &mut out {
        workload.objects = objects.clone();
    }
    assert!(!out.is_empty(), "{overlay}: no workload");
    out
}

#[test]
fn kubernetes_irsa_overlay_runs_as_written() {
    for workload in k8s_workloads(AWS_IRSA) {
        let (what, deployment, account) = (
            &workload.what,
            &workload.deployment,
            &workload.service_account,
        );
        let role = str_at(account, "/metadata/annotations/eks.amazonaws.com~1role-arn");
        let role_account = role.split(':').nth(4).expect("a role ARN");
        // What the EKS pod identity webhook injects: the role, and a projected token for
        // this namespace and service account.
        let token_dir = Scratch::tmpfs("irsa-token");
        let token = token_dir.path.join("token");
        let subject = format!(
            "system:serviceaccount:{}:{}",
            str_at(account, "/metadata/namespace"),
            str_at(account, "/metadata/name")
        );
        fs::write(&token, fake_jwt(&subject)).unwrap();
        fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
        eprintln!("{what}: as {role}");
        exercise(
            deployment,
            role_account,
            &[
                ("AWS_ROLE_ARN", role.to_owned()),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
                ("AWS_STS_REGIONAL_ENDPOINTS", "regional".to_owned()),
            ],
            "WebIdentityToken",
        );
    }
}

#[test]
fn kubernetes_pod_identity_overlay_runs_as_written() {
    for workload in k8s_workloads(AWS_POD_IDENTITY) {
        let (what, deployment, account) = (
            &workload.what,
            &workload.deployment,
            &workload.service_account,
        );
        assert!(
            account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_null(),
            "{what}: with EKS Pod Identity the ServiceAccount must not carry the IRSA annotation"
        );
        // What the EKS Pod Identity webhook injects: the agent's URL and a token file
        // whose contents go in the Authorization header.
        let agent = credentials_server(DEFAULT_ACCOUNT);
        let token_dir = Scratch::tmpfs("pod-identity-token");
        let token = token_dir.path.join("eks-pod-identity-token");
        let jwt = fake_jwt("system:serviceaccount:pod-identity");
        fs::write(&token, &jwt).unwrap();
        fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
        exercise(
            deployment,
            DEFAULT_ACCOUNT,
            &[
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    format!("{}/v1/credentials", agent.url),
                ),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    token.display().to_string(),
                ),
            ],
            "EcsContainer",
        );
        let requests = agent.requests();
        assert!(!requests.is_empty(), "{what}: the agent was never asked");
        assert_eq!(requests[0].header("authorization"), Some(jwt.as_str()));
    }
}

/// Writes `content` as a file the sidecar's user can read, as the kubelet writes a
/// projected token or a ConfigMap key for a pod with an fsGroup.
#[cfg(any(feature = "azure", feature = "gcp"))]
fn readable_file(dir: &Scratch, name: &str, content: &str) -> std::path::PathBuf {
    fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path.join(name);
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// The `system:serviceaccount:NS:NAME` subject of a ServiceAccount's tokens.
#[cfg(any(feature = "azure", feature = "gcp"))]
fn subject(account: &Value) -> String {
    format!(
        "system:serviceaccount:{}:{}",
        str_at(account, "/metadata/namespace"),
        str_at(account, "/metadata/name")
    )
}

#[cfg(feature = "azure")]
#[path = "deploy/azure.rs"]
mod azure;
#[cfg(feature = "gcp")]
#[path = "deploy/gcp.rs"]
mod gcp;
#[cfg(feature = "gcp")] // and aws, as this whole file
#[path = "deploy/identity.rs"]
mod identity;
#[cfg(feature = "azure")]
#[path = "deploy/imds_proxy.rs"]
mod imds_proxy;

#[path = "deploy/refresh.rs"]
mod refresh;

// ---------------------------------------------------------------------------------------
// ECS

fn container<'t>(task: &'t Value, name: &str) -> &'t Value {
    task["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The Dockerfile's `VOLUME` path and the owner of the directory it copies there.
fn dockerfile_volume() -> (String, u32, u32) {
    let dockerfile = read("Dockerfile");
    let volume = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("VOLUME "))
        .expect("the Dockerfile declares a VOLUME");
    let path = serde_json::from_str::<Vec<String>>(volume).expect("VOLUME [\"/path\"]")[0].clone();
    let owner = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && l.trim_end().trim_end_matches('/').ends_with(&path))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("--chown="))
        })
        .unwrap_or("0:0");
    let ids = Ids::docker(owner);
    (path, ids.uid, ids.gid)
}

/// How ECS runs a container of the image: its `command` as the arguments, its
/// `environment`, its `user`.
fn ecs_invocation(container: &Value, what: &str) -> Invocation {
    Invocation {
        what: what.to_owned(),
        args: strings(container.get("command")),
        env: container["environment"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    str_at(e, "/name").to_owned(),
                    str_at(e, "/value").to_owned(),
                )
            })
            .collect(),
        user: Ids::docker(str_at(container, "/user")),
    }
}

fn ecs_deployment(path: &str) -> (Deployment, Value) {
    let task = json(path);
    let containers = task["containerDefinitions"].as_array().unwrap();
    let sidecars: Vec<&Value> = containers
        .iter()
        .filter(|c| image_parts(str_at(c, "/image")).0 == "secret-sidecar")
        .collect();
    assert_eq!(sidecars.len(), 1, "{path}: one secret-sidecar container");
    let sc = sidecars[0];
    let sc_name = str_at(sc, "/name");
    let what = format!("{path} {sc_name}");
    assert_eq!(sc["essential"], false, "{what}: must be essential: false");
    assert!(
        sc.get("entryPoint").is_none(),
        "{what}: entryPoint would replace the binary; use command"
    );
    let sidecar = ecs_invocation(sc, &what);
    let output_dir = sidecar.option("output-dir").expect("--output-dir");
    let mount = sc["mountPoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["containerPath"].as_str() == Some(output_dir.as_str()))
        .unwrap_or_else(|| panic!("{what}: nothing is mounted at {output_dir}"));
    let source = str_at(mount, "/sourceVolume");
    let volume_def = task["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some(source))
        .unwrap_or_else(|| panic!("{path}: no volume {source}"));

    let volume = if let Some(docker) = volume_def.get("dockerVolumeConfiguration") {
        assert_eq!(docker["driver"], "local", "{path}");
        assert_eq!(docker["scope"], "task", "{path}: a task-scoped volume");
        assert_eq!(docker["driverOpts"]["type"], "tmpfs", "{path}");
        assert_eq!(docker["driverOpts"]["device"], "tmpfs", "{path}");
        // Docker unmounts (and so empties) a tmpfs volume when its last container stops:
        // something must hold it from before the sidecar starts until the app has.
        let holders: Vec<&str> = sc["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["condition"] == "START")
            .map(|d| str_at(d, "/containerName"))
            .filter(|name| {
                container(&task, name)["mountPoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["sourceVolume"].as_str() == Some(source))
            })
            .collect();
        assert!(
            !holders.is_empty(),
            "{what}: must dependsOn (START) a container that keeps {source} mounted"
        );
        Volume::docker_tmpfs(docker["driverOpts"]["o"].as_str().unwrap_or_default())
    } else {
        assert!(
            volume_def.get("host").is_none() && volume_def.get("efsVolumeConfiguration").is_none(),
            "{path}: a task bind mount is the only other volume for secrets"
        );
        // Fargate makes the volume root-owned 0755 unless an image declares the same
        // path as a VOLUME; then it starts as a copy of that directory.
        let (image_path, uid, gid) = dockerfile_volume();
        assert_eq!(
            image_path, output_dir,
            "{what}: on Fargate the output directory must be the image's VOLUME, or it is root-owned"
        );
        Volume::FargateBind {
            uid,
            gid,
            mode: 0o755,
        }
    };

    let readers = containers
        .iter()
        .filter(|c| {
            c["dependsOn"].as_array().into_iter().flatten().any(|d| {
                d["containerName"].as_str() == Some(sc_name) && d["condition"] == "SUCCESS"
            })
        })
        .map(|app| {
            let mount = app["mountPoints"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["sourceVolume"].as_str() == Some(source))
                .unwrap_or_else(|| panic!("{path}: the app does not mount {source}"));
            let mut command = strings(app.get("entryPoint"));
            command.extend(strings(app.get("command")));
            let app_what = format!("{path} {}", str_at(app, "/name"));
            Reader::new(
                &app_what,
                &command,
                str_at(mount, "/containerPath"),
                mount["readOnly"] == true,
                Ids::docker(str_at(app, "/user")),
            )
        })
        .collect();
    (
        Deployment {
            sidecar,
            readers,
            volume,
        },
        task,
    )
}

fn ecs_run(path: &str) {
    let (deployment, task) = ecs_deployment(path);
    let role = str_at(&task, "/taskRoleArn");
    let account = role.split(':').nth(4).unwrap();
    assert_ne!(
        task["executionRoleArn"], task["taskRoleArn"],
        "{path}: the execution role must not be the task role"
    );
    // The ECS agent's credentials endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, always
    // at 169.254.170.2) cannot be redirected; FULL_URI goes through the same provider.
    let agent = credentials_server(account);
    exercise(
        &deployment,
        account,
        &[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/v2/credentials/task", agent.url),
        )],
        "EcsContainer",
    );
    assert!(
        !agent.requests().is_empty(),
        "{path}: credentials never asked for"
    );
}

#[test]
fn ecs_ec2_task_definition_runs_as_written() {
    ecs_run(TASK_DEFINITIONS[0]);
}

#[test]
fn ecs_fargate_task_definition_runs_as_written() {
    ecs_run(TASK_DEFINITIONS[1]);
}

// ---------------------------------------------------------------------------------------
// Docker Compose

/// A Compose string as the container sees it: `$$` is a literal `$`, and nothing here may
/// depend on interpolation from the user's environment.
fn compose_literal(text: &str, what: &str) -> String {
    assert!(
        !text.replace("$$", "").contains('$'),
        "{what}: {text:?} depends on interpolation"
    );
    text.replace("$$", "$")
}

fn compose_strings(value: &Value, what: &str) -> Vec<String> {
    assert!(
        value.is_null() || value.is_array(),
        "{what}: write command as a list, not a string a shell would split"
    );
    strings(Some(value))
        .iter()
        .map(|s| compose_literal(s, what))
        .collect()
}

/// A service's `environment` map as the container sees it.
fn compose_env(service: &Value, what: &str) -> Vec<(String, String)> {
    service["environment"]
        .as_object()
        .expect("environment as a map")
        .iter()
        .map(|(k, v)| {
            let value = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            (k.clone(), compose_literal(&value, what))
        })
        .collect()
}

/// `SOURCE:TARGET[:ro]` entries of a service's volumes.
/// The services that wait for `sidecar` to reach `condition` and read `volume_name`.
fn compose_readers(
    services: &serde_json::Map<String, Value>,
    sidecar: &str,
    condition: &str,
    volume_name: &str,
) -> Vec<Reader> {
    services
        .iter()
        .filter(|(_, s)| s["depends_on"][sidecar]["condition"] == condition)
        .map(|(app_name, app)| {
            let app_what = format!("{COMPOSE} {app_name}");
            let (_, target, read_only) = compose_mounts(app)
                .into_iter()
                .find(|(v, _, _)| v == volume_name)
                .unwrap_or_else(|| panic!("{app_what}: does not mount {volume_name}"));
            let mut command = compose_strings(&app["entrypoint"], &app_what);
            command.extend(compose_strings(&app["command"], &app_what));
            Reader::new(
                &app_what,
                &command,
                &target,
                read_only,
                Ids::docker(str_at(app, "/user")),
            )
        })
        .collect()
}

fn compose_mounts(service: &Value) -> Vec<(String, String, bool)> {
    strings(service.get("volumes"))
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            (
                parts[0].to_owned(),
                parts[1].to_owned(),
                parts.get(2) == Some(&"ro"),
            )
        })
        .collect()
}

#[test]
fn compose_secret_sidecar_service_runs_as_written() {
    let compose = yaml(COMPOSE);
    let services = compose["services"].as_object().unwrap();
    let (name, service) = services
        .iter()
        .find(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| image_parts(i).0 == "secret-sidecar")
                // The refresh service never exits; tests/deploy/refresh.rs runs it.
                && !strings(s.get("command")).iter().any(|a| a.starts_with("--refresh"))
        })
        .expect("a secret-sidecar service");
    let what = format!("{COMPOSE} {name}");
    assert!(
        service.get("build").is_some(),
        "{what}: built from the Dockerfile"
    );
    assert!(
        service.get("entrypoint").is_none(),
        "{what}: keep the image's entrypoint"
    );
    let env = compose_env(service, &what);
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
        .unwrap_or_else(|| panic!("{what}: nothing is mounted at {output_dir}"));
    let volume_def = &compose["volumes"][&volume_name];
    assert_eq!(volume_def["driver_opts"]["type"], "tmpfs", "{COMPOSE}");
    assert_eq!(volume_def["driver_opts"]["device"], "tmpfs", "{COMPOSE}");
    let volume = Volume::docker_tmpfs(volume_def["driver_opts"]["o"].as_str().unwrap_or_default());

    // The tmpfs volume is unmounted, contents and all, when its last container stops:
    // the sidecar must wait for a service that keeps it mounted.
    let held = service["depends_on"].as_object().is_some_and(|deps| {
        deps.iter().any(|(dep, how)| {
            how["condition"] == "service_started"
                && compose_mounts(&services[dep])
                    .iter()
                    .any(|(v, _, _)| *v == volume_name)
        })
    });
    assert!(
        held,
        "{what}: must depend on a running service that mounts {volume_name}"
    );

    let readers = compose_readers(
        services,
        name,
        "service_completed_successfully",
        &volume_name,
    );

    // Compose passes static LocalStack keys; they name LocalStack's default account.
    exercise(
        &Deployment {
            sidecar,
            readers,
            volume,
        },
        DEFAULT_ACCOUNT,
        &[],
        "source=Environment",
    );
}

// ---------------------------------------------------------------------------------------
// Versions

/// Every directory under kubernetes-manifests/overlays, as a path like [`OVERLAYS`].
fn overlay_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = fs::read_dir(repo().join("kubernetes-manifests/overlays"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_dir())
        .map(|entry| {
            format!(
                "kubernetes-manifests/overlays/{}",
                entry.file_name().to_string_lossy()
            )
        })
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_overlay_has_a_test_that_runs_it() {
    let mut known: Vec<String> = OVERLAYS.iter().map(|o| o.to_string()).collect();
    known.sort();
    assert_eq!(
        overlay_dirs(),
        known,
        "add each new overlay to OVERLAYS and give it a test that runs it"
    );
}

#[test]
fn every_artifact_names_the_crate_version() {
    let mut seen = Vec::new();
    let overlays = overlay_dirs();
    for overlay in &overlays {
        let objects = kustomize(overlay);
        for (name, _, pod) in pod_specs(&objects) {
            for list in ["initContainers", "containers"] {
                for c in pod[list].as_array().into_iter().flatten() {
                    let image = str_at(c, "/image");
                    if image_parts(image).0 == "secret-sidecar" {
                        assert_eq!(image_parts(image).1, VERSION, "{overlay} {name}: {image}");
                        seen.push(format!("{overlay} {name}"));
                    }
                }
            }
        }
    }
    for path in TASK_DEFINITIONS
        .into_iter()
        .chain([REFRESH_TASK_DEFINITION])
    {
        for c in json(path)["containerDefinitions"].as_array().unwrap() {
            let image = str_at(c, "/image");
            if image_parts(image).0 == "secret-sidecar" {
                assert_eq!(image_parts(image).1, VERSION, "{path}: {image}");
                seen.push(path.to_owned());
            }
        }
    }
    for (name, service) in yaml(COMPOSE)["services"].as_object().unwrap() {
        if let Some(image) = service["image"].as_str()
            && image_parts(image).0 == "secret-sidecar"
        {
            assert_eq!(image_parts(image).1, VERSION, "{COMPOSE} {name}: {image}");
            seen.push(COMPOSE.to_owned());
        }
    }
    let label = format!("org.opencontainers.image.version=\"{VERSION}\"");
    assert!(
        read("Dockerfile").contains(&label),
        "the Dockerfile's {label} label"
    );
    // Every artifact runs the image somewhere (a renamed image would match nothing).
    let artifacts = overlays
        .iter()
        .map(String::as_str)
        .chain(TASK_DEFINITIONS)
        .chain([REFRESH_TASK_DEFINITION, COMPOSE]);
    for artifact in artifacts {
        assert!(
            seen.iter().any(|s| s.starts_with(artifact)),
            "{artifact} runs no secret-sidecar image; checked: {seen:#?}"
        );
    }
}
