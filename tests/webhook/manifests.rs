//! The manifests in `kubernetes-manifests/webhook/` as written: what they register with the
//! API server, the webhook started with its Deployment's exact arguments and variables, the
//! example app's workloads sent through it, and `scripts/webhook-certs.sh`.
//!
//! What needs a real API server (its calls in name order, `inject-ca-from`, the kubelet
//! refreshing the mounted Secret) cannot run here: the checks below hold the names those
//! rely on together, and `server.rs` proves the rotation itself.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use testkit::Scratch;
use testkit::apiserver::{ApiServer, pod_of};
use testkit::deploy::{kustomize, repo, seed, str_at, strings};
use testkit::kubelet::{Cluster, KubeletPod};
use testkit::tls::{ca, ca_signed_pem};
use testkit::webhook::{Injected, Webhook};
use testkit::{Run, fake_jwt};

use super::reads;

const BASE: &str = "kubernetes-manifests/webhook/base";
const CERT_MANAGER: &str = "kubernetes-manifests/webhook/cert-manager";
const SELF_MANAGED: &str = "kubernetes-manifests/webhook/self-managed";
const EXAMPLE_APP: &str = "kubernetes-manifests/webhook/example-app";

/// The one object of `kind` in `objects`.
#[track_caller]
fn one<'o>(objects: &'o [Value], kind: &str) -> &'o Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected, found {}", found.len());
    found[0]
}

fn all<'o>(objects: &'o [Value], kind: &str) -> Vec<&'o Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The webhook's container in its Deployment.
fn webhook_container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "the webhook runs alone in its pod");
    &containers[0]
}

/// What every entry point shares: only opted-in pod creations outside kube-system and the
/// webhook's namespace, failing closed, sent to the Service in front of the Deployment,
/// which keeps a replica through disruptions.
#[test]
fn the_webhook_manifests_register_only_opted_in_pods_and_fail_closed() {
    for dir in [BASE, CERT_MANAGER, SELF_MANAGED] {
        let objects = kustomize(dir);
        let deployment = one(&objects, "Deployment");
        let namespace = str_at(deployment, "/metadata/namespace");
        assert_eq!(
            str_at(one(&objects, "Namespace"), "/metadata/name"),
            namespace
        );
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];

        let configuration = one(&objects, "MutatingWebhookConfiguration");
        assert_eq!(
            configuration["apiVersion"], "admissionregistration.k8s.io/v1",
            "{dir}"
        );
        let hooks = configuration["webhooks"].as_array().unwrap();
        assert_eq!(hooks.len(), 1, "{dir}");
        let hook = &hooks[0];
        assert_eq!(hook["sideEffects"], "None", "{dir}");
        assert_eq!(hook["failurePolicy"], "Fail", "{dir}");
        assert_eq!(hook["reinvocationPolicy"], "IfNeeded", "{dir}");
        assert_eq!(strings(hook.get("admissionReviewVersions")), ["v1"]);
        let timeout = hook["timeoutSeconds"].as_u64().expect("timeoutSeconds");
        assert!(
            (1..=30).contains(&timeout),
            "{dir}: timeoutSeconds {timeout}"
        );
        assert_eq!(
            hook["rules"],
            json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["pods"], "scope": "Namespaced"}]),
            "{dir}"
        );
        assert_eq!(
            hook["objectSelector"],
            json!({"matchLabels": {"secret-sidecar.io/inject": "true"}}),
            "{dir}: only opted-in pods are sent (and can fail)"
        );
        let excluded = &hook["namespaceSelector"]["matchExpressions"];
        assert_eq!(excluded[0]["key"], "kubernetes.io/metadata.name", "{dir}");
        assert_eq!(excluded[0]["operator"], "NotIn", "{dir}");
        let values = strings(excluded[0].get("values"));
        for left_alone in ["kube-system", namespace] {
            assert!(values.iter().any(|v| v == left_alone), "{dir}: {values:?}");
        }

        // The API server → Service → the container's port, on a path the webhook serves.
        let service = one(&objects, "Service");
        let client = &hook["clientConfig"]["service"];
        assert_eq!(client["name"], service["metadata"]["name"], "{dir}");
        assert_eq!(client["namespace"], namespace, "{dir}");
        assert_eq!(client["path"], "/mutate", "{dir}");
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == client["port"])
            .unwrap_or_else(|| panic!("{dir}: the Service has no port {}", client["port"]));
        let container = webhook_container(deployment);
        assert!(
            container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == port["targetPort"]),
            "{dir}: the Service's targetPort is not the container's"
        );
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&pod_labels[key], value, "{dir}: Service selector {key}");
        }

        // Two replicas on different nodes, one kept through voluntary disruptions.
        assert_eq!(deployment["spec"]["replicas"], 2, "{dir}");
        let spread = &deployment["spec"]["template"]["spec"]["topologySpreadConstraints"];
        assert!(
            spread
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["topologyKey"] == "kubernetes.io/hostname"
                    && c["whenUnsatisfiable"] == "DoNotSchedule"),
            "{dir}: {spread}"
        );
        let budget = one(&objects, "PodDisruptionBudget");
        assert_eq!(budget["spec"]["minAvailable"], 1, "{dir}");
        for (key, value) in budget["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                &pod_labels[key], value,
                "{dir}: PodDisruptionBudget selector"
            );
        }

        let args = strings(container.get("args"));
        let irsa = dir == SELF_MANAGED;
        assert_eq!(args.iter().any(|a| a == "--inject-irsa"), irsa, "{dir}");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["automountServiceAccountToken"], irsa,
            "{dir}: an API token only where the webhook reads ServiceAccounts"
        );
        let roles = all(&objects, "ClusterRole");
        if irsa {
            // Least privilege: get serviceaccounts, nothing else, bound to the webhook's
            // own account.
            assert_eq!(roles.len(), 1, "{dir}");
            assert_eq!(
                roles[0]["rules"],
                json!([{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}])
            );
            let binding = one(&objects, "ClusterRoleBinding");
            assert_eq!(binding["roleRef"]["name"], roles[0]["metadata"]["name"]);
            assert_eq!(
                binding["subjects"],
                json!([{"kind": "ServiceAccount", "namespace": namespace,
                    "name": deployment["spec"]["template"]["spec"]["serviceAccountName"]}])
            );
        } else {
            assert!(
                roles.is_empty() && all(&objects, "Role").is_empty(),
                "{dir}"
            );
        }

        // The certificate: cert-manager's for the Service's names into the Secret the
        // Deployment mounts, its CA injected from it; without cert-manager, caBundle is
        // set by hand (scripts/webhook-certs.sh, checked below).
        let secret_name = tls_volume(deployment).0;
        let annotation =
            &configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
        if dir == BASE {
            assert!(annotation.is_null() && all(&objects, "Certificate").is_empty());
            continue;
        }
        let certificates = all(&objects, "Certificate");
        let serving = certificates
            .iter()
            .find(|c| c["spec"]["secretName"] == secret_name)
            .unwrap_or_else(|| panic!("{dir}: no Certificate writes {secret_name}"));
        assert_eq!(
            annotation.as_str(),
            Some(format!("{namespace}/{}", str_at(serving, "/metadata/name")).as_str()),
            "{dir}: inject-ca-from names the serving Certificate"
        );
        let service_name = str_at(service, "/metadata/name");
        assert!(
            strings(serving["spec"].get("dnsNames"))
                .contains(&format!("{service_name}.{namespace}.svc")),
            "{dir}: the API server calls {service_name}.{namespace}.svc"
        );
        let issuer = str_at(serving, "/spec/issuerRef/name");
        assert!(
            all(&objects, "Issuer")
                .iter()
                .any(|i| i["metadata"]["name"] == issuer),
            "{dir}: no Issuer {issuer}"
        );
    }
}

/// The Secret the webhook's Deployment mounts for TLS, and where.
fn tls_volume(deployment: &Value) -> (String, String) {
    let spec = &deployment["spec"]["template"]["spec"];
    let mount = webhook_container(deployment)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("the webhook mounts its tls volume");
    assert!(
        mount.get("subPath").is_none(),
        "subPath would freeze the files"
    );
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    (
        str_at(volume, "/secret/secretName").to_owned(),
        str_at(mount, "/mountPath").to_owned(),
    )
}

/// The webhook as `dir`'s Deployment runs it: its exact arguments and variables, the
/// listen address made loopback port 0, the TLS mount a scratch directory holding a pair
/// from the test CA, and `env` added (what the cluster provides).
fn launch_as_deployed(dir: &str, env: &[(&str, String)]) -> (Webhook, Value) {
    let objects = kustomize(dir);
    let deployment = one(&objects, "Deployment").clone();
    let container = webhook_container(&deployment);
    let (_, mount) = tls_volume(&deployment);
    let scratch = Scratch::tmpfs("webhook-deployed");
    // A kubernetes.io/tls Secret's keys, as the kubelet writes them.
    let (cert, key) = ca_signed_pem("webhook as deployed");
    fs::write(scratch.path.join("tls.crt"), cert).unwrap();
    fs::write(scratch.path.join("tls.key"), key).unwrap();
    let local = scratch.path.display().to_string();
    let args: Vec<String> = strings(container.get("args"))
        .into_iter()
        .map(|a| match a.strip_prefix("--listen=") {
            Some(_) => "--listen=127.0.0.1:0".to_owned(),
            None => a.replace(&mount, &local),
        })
        .collect();
    let mut vars: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e["value"].as_str().expect("plain env values");
            (str_at(e, "/name").to_owned(), value.to_owned())
        })
        .collect();
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let (cert_file, key_file) = (scratch.path.join("tls.crt"), scratch.path.join("tls.key"));
    let webhook = Webhook::launch(
        testkit::binary!(),
        &args,
        &vars,
        &cert_file,
        &key_file,
        scratch,
    );
    (webhook, deployment)
}

/// GET `path` with curl trusting the test CA; the status code.
fn get(webhook: &Webhook, path: &str) -> u16 {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(&ca().pem_file)
        .arg(webhook.url(path))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The "done when" from the manifests alone: the self-managed webhook as its
/// Deployment runs it, the example app's workloads (annotations only) as the API server
/// sends them, the injected init container run as the kubelet would with the token it
/// projects, and the app reading its secrets where its command expects them.
#[test]
fn the_example_app_gets_its_secrets_from_the_webhook_as_deployed() {
    let app = kustomize(EXAMPLE_APP);
    for workload in app.iter().filter(|o| o["spec"]["template"].is_object()) {
        let spec = &workload["spec"]["template"]["spec"];
        assert!(
            spec.get("initContainers").is_none() && spec.get("volumes").is_none(),
            "{}: the example uses annotations only",
            workload["metadata"]["name"]
        );
    }
    let account = one(&app, "ServiceAccount");
    let namespace = str_at(account, "/metadata/namespace");
    let role = str_at(account, "/metadata/annotations/eks.amazonaws.com~1role-arn");
    let api = ApiServer::start(Duration::ZERO);
    api.account(
        namespace,
        str_at(account, "/metadata/name"),
        account["metadata"]["annotations"].clone(),
    );
    let kubeconfig = api.kubeconfig.display().to_string();
    let (webhook, deployment) = launch_as_deployed(SELF_MANAGED, &[("KUBECONFIG", kubeconfig)]);
    let container = webhook_container(&deployment);
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = str_at(&container[probe], "/httpGet/path");
        assert_eq!(get(&webhook, path), 200, "{probe} {path}");
    }

    let subject = format!(
        "system:serviceaccount:{namespace}:{}",
        str_at(account, "/metadata/name")
    );
    let cluster = Cluster {
        token: Some(Box::new(move |audience| match audience {
            Some("sts.amazonaws.com") => fake_jwt(&subject),
            _ => "kubernetes-api-token".to_owned(),
        })),
        ..Cluster::default()
    };
    let mut ran = 0;
    for workload in app.iter().filter(|o| o["spec"]["template"].is_object()) {
        let what = str_at(workload, "/metadata/name");
        let Injected { pod, .. } = webhook.inject(&pod_of(workload, namespace), namespace);
        let init = pod["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "secret-sidecar")
            .unwrap_or_else(|| panic!("{what}: nothing injected"));
        assert_eq!(
            init["image"], container["image"],
            "{what}: the pinned image"
        );
        let kubelet = KubeletPod::start(&pod, &cluster);
        let invocation = kubelet.invocation("secret-sidecar");
        assert_eq!(invocation.env_var("AWS_ROLE_ARN").as_deref(), Some(role));
        let expected = seed(&invocation, role.split(':').nth(4).unwrap());
        let run: Run = kubelet.run("secret-sidecar", testkit::binary!(), &[]);
        run.expect_code(0).expect_stderr("WebIdentityToken");
        let app_container = str_at(&pod["spec"]["containers"][0], "/name").to_owned();
        let command = strings(pod["spec"]["containers"][0].get("command")).join(" ")
            + &strings(pod["spec"]["containers"][0].get("args")).join(" ");
        for (file, content) in &expected {
            run.expect_no_leak(content);
            let path = format!("/run/secrets/{file}");
            assert!(
                command.contains(&path),
                "{what}: the app does not read {path}"
            );
            reads(
                &kubelet,
                &app_container,
                &[(&path, std::str::from_utf8(content).unwrap())],
            );
        }
        ran += 1;
    }
    assert_eq!(ran, 2, "the example's Deployment and Job");
}

/// Without cert-manager: the script makes a pair for the names the API server calls,
/// signed by a CA it keeps, so a renewal leaves the caBundle as it was; the commands it
/// prints name the Secret the Deployment mounts and the configuration in the manifests.
#[test]
fn webhook_certs_script_makes_a_renewable_pair_for_the_service() {
    let objects = kustomize(BASE);
    let deployment = one(&objects, "Deployment");
    let namespace = str_at(deployment, "/metadata/namespace");
    let service = str_at(one(&objects, "Service"), "/metadata/name");
    let configuration = str_at(
        one(&objects, "MutatingWebhookConfiguration"),
        "/metadata/name",
    );
    let dir = Scratch::tmpfs("webhook-certs");
    let script = repo().join("scripts/webhook-certs.sh");
    let make = || {
        let output = Command::new(&script)
            .arg(&dir.path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let printed = make();
    let read = |name: &str| fs::read(dir.path.join(name)).unwrap();
    let (ca_first, cert_first) = (read("ca.crt"), read("tls.crt"));
    let verify = || {
        let output = Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-verify_hostname"])
            .arg(format!("{service}.{namespace}.svc"))
            .arg("-CAfile")
            .arg(dir.path.join("ca.crt"))
            .arg(dir.path.join("tls.crt"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    verify();
    assert!(printed.contains(&format!(
        "-n {namespace} create secret tls {}",
        tls_volume(deployment).0
    )));
    assert!(printed.contains(&format!("mutatingwebhookconfiguration {configuration}")));
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(&ca_first);
    assert!(printed.contains(&bundle), "the caBundle is the CA");

    make();
    assert_eq!(read("ca.crt"), ca_first, "a renewal keeps the CA");
    assert_ne!(
        read("tls.crt"),
        cert_first,
        "a renewal makes a new certificate"
    );
    verify();
}
