//! Google Secret Manager.
//!
//! ```text
//! --secret db=gcp://my-project/db-password                      (version `latest`)
//! --secret gcp://my-project/db-password?version=7               (or ?version=ALIAS)
//! --secret gcp://projects/my-project/secrets/db-password/versions/7
//! --secret gcp://my-project/db-password?location=europe-west1   (a regional secret)
//! --gcp-endpoint https://secretmanager-myendpoint.p.googleapis.com   (Private Service Connect)
//! ```
//!
//! Identity comes from google-cloud-auth's Application Default Credentials, with nothing
//! added: `GOOGLE_APPLICATION_CREDENTIALS` naming an `external_account` configuration
//! (workload identity federation: a projected Kubernetes token file or URL exchanged at
//! Google STS, optionally impersonating a service account), a service-account key (the
//! discouraged last resort) or any other ADC file; else gcloud's application-default file;
//! else the metadata server (GKE Workload Identity, GCE), at `GCE_METADATA_HOST` when set.
//! The identity is resolved once, before any secret is read, and the run logs which source
//! it came from.
//!
//! One client per endpoint is built and reused: the global
//! `https://secretmanager.googleapis.com`, or `https://secretmanager.LOCATION.rep.googleapis.com`
//! for a regional secret, or `--gcp-endpoint` for every secret when given. The client's own
//! retries are off; the core's policy retries `UNAVAILABLE`, `RESOURCE_EXHAUSTED`,
//! `DEADLINE_EXCEEDED` and 5xx, honouring a `RetryInfo` delay or `Retry-After`. A payload
//! whose `dataCrc32c` does not match its bytes is rejected (exit 7), which the official
//! clients do not check. Every request's User-Agent is `secret-sidecar/<version>`.
//!
//! The pieces: `target.rs` reads the reference, `errors.rs` classifies what the client
//! returns, `adc.rs` says where Application Default Credentials come from (for the log and
//! errors); the metadata server and credential errors shared with the gcp-metadata token
//! source are in [`crate::identity::google`]. This file connects and fetches.

mod adc;
mod errors;
mod target;
mod warm;

use std::cell::Cell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use anyhow::{Context, Result, anyhow};
use google_cloud_auth::credentials::{
    AccessTokenCredentials, Builder as CredentialsBuilder, CredentialsProvider as _,
};
use google_cloud_gax::client_builder::internal::{
    with_automatic_decompression, with_follow_redirects,
};
use google_cloud_gax::options::RequestOptionsBuilder as _;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_secretmanager_v1::client::SecretManagerService;

use super::{Fetched, Provider};
use crate::exit::Failure;
use crate::identity::google::{credentials_error, metadata_host_resolves, scrub};
use crate::identity::token_file;
use crate::net::{HttpConfig, MAX_RESPONSE_BYTES, ResponseTooLarge, USER_AGENT, error_chain};
use crate::secret::SecretValue;
use adc::AdcSource;
use errors::classify;
pub use target::GcpTarget;

/// The Google Secret Manager options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GcpArgs {
    /// Google only: send every Secret Manager request to this endpoint instead of
    /// https://secretmanager.googleapis.com (or the regional endpoint of a ?location=
    /// secret), e.g. a Private Service Connect endpoint. https, or http to a loopback
    /// address.
    ///
    /// Example: --gcp-endpoint https://secretmanager-myendpoint.p.googleapis.com
    #[arg(long, value_name = "URL", env = "SECRET_SIDECAR_GCP_ENDPOINT")]
    pub gcp_endpoint: Option<String>,
}

/// Connected Secret Manager clients, one per endpoint.
pub struct Gcp {
    clients: HashMap<String, SecretManagerService>,
    endpoint_override: Option<String>,
}

impl Provider for Gcp {
    type Target = GcpTarget;
    type Config = GcpArgs;

    async fn connect(targets: &[&GcpTarget], args: &GcpArgs, http: &HttpConfig) -> Result<Gcp> {
        refuse_unsafe_settings(http)?;
        let endpoint_override = args
            .gcp_endpoint
            .as_deref()
            .map(|endpoint| {
                let carries = "every request's access token";
                crate::net::https_or_loopback("--gcp-endpoint", endpoint, carries)
                    .map(|_| endpoint.to_owned())
            })
            .transpose()
            .context(Failure::Usage)?;

        // Resolve the identity once, before any secret is requested, so an identity
        // failure is reported as such and every client shares one token cache.
        let source = AdcSource::discover()?;
        if let AdcSource::Metadata { host, default } = &source
            && *default
        {
            metadata_host_resolves(host).await?;
        }
        let credentials: AccessTokenCredentials = CredentialsBuilder::default()
            .build_access_token_credentials()
            .map_err(|err| anyhow!(scrub(&error_chain(&err))))
            .with_context(|| format!("loading Google credentials ({})", source.describe()))
            .context(Failure::Auth)?;
        let anonymous = warm::Anonymous::new(credentials.clone());

        // The token, the clients, the credentials' universe domain and the account name
        // for the log line do not depend on each other, so they are asked for at once;
        // the clients are ready at once (warm.rs answers their universe-domain question),
        // so their connections are opened while the token is still on its way.
        let started = std::time::Instant::now();
        let token_arrived = Cell::new(false);
        let token = async {
            let token = credentials.access_token().await;
            token_arrived.set(true);
            anonymous.stop();
            token
        };
        let clients = async {
            let (mut clients, mut reads) = (HashMap::new(), HashMap::new());
            for target in targets {
                let endpoint = target.endpoint(endpoint_override.as_deref());
                *reads.entry(endpoint.clone()).or_insert(0usize) += 1;
                if let Entry::Vacant(slot) = clients.entry(endpoint) {
                    let client = client(slot.key(), &anonymous, http).await?;
                    slot.insert(client);
                }
            }
            let mut warm_ups = Vec::new();
            if !token_arrived.get() {
                for (endpoint, client) in &clients {
                    let count = reads[endpoint].min(http.concurrency);
                    warm_ups.extend(warm::spawn(client, &anonymous, count));
                }
            }
            Ok::<_, anyhow::Error>((clients, warm_ups))
        };
        let (token, clients, universe, account) = tokio::join!(
            token,
            clients,
            credentials.universe_domain(),
            source.account(http.attempt_timeout)
        );
        let mut token = token.map_err(|err| {
            // kubelet replacing the projected subject token while it was read: retried.
            let failed = match source.token_file() {
                Some(file) if token_file::replaced(&err, file) => {
                    anyhow!(scrub(&error_chain(&err))).context(Failure::Transient)
                }
                _ => credentials_error(&err),
            };
            failed.context(format!(
                "getting a Google access token ({})",
                source.describe()
            ))
        })?;
        zeroize::Zeroize::zeroize(&mut token.token);
        anonymous
            .check_universe(universe)
            .with_context(|| format!("loading Google credentials ({})", source.describe()))
            .context(Failure::Usage)?;
        source.log(account);
        let (clients, warm_ups) = clients?;
        crate::net::settle(warm_ups, started.elapsed()).await;
        Ok(Gcp {
            clients,
            endpoint_override,
        })
    }

    async fn fetch(&self, target: &GcpTarget) -> Result<Fetched> {
        let client = self
            .clients
            .get(&target.endpoint(self.endpoint_override.as_deref()))
            .context("no client for the secret's endpoint")
            .context(Failure::Internal)?;
        crate::calls::count("gcp", "AccessSecretVersion");
        let response = client
            .access_secret_version()
            .set_name(target.resource_name())
            .with_user_agent(USER_AGENT)
            .send()
            .await
            .map_err(classify)?;
        // `projects/NUMBER/secrets/S/versions/7`: the number the alias or `latest` resolved to.
        let version = response
            .name
            .rsplit_once("/versions/")
            .map(|(_, version)| version.to_owned());
        let Some(payload) = response.payload else {
            return Err(anyhow!("the response has no payload")).context(Failure::BadData);
        };
        // The client reads the whole response before this point (google-cloud-gax offers
        // no hook to stop it sooner; its attempt timeout is what bounds that read), so
        // this only keeps the exit code and the outcome the same as the other providers'.
        if payload.data.len() > MAX_RESPONSE_BYTES {
            return Err(anyhow::Error::new(ResponseTooLarge)).context(Failure::BadData);
        }
        let expected = payload.data_crc32c;
        // Zero-copy when the buffer is not shared, so SecretValue zeroes the only copy.
        let value = SecretValue::new(Vec::from(payload.data));
        if let Some(expected) = expected
            && i64::from(crc32c::crc32c(value.expose())) != expected
        {
            // Neither checksum is printed: a CRC says something about the value.
            return Err(anyhow!(
                "the payload does not match its dataCrc32c checksum (corrupted in transit?)"
            ))
            .context(Failure::BadData);
        }
        Ok(Fetched { value, version })
    }

    /// A numbered version's payload never changes: read once, never again. `latest` and
    /// aliases move and are accessed again: reading the version's metadata first would be
    /// free but counts against the 600 read requests per minute of a whole project (access:
    /// 90,000), which a fleet of pods would exhaust.
    async fn refetch(&self, target: &GcpTarget, last: Option<&str>) -> Result<Option<Fetched>> {
        if target.version.bytes().all(|b| b.is_ascii_digit()) && last.is_some() {
            return Ok(None);
        }
        self.fetch(target).await.map(Some)
    }
}

/// One Secret Manager client for `endpoint`, with the provider's settings.
async fn client(
    endpoint: &str,
    credentials: &warm::Anonymous,
    http: &HttpConfig,
) -> Result<SecretManagerService> {
    let builder = SecretManagerService::builder()
        .with_endpoint(endpoint)
        .with_credentials(credentials.clone())
        .with_retry_policy(NeverRetry)
        .with_attempt_timeout(http.attempt_timeout);
    // The client follows redirects unless told not to, and a redirect is never Secret
    // Manager's answer. The switch sits in gax's public `internal` module (hidden from its
    // docs); tests/faults.rs checks it holds. Decompression is off too: the client reads
    // each answer whole (no hook to cap it as it streams), and a compressed answer could
    // expand far past what was sent. reqwest is built without decompression today; this
    // keeps it so if a dependency turns it on.
    with_follow_redirects(with_automatic_decompression(builder, false), false)
        .build()
        .await
        .map_err(|err| anyhow!(scrub(&error_chain(&err))))
        .with_context(|| format!("creating the Secret Manager client for {endpoint}"))
        .context(Failure::Internal)
}

/// Settings this provider cannot honour safely are usage errors rather than surprises.
fn refuse_unsafe_settings(http: &HttpConfig) -> Result<()> {
    // The client's own logging prints responses with Debug, secret payloads included.
    if std::env::var("GOOGLE_CLOUD_RUST_LOGGING").is_ok_and(|v| v == "true") {
        return Err(anyhow!(
            "GOOGLE_CLOUD_RUST_LOGGING=true makes the Google client log whole responses, \
             secret payloads included; unset it"
        ))
        .context(Failure::Usage);
    }
    // The Google clients build their own HTTPS clients and take no extra roots.
    if let Some(ca) = &http.ca {
        return Err(anyhow!(
            "--ca-file {} cannot be applied to the Google clients; point SSL_CERT_FILE at a \
             bundle holding both the system roots and this CA instead",
            ca.path().display()
        ))
        .context(Failure::Usage);
    }
    Ok(())
}
