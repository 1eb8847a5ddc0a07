//! A pod as the API server hands it to mutating admission webhooks.
//!
//! There is no API server here. What a real one does to a pod before the webhooks see it
//! is reproduced for the objects `kubectl` renders: the controller's pod from a workload's
//! template (name prefix, labels, owner), the defaults the API server fills in, and the
//! ServiceAccount admission plugin's token volume, mounted into every container. The
//! webhook must patch such a pod (volumes and mounts already there, `env` arrays present
//! or not) as well as a bare one.

use serde_json::{Value, json};

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
