//! Where Application Default Credentials come from, read the way google-cloud-auth's Application
//! Default Credentials read it (AIP-4110), so the run can log which source it used and name
//! it in errors. The credentials themselves are always built by google-cloud-auth.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::exit::Failure;
use crate::identity::google::METADATA_HOST;

/// Where Application Default Credentials will come from, read the way google-cloud-auth
/// reads it (AIP-4110), for the log line and error messages. Only names and addresses
/// are kept; a key file's private key is never held beyond parsing.
pub(super) enum AdcSource {
    Metadata {
        host: String,
        /// `metadata.google.internal`, not a `GCE_METADATA_HOST` override.
        default: bool,
    },
    File {
        path: PathBuf,
        origin: &'static str,
        details: FileDetails,
    },
}

#[derive(Deserialize, Default)]
pub(super) struct FileDetails {
    #[serde(rename = "type")]
    kind: String,
    client_email: Option<String>,
    audience: Option<String>,
    service_account_impersonation_url: Option<String>,
    credential_source: Option<CredentialSourceDetails>,
}

#[derive(Deserialize, Default)]
pub(super) struct CredentialSourceDetails {
    file: Option<String>,
    url: Option<String>,
    executable: Option<serde::de::IgnoredAny>,
    environment_id: Option<String>,
}

impl AdcSource {
    pub(super) fn discover() -> Result<AdcSource> {
        let (path, origin) = match std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
            Some(path) => (PathBuf::from(path), "GOOGLE_APPLICATION_CREDENTIALS"),
            None => {
                let well_known = std::env::var_os("HOME").map(|home| {
                    PathBuf::from(home).join(".config/gcloud/application_default_credentials.json")
                });
                match well_known {
                    Some(path) if path.exists() => (path, "gcloud application-default login"),
                    _ => {
                        let (host, default) = match std::env::var("GCE_METADATA_HOST") {
                            Ok(host) => (host, false),
                            Err(_) => (METADATA_HOST.to_owned(), true),
                        };
                        return Ok(AdcSource::Metadata { host, default });
                    }
                }
            }
        };
        let text = Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {origin} file {}", path.display()))
                .context(Failure::Auth)?,
        );
        let details: FileDetails = serde_json::from_str(&text)
            .map_err(|_| {
                // serde's message could quote the file, which may hold a private key.
                anyhow!(
                    "{origin} file {} is not a Google credentials file (JSON with a \"type\")",
                    path.display()
                )
            })
            .context(Failure::Auth)?;
        Ok(AdcSource::File {
            path,
            origin,
            details,
        })
    }

    /// A short name for the kind of identity, as logged.
    fn kind(&self) -> String {
        match self {
            AdcSource::Metadata { .. } => "metadata-server".to_owned(),
            AdcSource::File { details, .. } => match details.kind.as_str() {
                "external_account" => "external-account".to_owned(),
                "service_account" => "service-account-key".to_owned(),
                "authorized_user" => "authorized-user".to_owned(),
                "impersonated_service_account" => "impersonated-service-account".to_owned(),
                other => other.replace('_', "-"),
            },
        }
    }

    /// For error messages: the kind and where its inputs are.
    pub(super) fn describe(&self) -> String {
        match self {
            AdcSource::Metadata {
                host,
                default: true,
            } => format!(
                "metadata server at {host}: no GOOGLE_APPLICATION_CREDENTIALS and no gcloud \
                 application-default file"
            ),
            AdcSource::Metadata { host, .. } => {
                format!("metadata server at {host} from GCE_METADATA_HOST")
            }
            AdcSource::File { path, origin, .. } => {
                let mut text = format!("{} from {origin} {}", self.kind(), path.display());
                if let Some(subject) = self.subject_token() {
                    text.push_str(&format!(", subject token {subject}"));
                }
                text
            }
        }
    }

    /// The file an `external_account` configuration reads its subject token from.
    pub(super) fn token_file(&self) -> Option<&std::path::Path> {
        let AdcSource::File { details, .. } = self else {
            return None;
        };
        let file = details.credential_source.as_ref()?.file.as_deref()?;
        Some(std::path::Path::new(file))
    }

    fn subject_token(&self) -> Option<String> {
        let AdcSource::File { details, .. } = self else {
            return None;
        };
        let source = details.credential_source.as_ref()?;
        Some(match source {
            CredentialSourceDetails {
                file: Some(file), ..
            } => format!("file:{file}"),
            CredentialSourceDetails { url: Some(url), .. } => format!("url:{url}"),
            CredentialSourceDetails {
                executable: Some(_),
                ..
            } => "executable".to_owned(),
            CredentialSourceDetails {
                environment_id: Some(id),
                ..
            } => id.clone(),
            _ => "unknown".to_owned(),
        })
    }

    /// The service account an `external_account` or `impersonated_service_account` file
    /// impersonates, from `.../serviceAccounts/EMAIL:generateAccessToken`.
    fn impersonating(&self) -> Option<String> {
        let AdcSource::File { details, .. } = self else {
            return None;
        };
        let url = details.service_account_impersonation_url.as_deref()?;
        let (_, tail) = url.rsplit_once("/serviceAccounts/")?;
        Some(tail.split(':').next().unwrap_or(tail).to_owned())
    }

    pub(super) async fn log(&self, timeout: Duration) {
        let source = self.kind();
        match self {
            AdcSource::Metadata { host, .. } => {
                let account = metadata_email(host, timeout).await;
                info!(
                    source = %source,
                    metadata = %host,
                    account = %account.as_deref().unwrap_or("unknown"),
                    "GCP identity loaded"
                );
            }
            AdcSource::File { path, details, .. } => {
                info!(
                    source = %source,
                    file = %path.display(),
                    account = details.client_email.as_deref().map(tracing::field::display),
                    subject_token = self.subject_token().map(tracing::field::display),
                    audience = details.audience.as_deref().map(tracing::field::display),
                    impersonating = self.impersonating().map(tracing::field::display),
                    "GCP identity loaded"
                );
                if details.kind == "service_account" {
                    warn!(
                        "a service-account key is a long-lived credential; prefer GKE Workload \
                         Identity or workload identity federation (docs/gcp.md)"
                    );
                }
            }
        }
    }
}

/// The metadata server's name for the identity (a service account's email, or the
/// workload pool for a Kubernetes service account used directly), for the log only. The
/// metadata server is reached directly (never through a proxy, never after a redirect)
/// and no more than a short name is read.
async fn metadata_email(host: &str, timeout: Duration) -> Option<String> {
    const MAX_NAME_BYTES: usize = 1024;
    let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/email");
    let mut response = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .ok()?
        .get(url)
        .header("metadata-flavor", "Google")
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_NAME_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).ok()?;
    let text = text.trim();
    let plausible = (1..=255).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.-_".contains(c));
    plausible.then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> AdcSource {
        AdcSource::File {
            path: PathBuf::from("/etc/gcp/credential-configuration.json"),
            origin: "GOOGLE_APPLICATION_CREDENTIALS",
            details: serde_json::from_str(json).unwrap(),
        }
    }

    #[test]
    fn external_account_files_are_described_by_their_inputs() {
        let source = file(
            r#"{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
                "token_url":"https://sts.googleapis.com/v1/token",
                "service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/app@p.iam.gserviceaccount.com:generateAccessToken",
                "credential_source":{"file":"/var/run/secrets/tokens/gcp-token","format":{"type":"text"}}}"#,
        );
        assert_eq!(source.kind(), "external-account");
        assert_eq!(
            source.impersonating().as_deref(),
            Some("app@p.iam.gserviceaccount.com")
        );
        assert_eq!(
            source.subject_token().as_deref(),
            Some("file:/var/run/secrets/tokens/gcp-token")
        );
        assert!(
            source
                .describe()
                .contains("/etc/gcp/credential-configuration.json")
        );
    }

    #[test]
    fn key_files_keep_the_account_and_drop_the_key() {
        let source = file(
            r#"{"type":"service_account","client_email":"app@p.iam.gserviceaccount.com",
                "private_key":"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"}"#,
        );
        assert_eq!(source.kind(), "service-account-key");
        let AdcSource::File { details, .. } = &source else {
            unreachable!()
        };
        assert_eq!(
            details.client_email.as_deref(),
            Some("app@p.iam.gserviceaccount.com")
        );
        assert_eq!(source.subject_token(), None);
    }
}
