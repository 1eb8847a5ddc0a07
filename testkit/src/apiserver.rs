//! A pod as the API server hands it to mutating admission webhooks.
//!
//! There is no API server here. What a real one does to a pod before the webhooks see it
//! is reproduced for the objects `kubectl` renders: the controller's pod from a workload's
//! template (name prefix, labels, owner), the defaults the API server fills in, and the
//! ServiceAccount admission plugin's token volume, mounted into every container. The
//! webhook must patch such a pod (volumes and mounts already there, `env` arrays present
//! or not) as well as a bare one.
//!
//! [`ApiServer`] stands in for the one endpoint the webhook calls, the ServiceAccount
//! read, over TLS from the test CA with a bearer token, as kube-rs's client reaches it
//! through a kubeconfig.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::Scratch;
use super::http::Response;
use super::tls::HttpsServer;

/// The pod created from `object` (a Pod, or a workload with a pod template) in
/// `namespace`, defaulted and admitted by the ServiceAccount plugin.
pub fn pod_of(object: &Value, namespace: &str) -> Value {
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or("pod");
    let mut pod = match kind {
        "Pod" => {
            let mut pod = object.clone();
            pod["metadata"]["namespace"] = json!(namespace);
            pod
        }
        "Deployment" | "Job" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
            let template = &object["spec"]["template"];
            let mut labels = template["metadata"]["labels"].clone();
            if labels.is_null() {
                labels = json!({});
            }
            let (prefix, owner_kind) = match kind {
                "Deployment" => {
                    labels["pod-template-hash"] = json!("5d8c7f9b6");
                    (format!("{name}-5d8c7f9b6-"), "ReplicaSet")
                }
                "Job" => {
                    labels["batch.kubernetes.io/job-name"] = json!(name);
                    labels["job-name"] = json!(name);
                    (format!("{name}-"), "Job")
                }
                _ => (format!("{name}-"), kind),
            };
            let mut metadata = json!({
                "generateName": prefix,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": if owner_kind == "Job" { "batch/v1" } else { "apps/v1" },
                    "kind": owner_kind,
                    "name": prefix.trim_end_matches('-'),
                    "uid": "3c1f2a9e-5b7d-4e8f-a1c2-9d0e6f4b3a21",
                    "controller": true,
                    "blockOwnerDeletion": true
                }]
            });
            if let Some(annotations) = template["metadata"]["annotations"].as_object() {
                metadata["annotations"] = Value::Object(annotations.clone());
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
        }
        other => panic!("no pod comes from a {other}"),
    };
    if kind == "Job" && pod["spec"]["restartPolicy"].is_null() {
        pod["spec"]["restartPolicy"] = json!("Never");
    }
    defaults(&mut pod);
    service_account_admission(&mut pod);
    pod
}

fn default_to(object: &mut Value, field: &str, value: Value) {
    if object.get(field).is_none_or(Value::is_null) {
        object[field] = value;
    }
}

/// The API server's defaults for a Pod (the ones every pod gets).
fn defaults(pod: &mut Value) {
    let spec = &mut pod["spec"];
    default_to(spec, "restartPolicy", json!("Always"));
    default_to(spec, "dnsPolicy", json!("ClusterFirst"));
    default_to(spec, "schedulerName", json!("default-scheduler"));
    default_to(spec, "securityContext", json!({}));
    default_to(spec, "terminationGracePeriodSeconds", json!(30));
    default_to(spec, "enableServiceLinks", json!(true));
    default_to(spec, "serviceAccountName", json!("default"));
    spec["serviceAccount"] = spec["serviceAccountName"].clone();
    default_to(spec, "priority", json!(0));
    default_to(
        spec,
        "tolerations",
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ]),
    );
    for list in ["initContainers", "containers"] {
        for container in spec[list].as_array_mut().into_iter().flatten() {
            let image = container["image"].as_str().unwrap_or_default();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let latest = !tag.contains(':') || tag.ends_with(":latest");
            default_to(
                container,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            default_to(
                container,
                "terminationMessagePath",
                json!("/dev/termination-log"),
            );
            default_to(container, "terminationMessagePolicy", json!("File"));
            default_to(container, "resources", json!({}));
        }
    }
}

/// The ServiceAccount plugin: the API token volume in every container, unless the pod
/// opts out.
fn service_account_admission(pod: &mut Value) {
    const PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let spec = &mut pod["spec"];
    if spec["automountServiceAccountToken"] == false {
        return;
    }
    let name = "kube-api-access-x7k2q";
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]
        }
    });
    match spec["volumes"].as_array_mut() {
        Some(volumes) => volumes.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    for list in ["initContainers", "containers"] {
        for container in spec[list].as_array_mut().into_iter().flatten() {
            let mounts = container
                .as_object_mut()
                .unwrap()
                .entry("volumeMounts")
                .or_insert_with(|| Value::Array(Vec::new()));
            let mounts = mounts.as_array_mut().unwrap();
            if !mounts.iter().any(|m| m["mountPath"] == PATH) {
                mounts.push(json!({"name": name, "readOnly": true, "mountPath": PATH}));
            }
        }
    }
}

/// A stand-in for the API server's ServiceAccount endpoint, and a kubeconfig pointing at
/// it with a bearer token.
/// The API server's ServiceAccount endpoint, and a kubeconfig that reaches it.
pub struct ApiServer {
    pub kubeconfig: PathBuf,
    server: HttpsServer,
    accounts: Arc<Mutex<BTreeMap<String, Value>>>,
    _dir: Scratch,
}

const API_TOKEN: &str = "webhook-service-account-token";

impl ApiServer {
    /// Answers `GET /api/v1/namespaces/NS/serviceaccounts/NAME` after `delay`.
    pub fn start(delay: Duration) -> ApiServer {
        let accounts: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
        let known = Arc::clone(&accounts);
        let server = HttpsServer::with_handler(move |request| {
            std::thread::sleep(delay);
            let path = request.target().to_owned();
            let authorized =
                request.header("authorization") == Some(&format!("Bearer {API_TOKEN}"));
            let found = known.lock().unwrap().get(&path).cloned();
            match (request.method(), authorized, found) {
                (_, false, _) => status(401, "Unauthorized", "Unauthorized"),
                ("GET", true, Some(account)) => json_response(200, account.to_string()),
                _ => {
                    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
                    status(
                        404,
                        "NotFound",
                        &format!("serviceaccounts \"{name}\" not found"),
                    )
                }
            }
        });
        let dir = Scratch::tmpfs("kubeconfig");
        let kubeconfig = dir.path.join("config");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: webhook\n  user:\n    token: {API_TOKEN}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: webhook\ncurrent-context: test\n",
                server.url,
                super::tls::ca().pem_file.display()
            ),
        )
        .unwrap();
        ApiServer {
            kubeconfig,
            server,
            accounts,
            _dir: dir,
        }
    }

    /// Stores the ServiceAccount `namespace/name` with `annotations`.
    pub fn account(&self, namespace: &str, name: &str, annotations: Value) {
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}");
        let account = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "uid": "9b2c5d1e-0f3a-4b6c-8d7e-1a2b3c4d5e6f", "annotations": annotations}
        });
        self.accounts.lock().unwrap().insert(path, account);
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.server.requests().len()
    }

    /// The paths asked for, in order.
    pub fn targets(&self) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .map(|r| r.target().to_owned())
            .collect()
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.server.url.clone()
    }
}

fn json_response(status: u16, body: String) -> Response {
    Response {
        status,
        headers: vec![("content-type", "application/json".to_owned())],
        body,
        fault: Default::default(),
    }
}

/// A `Status` object, as the API server answers errors.
fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    json_response(code, body.to_string())
}
