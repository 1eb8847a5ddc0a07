//! The azure-workload-identity overlay, run as AKS runs it: the webhook's variables and
//! token file, and the Entra ID and Key Vault fakes reached under their public names
//! through a CONNECT proxy, with the test CA as the whole trust store.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{AZURE_WORKLOAD_IDENTITY, exercise_with, k8s_workloads, readable_file, subject};
use testkit::Scratch;
use testkit::deploy::DemoSecrets;

/// A copy of `path` that the sidecar's user can read, in `dir`.
pub(super) fn readable_copy(dir: &Scratch, path: &Path, name: &str) -> PathBuf {
    let copy = dir.path.join(name);
    fs::copy(path, &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)).unwrap();
    copy
}

/// The client id and tenant the AKS webhook injects for `workload`, from its
/// ServiceAccount's annotations.
pub(super) fn aks_identity(workload: &super::K8sWorkload) -> (&str, &str) {
    let what = &workload.what;
    let client_id = workload
        .annotation("azure.workload.identity/client-id")
        .unwrap_or_else(|| panic!("{what}: azure.workload.identity/client-id"));
    let tenant = workload
        .annotation("azure.workload.identity/tenant-id")
        .unwrap_or(CLUSTER_TENANT);
    (client_id, tenant)
}

/// The token the AKS webhook projects for `workload`'s ServiceAccount, with the audience
/// Entra expects for federated credentials, written to `files` (it stands for
/// /var/run/secrets/azure/tokens/azure-identity-token) beside a readable copy of the
/// test CA: (token, token file, CA file).
pub(super) fn aks_token(
    workload: &super::K8sWorkload,
    tenant: &str,
    files: &Scratch,
) -> (String, PathBuf, PathBuf) {
    let token = testkit::azure::jwt(&format!(
        r#"{{"aud":["api://AzureADTokenExchange"],"iss":"https://oidc.prod-aks.azure.com/{tenant}/","sub":"{}","exp":4102444800}}"#,
        subject(&workload.service_account)
    ));
    let token_file = readable_file(files, "azure-identity-token", &token);
    let ca_file = readable_copy(files, &testkit::tls::ca().pem_file, "ca.pem");
    (token, token_file, ca_file)
}

/// The tenant the AKS webhook uses when the ServiceAccount names none: the cluster's.
pub(super) const CLUSTER_TENANT: &str = testkit::azure::TENANT;

#[test]
fn kubernetes_azure_workload_identity_overlay_runs_as_written() {
    for workload in k8s_workloads(AZURE_WORKLOAD_IDENTITY) {
        init_container_runs_as_written(&workload);
    }
}

/// The init container of an AKS workload identity overlay, run with what the webhook
/// injects, against the Entra ID and Key Vault fakes under their public names.
pub(super) fn init_container_runs_as_written(workload: &super::K8sWorkload) {
    use testkit::azure::{ConnectProxy, Entra, KeyVault};
    {
        let what = &workload.what;
        assert_eq!(
            workload.template["metadata"]["labels"]["azure.workload.identity/use"], "true",
            "{what}: the webhook mutates only pods labelled azure.workload.identity/use: \"true\""
        );
        let (client_id, tenant) = aks_identity(workload);
        assert!(
            workload.egress_allows("0.0.0.0/0", 443),
            "{what}: Entra ID and Key Vault need egress on 443"
        );

        // What the webhook injects: a token for this ServiceAccount and four variables.
        let files = Scratch::tmpfs("aks-token");
        let (token, token_file, ca_file) = aks_token(workload, tenant, &files);

        let entra = Entra::start_for(&token, tenant, client_id);
        let vault = KeyVault::with_token(
            &entra.access_token,
            &format!("https://login.microsoftonline.com/{tenant}"),
        );
        let proxy = ConnectProxy::start(entra.server.port, vault.server.port);
        let demo = DemoSecrets::of(&workload.deployment.sidecar, "azure");
        let mut vaults = Vec::new();
        for (reference, value) in &demo.stored {
            let (vault_name, secret) = reference
                .split_once('/')
                .unwrap_or_else(|| panic!("{what}: azure://{reference} is not VAULT/NAME"));
            assert!(
                !secret.is_empty()
                    && secret
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{what}: {secret} is not a Key Vault secret name (letters, digits, dashes)"
            );
            vault.put(secret, value);
            vaults.push(format!("{vault_name}.vault.azure.net"));
        }

        exercise_with(
            &workload.deployment,
            &demo.files,
            &[
                ("AZURE_CLIENT_ID", client_id.to_owned()),
                ("AZURE_TENANT_ID", tenant.to_owned()),
                (
                    "AZURE_FEDERATED_TOKEN_FILE",
                    token_file.display().to_string(),
                ),
                (
                    "AZURE_AUTHORITY_HOST",
                    "https://login.microsoftonline.com/".to_owned(),
                ),
                // Redirection: the public names lead to the fakes, whose CA is trusted.
                ("HTTPS_PROXY", proxy.url.clone()),
                ("SSL_CERT_FILE", ca_file.display().to_string()),
            ],
            "WorkloadIdentity",
        );

        let exchanges = entra.token_requests();
        assert_eq!(exchanges.len(), 1, "{what}: {exchanges:#?}");
        assert_eq!(exchanges[0]["client_assertion"], token, "{what}");
        assert_eq!(exchanges[0]["client_id"], client_id, "{what}");
        assert_eq!(
            entra.server.requests()[0].target(),
            format!("/{tenant}/oauth2/v2.0/token")
        );
        let connects = proxy.connects();
        assert!(
            connects.contains(&"login.microsoftonline.com:443".to_owned()),
            "{what}: {connects:?}"
        );
        for request in vault.requests() {
            let host = request.header("host").unwrap_or_default().to_owned();
            assert!(vaults.contains(&host), "{what}: {host} not in {vaults:?}");
        }
    }
}
