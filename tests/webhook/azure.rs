//! The order with the AKS (Microsoft Entra) workload identity webhook, which gives every
//! container of a labelled pod, init containers included, the `AZURE_*` variables and a
//! projected token (unless `azure.workload.identity/skip-containers` names it).
//!
//! The API server calls mutating webhooks in an order (by configuration name) and, with
//! `reinvocationPolicy: IfNeeded`, calls a webhook again once if a later one changed the
//! object. Both orders are run, and the one where the Azure webhook is not reinvoked
//! (older installations set no reinvocation policy): in each the injected init container
//! ends up with the identity, and authenticates to Key Vault with it. The Azure webhook is
//! a stand-in with that webhook's rules (add a variable unless present, a mount by volume
//! name, the volume once), applied to the pod as JSON.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};
use testkit::Scratch;
use testkit::apiserver::pod_of;
use testkit::kubelet::{Cluster, KubeletPod};
use testkit::webhook::{Webhook, apply, kubectl_create, kubectl_patch, patch_of, review, validate};

use super::{NAMESPACE, annotated, container, reads, run_init, webhook};

const CLIENT_ID: &str = testkit::azure::CLIENT_ID;
const TENANT: &str = testkit::azure::TENANT;
const TOKEN_DIR: &str = "/var/run/secrets/azure/tokens";
const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";

/// The workload identity webhook's mutation of a labelled pod; whether it changed it.
fn azure_webhook(pod: &mut Value) -> bool {
    if pod["metadata"]["labels"]["azure.workload.identity/use"] != "true" {
        return false;
    }
    let before = pod.clone();
    let skipped: Vec<String> =
        pod["metadata"]["annotations"]["azure.workload.identity/skip-containers"]
            .as_str()
            .unwrap_or_default()
            .split(';')
            .map(|s| s.trim().to_owned())
            .collect();
    let wanted = [
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
        ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/"),
    ];
    for list in ["initContainers", "containers"] {
        for container in pod["spec"][list].as_array_mut().into_iter().flatten() {
            if skipped.iter().any(|s| container["name"] == s.as_str()) {
                continue;
            }
            if !container["env"].is_array() {
                container["env"] = json!([]);
            }
            let env = container["env"].as_array_mut().unwrap();
            for (name, value) in wanted {
                if !env.iter().any(|e| e["name"] == name) {
                    env.push(json!({"name": name, "value": value}));
                }
            }
            if !container["volumeMounts"].is_array() {
                container["volumeMounts"] = json!([]);
            }
            let mounts = container["volumeMounts"].as_array_mut().unwrap();
            let mount =
                json!({"name": "azure-identity-token", "mountPath": TOKEN_DIR, "readOnly": true});
            match mounts
                .iter_mut()
                .find(|m| m["name"] == "azure-identity-token")
            {
                Some(existing) => *existing = mount,
                None => mounts.push(mount),
            }
        }
    }
    let volume = json!({"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": {
        "audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}}]}});
    let volumes = pod["spec"]["volumes"].as_array_mut().unwrap();
    match volumes
        .iter_mut()
        .find(|v| v["name"] == "azure-identity-token")
    {
        Some(existing) => *existing = volume,
        None => volumes.push(volume),
    }
    *pod != before
}

/// secret-sidecar's webhook on `pod`: the pod with its patch applied, if any.
fn secret_sidecar(webhook: &Webhook, pod: &Value) -> (Value, bool) {
    let answer = webhook.admit(&review(pod, NAMESPACE));
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    match patch_of(&answer) {
        Some(patch) => (apply(pod, &patch), true),
        None => (pod.clone(), false),
    }
}

#[derive(Debug, Clone, Copy)]
enum Order {
    /// secret-sidecar first, then Azure; secret-sidecar is reinvoked (IfNeeded).
    OursFirst,
    /// Azure first, then secret-sidecar; Azure is reinvoked (IfNeeded).
    AzureFirst,
    /// Azure first, and never reinvoked.
    AzureFirstOnce,
}

/// The admission chain of the API server for `order`.
fn admission(webhook: &Webhook, mut pod: Value, order: Order) -> Value {
    match order {
        Order::OursFirst => {
            let (patched, _) = secret_sidecar(webhook, &pod);
            pod = patched;
            if azure_webhook(&mut pod) {
                let (again, changed) = secret_sidecar(webhook, &pod);
                assert!(!changed, "reinvoked, secret-sidecar changed the pod again");
                pod = again;
            }
        }
        Order::AzureFirst | Order::AzureFirstOnce => {
            azure_webhook(&mut pod);
            let (patched, changed) = secret_sidecar(webhook, &pod);
            pod = patched;
            if changed && matches!(order, Order::AzureFirst) {
                assert!(
                    !azure_webhook(&mut pod),
                    "the init container lacked what Azure adds"
                );
            }
        }
    }
    pod
}

fn labelled_pod(skip: Option<&str>) -> Value {
    let deployment = kubectl_create(&["deployment", "vault-app", "--image=busybox:1.37.0"]);
    let mut annotations = json!({});
    if let Some(skip) = skip {
        annotations["azure.workload.identity/skip-containers"] = json!(skip);
    }
    let deployment = kubectl_patch(
        &deployment,
        &json!({"spec": {"template": {
            "metadata": {"labels": {"azure.workload.identity/use": "true"}, "annotations": annotations},
            "spec": {"serviceAccountName": "vault-app", "securityContext": {"fsGroup": 65532}}
        }}}),
    );
    let object = annotated(
        &deployment,
        &[("secret-db-password", "azure://my-vault/webhook-db#password")],
    );
    pod_of(&object, NAMESPACE)
}

/// The init container's variables, sorted, and its mount of the token.
fn identity_of(pod: &Value) -> (Vec<(String, String)>, bool) {
    let init = container(pod, "secret-sidecar");
    let mut env: Vec<(String, String)> = init["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"].as_str().unwrap().starts_with("AZURE_"))
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    env.sort();
    let mounted = init["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["name"] == "azure-identity-token" && m["mountPath"] == TOKEN_DIR);
    (env, mounted)
}

#[test]
fn either_order_gives_the_init_container_the_azure_identity() {
    let webhook = webhook();
    let mut results = Vec::new();
    for order in [Order::OursFirst, Order::AzureFirst, Order::AzureFirstOnce] {
        let pod = admission(&webhook, labelled_pod(None), order);
        validate(&[&pod]);
        let (env, mounted) = identity_of(&pod);
        assert_eq!(env.len(), 4, "{order:?}: {env:?}");
        assert!(mounted, "{order:?}: no token mount");
        run_against_key_vault(&pod, order);
        results.push(identity_of(&pod));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:#?}");

    // skip-containers naming the init container keeps the identity out of it, whatever the
    // order.
    for order in [Order::OursFirst, Order::AzureFirstOnce] {
        let pod = admission(&webhook, labelled_pod(Some("secret-sidecar")), order);
        assert_eq!(identity_of(&pod), (Vec::new(), false), "{order:?}");
    }
}

/// Runs the init container with the variables the pod gives it, the kubelet's projected
/// token where its mount says, and Entra ID and Key Vault reached under their public names
/// through a CONNECT proxy (the test CA as the whole trust store).
fn run_against_key_vault(pod: &Value, order: Order) {
    use testkit::azure::{ConnectProxy, Entra, KeyVault, jwt};
    let token = jwt(&format!(
        r#"{{"aud":["api://AzureADTokenExchange"],"iss":"https://oidc.prod-aks.azure.com/{TENANT}/","sub":"system:serviceaccount:{NAMESPACE}:vault-app","exp":4102444800}}"#
    ));
    let entra = Entra::start_for(&token, TENANT, CLIENT_ID);
    let vault = KeyVault::with_token(
        &entra.access_token,
        &format!("https://login.microsoftonline.com/{TENANT}"),
    );
    vault.put("webhook-db", r#"{"password":"kv-pw-27"}"#);
    let proxy = ConnectProxy::start(entra.server.port, vault.server.port);
    let files = Scratch::tmpfs("webhook-ca");
    fs::set_permissions(&files.path, fs::Permissions::from_mode(0o755)).unwrap();
    let ca_file = files.path.join("ca.pem");
    fs::copy(&testkit::tls::ca().pem_file, &ca_file).unwrap();
    fs::set_permissions(&ca_file, fs::Permissions::from_mode(0o644)).unwrap();

    let projected = token.clone();
    let cluster = Cluster {
        token: Some(Box::new(move |audience| match audience {
            Some("api://AzureADTokenExchange") => projected.clone(),
            _ => "kubernetes-api-token".to_owned(),
        })),
        ..Cluster::default()
    };
    let kubelet = KubeletPod::start(pod, &cluster);
    let run = run_init(
        &kubelet,
        &[
            ("HTTPS_PROXY", proxy.url.clone()),
            ("SSL_CERT_FILE", ca_file.display().to_string()),
        ],
    );
    run.expect_code(0)
        .expect_stderr("WorkloadIdentity")
        .expect_no_leak(token.as_bytes());
    assert_eq!(
        entra.token_requests()[0]["client_assertion"],
        token,
        "{order:?}"
    );
    reads(
        &kubelet,
        "busybox",
        &[("/run/secrets/db-password", "kv-pw-27")],
    );
}
