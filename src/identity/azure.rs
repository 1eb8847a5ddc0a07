//! Who the Azure provider authenticates as: the credential `--azure-credential` picks,
//! the projected-token assertion for workload identity, and what to tell an operator when
//! Entra ID refuses. The set-up on Azure's side is in `docs/azure.md`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result, anyhow};
use azure_core::cloud::CloudConfiguration;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::{Error as AzureError, ErrorKind};
use azure_core::http::{ClientMethodOptions, ClientOptions};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};
use tracing::{debug, info};
use zeroize::Zeroize;

use crate::exit::Failure;
use crate::net::error_chain;

/// `--azure-credential`: which identity to prove (see the module header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AzureCredential {
    #[default]
    Auto,
    Workload,
    Managed,
    Developer,
}

/// `--azure-cloud`: a sovereign cloud, for its vault suffix and Entra ID authority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AzureCloud {
    #[default]
    Public,
    China,
    Usgov,
}

/// What the run authenticates as, for log lines and error hints. Never holds a token.
#[derive(Debug)]
pub struct Identity {
    /// `WorkloadIdentity`, `ManagedIdentity` or `DeveloperTools`.
    pub kind: &'static str,
    /// Which inputs it uses, e.g. `token file /var/run/... for client ... in tenant ...`.
    pub inputs: String,
    /// Set when the token file had whitespace around the token, which was removed.
    pub trimmed: Arc<AtomicBool>,
}

/// Picks the credential `--azure-credential` asks for (see the module header).
pub fn credential(
    choice: AzureCredential,
    cloud: AzureCloud,
    client_options: &ClientOptions,
) -> Result<(Arc<dyn TokenCredential>, Identity)> {
    let var = crate::env::var;
    let workload = match choice {
        AzureCredential::Auto => var("AZURE_FEDERATED_TOKEN_FILE").is_some(),
        AzureCredential::Workload => true,
        AzureCredential::Managed | AzureCredential::Developer => false,
    };
    let trimmed = Arc::new(AtomicBool::new(false));
    let identity = |kind, inputs| Identity {
        kind,
        inputs,
        trimmed: trimmed.clone(),
    };
    let auth = |err: AzureError, what: &str| {
        Err(anyhow!(error_chain(&err)))
            .context(format!("setting up the Azure {what}"))
            .context(Failure::Auth)
    };

    if workload {
        let missing: Vec<&str> = [
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
        ]
        .into_iter()
        .filter(|name| var(name).is_none())
        .collect();
        if !missing.is_empty() {
            return Err(anyhow!(
                "Azure workload identity needs AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and \
                 AZURE_TENANT_ID; {} not set (is the pod labelled \
                 azure.workload.identity/use: \"true\" with an annotated service account?)",
                missing.join(", ")
            ))
            .context(Failure::Auth);
        }
        let (file, client_id, tenant_id) = (
            PathBuf::from(var("AZURE_FEDERATED_TOKEN_FILE").unwrap_or_default()),
            var("AZURE_CLIENT_ID").unwrap_or_default(),
            var("AZURE_TENANT_ID").unwrap_or_default(),
        );
        // Fail before any secret is requested when the file is not there at all; it is
        // still read afresh at each exchange.
        std::fs::metadata(&file)
            .with_context(|| {
                format!(
                    "the projected token AZURE_FEDERATED_TOKEN_FILE={}",
                    file.display()
                )
            })
            .context(Failure::Auth)?;
        let authority = var("AZURE_AUTHORITY_HOST");
        let mut options = client_options.clone();
        if authority.is_none() {
            options.cloud = cloud_configuration(cloud);
        }
        let inputs = format!(
            "token file {} for client {client_id} in tenant {tenant_id} at {}",
            file.display(),
            authority.as_deref().unwrap_or(match cloud {
                AzureCloud::Public => "https://login.microsoftonline.com",
                AzureCloud::China => "https://login.chinacloudapi.cn",
                AzureCloud::Usgov => "https://login.microsoftonline.us",
            })
        );
        let assertion = ProjectedToken {
            path: file,
            trimmed: trimmed.clone(),
        };
        let credential = match ClientAssertionCredential::new(
            tenant_id,
            client_id,
            assertion,
            Some(ClientAssertionCredentialOptions {
                client_options: options,
            }),
        ) {
            Ok(credential) => credential,
            Err(err) => return auth(err, "workload identity"),
        };
        return Ok((credential, identity("WorkloadIdentity", inputs)));
    }

    match choice {
        AzureCredential::Developer => match DeveloperToolsCredential::new(None) {
            Ok(credential) => Ok((
                credential,
                identity(
                    "DeveloperTools",
                    "the Azure CLI (az), then the Azure Developer CLI (azd)".to_owned(),
                ),
            )),
            Err(err) => auth(err, "developer credential"),
        },
        _ => {
            let client_id = var("AZURE_CLIENT_ID");
            let source = if var("IDENTITY_ENDPOINT").is_some() && var("IDENTITY_HEADER").is_some() {
                "the App Service identity endpoint (IDENTITY_ENDPOINT)"
            } else {
                "the instance metadata service"
            };
            let inputs = match &client_id {
                Some(id) => format!("user-assigned identity {id} from {source}"),
                None => format!("the system-assigned identity from {source}"),
            };
            match ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.map(UserAssignedId::ClientId),
                client_options: client_options.clone(),
            })) {
                Ok(credential) => Ok((credential, identity("ManagedIdentity", inputs))),
                Err(err) => auth(err, "managed identity"),
            }
        }
    }
}

fn cloud_configuration(cloud: AzureCloud) -> Option<Arc<CloudConfiguration>> {
    match cloud {
        AzureCloud::Public => None,
        AzureCloud::China => Some(Arc::new(CloudConfiguration::AzureChina)),
        AzureCloud::Usgov => Some(Arc::new(CloudConfiguration::AzureGovernment)),
    }
}

/// The projected service account token, read at every exchange, without the whitespace
/// around it.
#[derive(Debug)]
struct ProjectedToken {
    path: PathBuf,
    trimmed: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl ClientAssertion for ProjectedToken {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let failed = |why: String| {
            AzureError::with_message(
                ErrorKind::Credential,
                format!(
                    "the projected token AZURE_FEDERATED_TOKEN_FILE={} {why}",
                    self.path.display()
                ),
            )
        };
        let mut raw = super::token_file::read(&self.path)
            .map_err(|err| failed(format!("cannot be read: {err}")))?;
        let token = match std::str::from_utf8(&raw) {
            Ok(text) => text
                .trim_matches(|c: char| c.is_ascii_whitespace())
                .to_owned(),
            Err(_) => String::new(),
        };
        let padded = token.len() != raw.len();
        raw.zeroize();
        if token.is_empty() {
            return Err(failed("is empty or not text".to_owned()));
        }
        if padded {
            self.trimmed.store(true, Ordering::Relaxed);
            debug!("removed whitespace around the projected token");
        }
        Ok(token)
    }
}

/// Logs the first token the run obtains (kind, scope, lifetime; never the token).
#[derive(Debug)]
pub struct Reported {
    inner: Arc<dyn TokenCredential>,
    kind: &'static str,
    logged: AtomicBool,
}

impl Reported {
    pub fn new(inner: Arc<dyn TokenCredential>, kind: &'static str) -> Reported {
        Reported {
            inner,
            kind,
            logged: AtomicBool::new(false),
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for Reported {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let token = self.inner.get_token(scopes, options).await?;
        if !self.logged.swap(true, Ordering::Relaxed) {
            let left = token.expires_on - azure_core::time::OffsetDateTime::now_utc();
            info!(
                credential = %self.kind,
                scope = %scopes.join(" "),
                expires_in_s = left.whole_seconds().max(0),
                "Azure identity loaded"
            );
        }
        Ok(token)
    }
}

/// What an operator should check for the AADSTS codes workload identity set-ups meet.
pub fn entra_advice(codes: &str) -> Option<&'static str> {
    codes.split(',').find_map(|code| {
        Some(match code.trim() {
            "50027" => {
                "Entra ID could not read the token as a JWT: AZURE_FEDERATED_TOKEN_FILE must \
                 hold the projected service account token and nothing else"
            }
            "700211" => {
                "no federated credential on the identity has the token's issuer: compare \
                 `az identity federated-credential list` with the cluster's OIDC issuer URL"
            }
            "70021" | "700213" => {
                "no federated credential matches the token's subject and audience: it must be \
                 system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT with audience \
                 api://AzureADTokenExchange"
            }
            "700016" => "no application with AZURE_CLIENT_ID exists in AZURE_TENANT_ID",
            "700024" => "the token has expired or is not valid yet (check the node's clock)",
            "90002" => "the tenant in AZURE_TENANT_ID does not exist",
            _ => return None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(assertion: &ProjectedToken) -> azure_core::Result<String> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(assertion.secret(None))
    }

    #[test]
    fn the_token_file_is_read_at_every_exchange_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("azure-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let assertion = ProjectedToken {
            path: path.clone(),
            trimmed: Arc::new(AtomicBool::new(false)),
        };

        std::fs::write(&path, "aaa.bbb.ccc").unwrap();
        assert_eq!(read(&assertion).unwrap(), "aaa.bbb.ccc");
        assert!(!assertion.trimmed.load(Ordering::Relaxed));

        // Rotated by the kubelet, and written by hand with a newline.
        std::fs::write(&path, " \tddd.eee.fff\r\n").unwrap();
        assert_eq!(read(&assertion).unwrap(), "ddd.eee.fff");
        assert!(assertion.trimmed.load(Ordering::Relaxed));

        for content in ["", " \n"] {
            std::fs::write(&path, content).unwrap();
            let err = read(&assertion).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Credential), "{content:?}");
        }
        std::fs::write(&path, [0xff, 0xfe, b'x']).unwrap();
        assert!(read(&assertion).is_err());

        std::fs::remove_file(&path).unwrap();
        let err = read(&assertion).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Credential));
        assert!(err.to_string().contains("cannot be read"), "{err}");
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn advice_is_given_for_the_codes_workload_identity_meets() {
        assert!(entra_advice("700211").unwrap().contains("issuer"));
        assert!(entra_advice("12345,70021").unwrap().contains("subject"));
        assert!(entra_advice("50027").unwrap().contains("JWT"));
        assert_eq!(entra_advice("12345"), None);
    }
}
