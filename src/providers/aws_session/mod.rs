//! What the two AWS stores share, Secrets Manager (`aws://`) and Parameter Store
//! (`ssm://`): one identity and one HTTP client for the whole run.
//!
//! Identity comes from aws-config's default chain with nothing added: static keys in the
//! environment, IRSA (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, the token file re-read
//! on every exchange), EKS Pod Identity (`AWS_CONTAINER_CREDENTIALS_FULL_URI` +
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`), the ECS task role, shared profiles, and
//! instance metadata; or, with `--aws-token-source`, from a token obtained in-process and
//! exchanged with STS (`assume_role.rs`). It is resolved once per run, before any secret
//! is requested, whichever of the two stores (or both) the run reads, so a run that reads
//! both makes one STS exchange, not two.
//!
//! `AWS_ENDPOINT_URL` and the per-service `AWS_ENDPOINT_URL_*` are honoured by the SDK
//! (that is how LocalStack is reached); plain `http://` to another host is refused unless
//! `--aws-allow-plain-http`. Every request carries a `secret-sidecar/<version>` User-Agent
//! suffix and goes through one HTTP client whose answers are capped (`http.rs`); every
//! error is classified the same way, each service giving only its own error codes
//! (`errors.rs`).

mod assume_role;
mod errors;
mod http;
pub mod warm;

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use anyhow::{Context as _, Result, anyhow};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use tracing::info;

use crate::exit::Failure;
use crate::identity::token_file;
use crate::identity::web_token::TokenSource;
use crate::net::{HttpConfig, certificate_error, certificate_refused, error_chain};
pub(crate) use errors::{classify_with, common_class, credentials_class};
pub(crate) use http::UserAgentSuffix;

/// The endpoint overrides aws-config reads, which this run sends requests to.
const ENDPOINT_VARIABLES: [&str; 4] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_SSM",
    "AWS_ENDPOINT_URL_STS",
];

/// Refuses an `http://` endpoint to a host other than this machine unless allowed: the
/// signed requests, the STS credentials and the secret values would cross that network
/// unencrypted. Checked by the plan, before any request.
pub fn check_endpoints(allow_plain_http: bool) -> Result<()> {
    if allow_plain_http {
        return Ok(());
    }
    for name in ENDPOINT_VARIABLES {
        if let Some(url) = crate::env::var(name) {
            let carries = "signed requests, STS credentials and secret values";
            crate::net::https_or_loopback(name, &url, carries)
                .context("for LocalStack on another host, pass --aws-allow-plain-http")?;
        }
    }
    Ok(())
}

/// The run's AWS identity, resolved once, and the configuration every AWS client is built
/// from. Cheap to clone: its parts are shared.
#[derive(Clone)]
pub struct Session {
    shared: SdkConfig,
    credentials: Credentials,
    /// The region of targets that are plain names.
    default_region: Option<String>,
}

/// A provider's own options together with the run's session: what an AWS store's
/// `connect` is given.
pub struct OnSession<O> {
    pub session: Session,
    pub options: O,
}

impl Session {
    /// Loads the configuration and resolves the identity. `regions` holds the region
    /// each target names (an ARN's) or `None` for a plain name: when every target names
    /// one and the environment names none, nothing is probed for a region. When the
    /// identity takes a network exchange, `warm_up` is given the loaded configuration
    /// first, to open the stores' connections meanwhile (`warm.rs`), and its requests are
    /// let finish before the session is handed out ([`crate::net::settle`]).
    pub async fn connect(
        regions: &[Option<&str>],
        token: Option<&TokenSource>,
        http: &HttpConfig,
        warm_up: impl FnOnce(&SdkConfig) -> Vec<tokio::task::JoinHandle<()>>,
    ) -> Result<Session> {
        // One attempt per call: the core's retry policy repeats transient failures.
        let plain_http = http::plain_http_only(&|name| std::env::var(name).ok());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http::client(http.ca.as_ref(), plain_http)?)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(http.attempt_timeout)
                    .operation_attempt_timeout(http.attempt_timeout)
                    .build(),
            );
        let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .any(|name| crate::env::var(name).is_some());
        if !env_region
            && regions.iter().all(Option::is_some)
            && let Some(region) = regions.iter().flatten().next()
        {
            loader = loader.region(Region::new(region.to_string()));
        }
        if token.is_some() {
            // The token source replaces the default chain: no profile, container or
            // instance-metadata probing for credentials that will not be used.
            loader = loader.no_credentials();
        }
        let shared = loader.load().await;
        let default_region = shared.region().map(|r| r.to_string());
        let started = std::time::Instant::now();
        let warm_ups = match warm::worthwhile(token) {
            true => warm_up(&shared),
            false => Vec::new(),
        };

        let credentials = match token {
            Some(source) => assume_role::assume_role(&shared, source, http).await?,
            None => shared
                .credentials_provider()
                .ok_or_else(|| anyhow!("no AWS credentials provider is configured"))
                .context(Failure::Auth)?
                .provide_credentials()
                .await
                .map_err(|err| {
                    if certificate_refused(&err) {
                        return certificate_error(error_chain(&err))
                            .context(format!("loading AWS credentials{}", identity_hint()));
                    }
                    let class = match credentials_class(&err).unwrap_or(Failure::Auth) {
                        Failure::Auth if token_file_replaced(&err) => Failure::Transient,
                        class => class,
                    };
                    anyhow!(error_chain(&err))
                        .context(format!("loading AWS credentials{}", identity_hint()))
                        .context(class)
                })?,
        };
        crate::net::settle(warm_ups, started.elapsed()).await;
        info!(
            source = %credential_source(&credentials),
            expires_in_s = credentials
                .expiry()
                .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
                .map(|left| left.as_secs()),
            "AWS identity loaded"
        );
        Ok(Session {
            shared,
            credentials,
            default_region,
        })
    }

    /// The configuration a service client is built from (`Builder::from(config)`), before
    /// [`Session::region`], [`Session::credentials`] and [`UserAgentSuffix`] are set on it.
    pub fn config(&self) -> &SdkConfig {
        &self.shared
    }

    /// One client per region that `targets` (each its named region, or `None`, and what
    /// to call it in an error) need. `build` makes a service's client from the session's
    /// configuration with that region and the run's credentials already set, and adds
    /// [`UserAgentSuffix`], which only a service's own builder takes.
    pub fn clients<'t, C>(
        &self,
        targets: impl IntoIterator<Item = (Option<&'t str>, &'t str)>,
        build: impl Fn(&SdkConfig) -> C,
    ) -> Result<HashMap<String, C>> {
        let mut clients = HashMap::new();
        for (named, what) in targets {
            if let Entry::Vacant(slot) = clients.entry(self.region(named, what)?) {
                let config = regional(&self.shared, slot.key(), self.credentials());
                slot.insert(build(&config));
            }
        }
        Ok(clients)
    }

    /// The region of targets that are plain names, when the environment or profile has one.
    pub fn default_region(&self) -> Option<String> {
        self.default_region.clone()
    }

    /// When the run's credentials expire (static keys never do). Clients hold them as they
    /// are, so a long-running mode reconnects before then.
    pub fn expires(&self) -> Option<std::time::SystemTime> {
        self.credentials.expiry()
    }

    /// The identity resolved for the run.
    pub fn credentials(&self) -> Credentials {
        self.credentials.clone()
    }

    /// The region a target's client talks to: the one its ARN names, else the
    /// environment's or the profile's. None at all is a usage error naming `what`.
    pub fn region(&self, named: Option<&str>, what: &str) -> Result<String> {
        named
            .or(self.default_region.as_deref())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no AWS region for '{what}': set AWS_REGION or use its ARN"))
            .context(Failure::Usage)
    }
}

/// The run's configuration for one region's clients, with `credentials`.
fn regional(shared: &SdkConfig, region: &str, credentials: Credentials) -> SdkConfig {
    shared
        .to_builder()
        .region(Region::new(region.to_owned()))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .build()
}

/// The name of the credential-chain link that produced `credentials` (`Environment`,
/// `Profile`, `WebIdentityToken`, `EcsContainer`, `Ec2InstanceMetadata`, ...).
///
/// `Credentials` keeps the name private and shows it only in its `Debug` output, which
/// redacts the secret key; the string is read here and dropped, never logged whole.
fn credential_source(credentials: &Credentials) -> String {
    let debug = format!("{credentials:?}");
    debug
        .split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Whether aws-config failed because kubelet was replacing the projected token file it
/// read (IRSA's, or EKS Pod Identity's): worth another attempt, unlike a missing file.
fn token_file_replaced(err: &(dyn std::error::Error + 'static)) -> bool {
    [
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    ]
    .iter()
    .filter_map(|name| crate::env::var(name))
    .any(|path| token_file::replaced(err, std::path::Path::new(&path)))
}

/// Names the identity inputs the environment provides (never their contents), so an
/// operator sees at once which source failed.
fn identity_hint() -> String {
    let var = crate::env::var;
    let mut inputs = Vec::new();
    if var("AWS_ACCESS_KEY_ID").is_some() {
        inputs.push("static keys in AWS_ACCESS_KEY_ID".to_owned());
    }
    if let Some(file) = var("AWS_WEB_IDENTITY_TOKEN_FILE") {
        let role = var("AWS_ROLE_ARN").unwrap_or_else(|| "<AWS_ROLE_ARN unset>".to_owned());
        inputs.push(format!("web identity token file {file} for role {role}"));
    }
    if let Some(uri) = var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        inputs.push(format!("container credentials at {uri}"));
    }
    if var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some() {
        inputs.push("the ECS task role".to_owned());
    }
    if let Some(profile) = var("AWS_PROFILE") {
        inputs.push(format!("profile {profile}"));
    }
    match inputs.is_empty() {
        true => {
            " (no credentials in the environment; tried profiles and instance metadata)".to_owned()
        }
        false => format!(" (from {})", inputs.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_source_is_read_from_the_redacting_debug() {
        let credentials = Credentials::new("AKID", "hunter2", None, None, "WebIdentityToken");
        assert_eq!(credential_source(&credentials), "WebIdentityToken");
    }
}
