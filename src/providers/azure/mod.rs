//! Azure Key Vault secrets.
//!
//! ```text
//! --secret db=azure://my-vault/db-password                  https://my-vault.vault.azure.net
//! --secret azure://my-vault/db?version=0123456789abcdef0123456789abcdef#password
//! --secret azure://https://my-vault.vault.azure.cn/secrets/db[/VERSION]   (any host, any port)
//! --azure-cloud china|usgov      the short form's vault suffix (default: AZURE_AUTHORITY_HOST's)
//! --azure-credential auto|workload|managed|developer                     (default auto)
//! --azure-skip-challenge-resource-check   private-endpoint aliases, custom DNS names, tests
//! ```
//!
//! Identity, with `--azure-credential auto`:
//! - **workload identity** when `AZURE_FEDERATED_TOKEN_FILE` is set (AKS injects it with
//!   `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and `AZURE_AUTHORITY_HOST`): the projected token is
//!   exchanged at Entra ID (`POST {AZURE_AUTHORITY_HOST}/{tenant}/oauth2/v2.0/token`,
//!   client-assertion grant) by azure_identity's `ClientAssertionCredential`. The assertion
//!   is ours: the file is read at every exchange and ASCII whitespace around the token is
//!   removed, because Entra rejects a padded JWT (AADSTS50027) and a hand-made file often
//!   ends in a newline. A half-configured set of variables is an identity error, never a
//!   silent fall-back to another identity;
//! - otherwise **managed identity** (App Service / Functions through `IDENTITY_ENDPOINT` +
//!   `IDENTITY_HEADER`, else the instance metadata service), user-assigned when
//!   `AZURE_CLIENT_ID` is set.
//!
//! The developer chain (Azure CLI, then Azure Developer CLI) is used only when asked for
//! with `--azure-credential developer`. The run logs which credential it selected and, at
//! the first token, for which scope and how long it lasts; never a token.
//!
//! Key Vault names the token's audience in its 401 challenge, and the SDK accepts a
//! challenge only for a resource whose domain the vault host ends in
//! (`verify_challenge_resource`). A vault reached under another name needs
//! `--azure-skip-challenge-resource-check`; it then gets a token for whatever resource the
//! server names, so it is never on by default.
//!
//! The token each vault will want is asked for as the provider connects, beside the
//! vault's 401 challenge rather than after it (`early.rs`).
//!
//! One `SecretClient` per vault, reused for every secret in it, over one rustls
//! `reqwest::Client` (the platform's roots, which `SSL_CERT_FILE` replaces, plus
//! `--ca-file`; `HTTPS_PROXY`/`NO_PROXY` honoured). The SDK's retries are off and every
//! request's User-Agent ends in `secret-sidecar/<version>`.
//!
//! The pieces: `target.rs` reads the reference, `errors.rs` classifies what the SDK
//! returns, the credential and the HTTP side are [`crate::identity::azure`] and
//! [`crate::identity::azure_transport`] (the set-up on Azure's side is in
//! `docs/azure.md`); this file connects and fetches.

mod early;
mod errors;
mod target;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use azure_core::Bytes;
use azure_core::credentials::TokenCredential;
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use tracing::info;
use zeroize::Zeroize;

use super::{Fetched, Provider};
use crate::exit::Failure;
use crate::identity::azure::{AzureCloud, AzureCredential, Identity, Reported, credential};
use crate::identity::azure_transport::client_options;
use crate::net::{HttpConfig, error_chain};
use crate::secret::SecretValue;
use early::AskedEarly;
use errors::classify;
use target::cloud_of;
pub use target::{AzureTarget, Vault, vault_suffix};

/// The Azure Key Vault options (see docs/azure.md).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AzureArgs {
    /// Azure: how to prove the workload's identity. auto uses workload identity when
    /// AZURE_FEDERATED_TOKEN_FILE is set (AKS injects it with AZURE_CLIENT_ID,
    /// AZURE_TENANT_ID and AZURE_AUTHORITY_HOST), else managed identity (user-assigned when
    /// AZURE_CLIENT_ID is set). developer uses the Azure CLI (az login), then azd; only when
    /// asked for.
    ///
    /// Example: --azure-credential developer
    #[arg(
        long,
        value_enum,
        value_name = "KIND",
        env = "SECRET_SIDECAR_AZURE_CREDENTIAL",
        default_value = "auto"
    )]
    pub azure_credential: AzureCredential,

    /// Azure: the cloud whose vault suffix completes azure://VAULT/NAME (public:
    /// vault.azure.net, china: vault.azure.cn, usgov: vault.usgovcloudapi.net), and whose
    /// Entra ID authority is used when AZURE_AUTHORITY_HOST is not set. By default, the
    /// cloud AZURE_AUTHORITY_HOST belongs to (AKS sets it), else public. Full
    /// azure://https://... references name their host themselves.
    ///
    /// Example: --azure-cloud china
    #[arg(
        long,
        value_enum,
        value_name = "CLOUD",
        env = "SECRET_SIDECAR_AZURE_CLOUD"
    )]
    pub azure_cloud: Option<AzureCloud>,

    /// Azure: accept a vault's authentication challenge for a resource outside the vault
    /// host's domain. Needed only for a vault reached under another name (a private-endpoint
    /// alias, a custom DNS name, a test server): the token is then requested for whatever
    /// resource that host names, so give it only for hosts you trust.
    ///
    /// Example: --azure-skip-challenge-resource-check
    #[arg(long, env = "SECRET_SIDECAR_AZURE_SKIP_CHALLENGE_RESOURCE_CHECK")]
    pub azure_skip_challenge_resource_check: bool,
}

/// Connected Key Vault clients, one per vault, sharing one credential.
pub struct Azure {
    clients: HashMap<String, SecretClient>,
    cloud: AzureCloud,
    identity: Arc<Identity>,
}

impl Provider for Azure {
    type Target = AzureTarget;
    type Config = AzureArgs;

    async fn connect(
        targets: &[&AzureTarget],
        options: &AzureArgs,
        http: &HttpConfig,
    ) -> Result<Azure> {
        let cloud = options
            .azure_cloud
            .or_else(|| crate::env::var("AZURE_AUTHORITY_HOST").and_then(|host| cloud_of(&host)))
            .unwrap_or_default();
        let client_options = client_options(http)?;
        let (credential, identity) = credential(options.azure_credential, cloud, &client_options)?;
        info!(
            credential = %identity.kind,
            using = %identity.inputs,
            "Azure credential selected"
        );
        let identity = Arc::new(identity);
        let credential: Arc<dyn TokenCredential> =
            Arc::new(Reported::new(credential, identity.kind));
        let check = !options.azure_skip_challenge_resource_check;
        let scopes = targets.iter().filter_map(|t| t.token_scope(cloud, check));
        let credential: Arc<dyn TokenCredential> = AskedEarly::start(credential, scopes);

        let mut clients = HashMap::new();
        for target in targets {
            let url = target.vault_url(cloud);
            if clients.contains_key(&url) {
                continue;
            }
            let client = SecretClient::new(
                &url,
                credential.clone(),
                Some(SecretClientOptions {
                    client_options: client_options.clone(),
                    verify_challenge_resource: Some(!options.azure_skip_challenge_resource_check),
                    ..Default::default()
                }),
            )
            .map_err(|err| anyhow!(error_chain(&err)))
            .with_context(|| format!("vault {url}"))
            .context(Failure::Usage)?;
            clients.insert(url, client);
        }
        Ok(Azure {
            clients,
            cloud,
            identity,
        })
    }

    async fn fetch(&self, target: &AzureTarget) -> Result<Fetched> {
        let url = target.vault_url(self.cloud);
        let client = self
            .clients
            .get(&url)
            .context("no client for the secret's vault")
            .context(Failure::Internal)?;
        let options = SecretClientGetSecretOptions {
            secret_version: target.version.clone(),
            ..Default::default()
        };
        crate::calls::count("azure", "GetSecret");
        let response = client
            .get_secret(&target.name, Some(options))
            .await
            .map_err(|err| classify(&err, &self.identity))?;
        bundle(response.into_body().into())
    }

    /// A named version's value never changes: read once, never again. The latest is read
    /// again each time (Key Vault has no cheaper way to tell which version is the latest:
    /// listing versions is paged and unordered).
    async fn refetch(&self, target: &AzureTarget, last: Option<&str>) -> Result<Option<Fetched>> {
        if target.version.is_some() && last.is_some() {
            return Ok(None);
        }
        self.fetch(target).await.map(Some)
    }
}

/// The secret bundle's fields this program reads. The body is parsed here rather than by
/// the SDK so that a malformed answer is reported without quoting it: serde's messages
/// can include the value that did not fit.
#[derive(serde::Deserialize)]
struct Bundle {
    value: Option<String>,
    id: Option<String>,
}

fn bundle(body: Bytes) -> Result<Fetched> {
    let parsed = serde_json::from_slice::<Bundle>(&body);
    // Best effort: the HTTP stack's own buffers are out of reach, this copy is not.
    if let Ok(mut owned) = body.try_into_mut() {
        owned.as_mut().zeroize();
    }
    let bundle = parsed
        .map_err(|err| {
            anyhow!(
                "the answer is not a Key Vault secret bundle (JSON {:?} error at line {} column {})",
                err.classify(),
                err.line(),
                err.column()
            )
        })
        .context(Failure::Internal)?;
    let version = bundle
        .id
        .as_deref()
        .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
        .map(str::to_owned);
    let value = bundle
        .value
        .ok_or_else(|| anyhow!("the secret bundle has no value"))
        .context(Failure::BadData)?;
    Ok(Fetched {
        value: SecretValue::from_string(value),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_give_value_and_version_and_never_quote_bad_ones() {
        let fetched = bundle(Bytes::from_static(
            br#"{"value":"v","id":"https://h/secrets/db/abc123","attributes":{"enabled":true}}"#,
        ))
        .unwrap();
        assert_eq!(fetched.value.expose(), b"v");
        assert_eq!(fetched.version.as_deref(), Some("abc123"));

        let Err(err) = bundle(Bytes::from_static(br#"{"value":{"sentinel-body":1}}"#)) else {
            panic!("a value that is not a string was accepted");
        };
        assert!(!format!("{err:#}").contains("sentinel"), "{err:#}");
        assert_eq!(Failure::of(&err), Failure::Internal);
        let Err(err) = bundle(Bytes::from_static(br#"{"id":"x"}"#)) else {
            panic!("a bundle without a value was accepted");
        };
        assert_eq!(Failure::of(&err), Failure::BadData);
    }
}
