//! The platform identities in injected containers: the EKS webhook's projection read from
//! a ServiceAccount, and inheritance from a webhook that ran first.

use super::*;
use crate::webhook::patch::List;

fn pod(json: serde_json::Value) -> Pod {
    serde_json::from_value(json).unwrap()
}

fn account(annotations: serde_json::Value) -> ServiceAccount {
    serde_json::from_value(
        serde_json::json!({"metadata": {"name": "app", "annotations": annotations}}),
    )
    .unwrap()
}

fn ours() -> Container {
    Container {
        name: "secret-sidecar".into(),
        ..Container::default()
    }
}

fn env_names(container: &Container) -> Vec<&str> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect()
}

#[test]
fn a_service_account_role_is_read_with_the_eks_webhooks_defaults() {
    assert_eq!(Irsa::of(&account(serde_json::json!({}))).unwrap(), None);
    let irsa = Irsa::of(&account(serde_json::json!({
        "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/app"
    })))
    .unwrap()
    .unwrap();
    assert_eq!(
        irsa,
        Irsa {
            role_arn: "arn:aws:iam::111122223333:role/app".into(),
            audience: "sts.amazonaws.com".into(),
            expiration: 86_400,
            regional_sts: false,
        }
    );
    let irsa = Irsa::of(&account(serde_json::json!({
        "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/app",
        "eks.amazonaws.com/audience": "custom",
        "eks.amazonaws.com/token-expiration": "3600",
        "eks.amazonaws.com/sts-regional-endpoints": "true",
    })))
    .unwrap()
    .unwrap();
    assert_eq!(
        (irsa.audience.as_str(), irsa.expiration, irsa.regional_sts),
        ("custom", 3600, true)
    );
    for bad in ["60", "soon", "100000"] {
        let account = account(serde_json::json!({
            "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/app",
            "eks.amazonaws.com/token-expiration": bad,
        }));
        assert!(Irsa::of(&account).is_err(), "{bad}");
    }
}

#[test]
fn the_projection_reaches_every_container_but_skipped_ones_and_those_with_a_role() {
    let pod = pod(serde_json::json!({
        "metadata": {"annotations": {"eks.amazonaws.com/skip-containers": "sidecar, other"}},
        "spec": {
            "initContainers": [{"name": "migrate"}],
            "containers": [
                {"name": "app"},
                {"name": "sidecar"},
                {"name": "own", "env": [{"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::1:role/x"}]}
            ]
        }
    }));
    let irsa = Irsa {
        role_arn: "arn:aws:iam::111122223333:role/app".into(),
        audience: "sts.amazonaws.com".into(),
        expiration: 86_400,
        regional_sts: true,
    };
    let mut edits = Edits::default();
    let mut injected = [ours()];
    irsa.apply(&pod, &mut edits, &mut injected);
    assert!(edits.adds_to((List::Init, 0)));
    assert!(edits.adds_to((List::App, 0)));
    assert!(!edits.adds_to((List::App, 1)), "skipped by the annotation");
    assert!(!edits.adds_to((List::App, 2)), "names a role itself");
    assert_eq!(
        env_names(&injected[0]),
        [
            "AWS_STS_REGIONAL_ENDPOINTS",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE"
        ]
    );
    let patch = serde_json::to_value(edits.into_patch(&pod).unwrap()).unwrap();
    let volume = patch
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["path"] == "/spec/volumes")
        .expect("the token volume");
    assert_eq!(
        volume["value"][0]["projected"]["sources"][0]["serviceAccountToken"],
        serde_json::json!({"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"})
    );
}

/// A pod as the AKS workload identity webhook leaves it.
fn azure_pod(skip: Option<&str>) -> Pod {
    let mut annotations = serde_json::Map::new();
    if let Some(skip) = skip {
        annotations.insert(
            "azure.workload.identity/skip-containers".into(),
            skip.into(),
        );
    }
    pod(serde_json::json!({
        "metadata": {"annotations": annotations},
        "spec": {
            "volumes": [{"name": "azure-identity-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}}
            ]}}],
            "containers": [{
                "name": "app",
                "env": [
                    {"name": "AZURE_CLIENT_ID", "value": "c"},
                    {"name": "AZURE_TENANT_ID", "value": "t"},
                    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/tokens/azure-identity-token"},
                    {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"},
                    {"name": "APP_SETTING", "value": "not copied"}
                ],
                "volumeMounts": [{"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}]
            }]
        }
    }))
}

#[test]
fn an_identity_given_to_the_pod_before_is_given_to_the_injected_container() {
    let mut container = ours();
    inherit(&azure_pod(None), &mut container);
    assert_eq!(
        env_names(&container),
        [
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST"
        ]
    );
    let mounts = container.volume_mounts.unwrap();
    assert_eq!(
        (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
        ("azure-identity-token", "/var/run/secrets/azure/tokens")
    );

    let mut skipped = ours();
    inherit(&azure_pod(Some("secret-sidecar;other")), &mut skipped);
    assert!(skipped.env.is_none() && skipped.volume_mounts.is_none());
}

#[test]
fn variables_without_a_projected_token_are_the_apps_own_and_not_copied() {
    let pod = pod(serde_json::json!({
        "spec": {
            "volumes": [{"name": "token", "emptyDir": {}}],
            "containers": [{
                "name": "app",
                "env": [
                    {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::1:role/x"},
                    {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/token/token"}
                ],
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/token"}]
            }]
        }
    }));
    let mut container = ours();
    inherit(&pod, &mut container);
    assert!(container.env.is_none());
}
