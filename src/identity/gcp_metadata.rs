//! A Google ID token from the metadata server: what a GKE pod (Workload Identity) or a GCE
//! VM presents to AWS STS, whose IAM role trusts `accounts.google.com` for that audience.
//!
//! google-cloud-auth's metadata-server ID-token builder does the request
//! (`/computeMetadata/v1/instance/service-accounts/default/identity?audience=...`) and
//! honours `GCE_METADATA_HOST`; its own retries are off, as for every provider.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use google_cloud_auth::credentials::idtoken;
use google_cloud_gax::retry_policy::NeverRetry;

use super::WebToken;
use crate::exit::Class;
use crate::providers::gcp::{METADATA_HOST, credentials_error, metadata_host_resolves};
use crate::secret::SecretValue;

pub(super) async fn id_token(audience: &str, attempt_timeout: Duration) -> Result<WebToken> {
    let overridden = std::env::var("GCE_METADATA_HOST").is_ok_and(|h| !h.is_empty());
    if !overridden {
        // Off Google Cloud the name does not resolve: no identity, not a network blip.
        metadata_host_resolves(METADATA_HOST).await?;
    }
    let credentials = idtoken::mds::Builder::new(audience)
        .with_retry_policy(NeverRetry)
        .build()
        .map_err(|err| anyhow!(crate::providers::error_chain(&err)))
        .context("building the metadata-server ID token client")
        .context(Class::Internal)?;
    let token = tokio::time::timeout(attempt_timeout, credentials.id_token())
        .await
        .map_err(|_| anyhow!("the metadata server did not answer within {attempt_timeout:?}"))
        .context(Class::Transient)?
        .map_err(|err| credentials_error(&err))
        .with_context(|| format!("requesting an ID token for audience {audience}"))?;
    Ok(WebToken::new(SecretValue::from_string(token), None))
}
