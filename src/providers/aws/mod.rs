//! AWS Secrets Manager.
//!
//! ```text
//! --secret db=aws://prod/db#password
//! --secret aws://arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/tls-AbCdEf
//! --secret aws://prod/db?version-stage=AWSPREVIOUS      (or ?version-id=UUID)
//! ```
//!
//! Identity comes from aws-config's default chain with nothing added: static keys in the
//! environment, IRSA (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, the token file re-read
//! on every exchange), EKS Pod Identity (`AWS_CONTAINER_CREDENTIALS_FULL_URI` +
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`), the ECS task role, shared profiles, and
//! instance metadata. `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_SECRETS_MANAGER` are honoured
//! by the SDK (that is how LocalStack is reached).
//!
//! The region is the one in an ARN, else the environment's or the profile's. One client is
//! built per region and reused for every secret in it. Every request carries a
//! `secret-sidecar/<version>` User-Agent suffix so CloudTrail can attribute the calls.

//!
//! The pieces: `target.rs` reads the reference, `errors.rs` classifies what the SDK
//! returns, `http.rs` sets up the network side, `assume_role.rs` exchanges an in-process
//! web-identity token with STS; this file connects and fetches.

mod assume_role;
mod errors;
mod http;
mod target;

use std::cell::RefCell;
use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Region;
use clap::ValueEnum;
use futures_util::StreamExt as _;
use tracing::{debug, info};

use super::{Fetched, Provider};
use crate::exit::Failure;
use crate::identity::options::AwsTokenArgs;
use crate::identity::token_file;
use crate::identity::web_token::TokenSource;
use crate::net::{HttpConfig, certificate_error, certificate_refused, error_chain};
use crate::secret::SecretValue;
use errors::{classify, credentials_class};
use http::{UserAgentSuffix, plain_http_only};
pub use target::{AwsTarget, Version};

/// The Secrets Manager options (identity has its own: [`AwsTokenArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// AWS only: read up to 20 secrets per call with BatchGetSecretValue. auto batches
    /// when a region has two or more current-version secrets and falls back to one
    /// GetSecretValue per secret if the batch call is denied or throttled; always batches
    /// even one secret and fails if the batch call fails; never uses GetSecretValue only.
    /// Batching needs secretsmanager:BatchGetSecretValue as well as GetSecretValue.
    ///
    /// Example: --aws-batch never
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        env = "SECRET_SIDECAR_AWS_BATCH",
        default_value = "auto"
    )]
    pub aws_batch: AwsBatch,

    /// AWS only: accept http:// in AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_* for a host other
    /// than this machine, such as LocalStack in another container. Without it such an
    /// endpoint is a usage error: the signed requests, the STS credentials and the secret
    /// values would cross that network unencrypted. https endpoints and http to a loopback
    /// address need nothing.
    ///
    /// Example: --aws-allow-plain-http
    #[arg(long, env = "SECRET_SIDECAR_AWS_ALLOW_PLAIN_HTTP")]
    pub aws_allow_plain_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AwsBatch {
    Auto,
    Always,
    Never,
}

/// What the AWS provider is given: its options, the identity's token source when
/// `--aws-token-source` replaces aws-config's default chain, and how many calls the run
/// lets it make at once (`--concurrency`, which bounds batch reads too).
#[derive(Debug, Clone)]
pub struct AwsConfig {
    pub args: AwsArgs,
    pub token: Option<TokenSource>,
    pub concurrency: usize,
}

/// The endpoint overrides aws-config reads, which this run sends requests to.
const ENDPOINT_VARIABLES: [&str; 3] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_STS",
];

impl AwsConfig {
    /// Checks the options together; a missing or misplaced one is a usage error.
    pub fn new(args: &AwsArgs, token: &AwsTokenArgs, concurrency: usize) -> Result<AwsConfig> {
        if !args.aws_allow_plain_http {
            for name in ENDPOINT_VARIABLES {
                if let Some(url) = crate::env::var(name) {
                    let carries = "signed requests, STS credentials and secret values";
                    crate::net::https_or_loopback(name, &url, carries)
                        .context("for LocalStack on another host, pass --aws-allow-plain-http")?;
                }
            }
        }
        Ok(AwsConfig {
            args: args.clone(),
            token: token.source()?,
            concurrency,
        })
    }
}

/// Connected Secrets Manager clients, one per region.
pub struct Aws {
    clients: HashMap<String, Client>,
    /// The region of targets that are plain names.
    default_region: Option<String>,
    batch: AwsBatch,
    /// Secrets read ahead by BatchGetSecretValue, by `SecretId`, each taken once.
    prefetched: RefCell<HashMap<String, Fetched>>,
    /// Batch calls in flight at once.
    concurrency: usize,
}

impl Provider for Aws {
    type Target = AwsTarget;
    type Config = AwsConfig;

    async fn connect(targets: &[&AwsTarget], config: &AwsConfig, http: &HttpConfig) -> Result<Aws> {
        // One attempt per call: the core's retry policy repeats transient failures.
        let plain_http = plain_http_only(&|name| std::env::var(name).ok());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http::client(http.ca.as_ref(), plain_http)?)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(http.attempt_timeout)
                    .operation_attempt_timeout(http.attempt_timeout)
                    .build(),
            );
        // When every secret is an ARN and the environment names no region, take the
        // region from the ARN rather than probing profiles and instance metadata for one.
        let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .any(|name| crate::env::var(name).is_some());
        if !env_region
            && targets.iter().all(|t| t.region.is_some())
            && let Some(region) = targets.iter().find_map(|t| t.region.clone())
        {
            loader = loader.region(Region::new(region));
        }
        if config.token.is_some() {
            // The token source replaces the default chain: no profile, container or
            // instance-metadata probing for credentials that will not be used.
            loader = loader.no_credentials();
        }
        let shared = loader.load().await;
        let default_region = shared.region().map(|r| r.to_string());

        // Resolve the identity once for every regional client: one STS exchange per run,
        // and an identity failure is reported as such before any secret is requested.
        let credentials = match &config.token {
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
        info!(
            source = %credential_source(&credentials),
            expires_in_s = credentials
                .expiry()
                .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
                .map(|left| left.as_secs()),
            "AWS identity loaded"
        );

        let mut clients = HashMap::new();
        for target in targets {
            let region = match (&target.region, &default_region) {
                (Some(region), _) | (None, Some(region)) => region.clone(),
                (None, None) => {
                    return Err(anyhow!(
                        "no AWS region for '{}': set AWS_REGION or use the secret's ARN",
                        target.secret_id
                    ))
                    .context(Failure::Usage);
                }
            };
            clients.entry(region.clone()).or_insert_with(|| {
                let config = aws_sdk_secretsmanager::config::Builder::from(&shared)
                    .region(Region::new(region))
                    .credentials_provider(credentials.clone())
                    .interceptor(UserAgentSuffix)
                    .build();
                Client::from_conf(config)
            });
        }
        Ok(Aws {
            clients,
            default_region,
            batch: config.args.aws_batch,
            prefetched: RefCell::default(),
            concurrency: config.concurrency,
        })
    }

    /// Reads the current versions of a region's secrets 20 per BatchGetSecretValue call
    /// (the API's limit), the calls in flight together. With `auto`, a failed call (no
    /// permission, throttled, unreachable) only means those secrets are fetched one by
    /// one; with `always` it fails the run. A secret the batch reports an error for is
    /// always left to GetSecretValue, whose answer then decides.
    async fn prefetch(&self, targets: &[&AwsTarget]) -> Result<()> {
        if self.batch == AwsBatch::Never {
            return Ok(());
        }
        let mut by_region: HashMap<&str, Vec<&str>> = HashMap::new();
        for target in targets.iter().filter(|t| t.version == Version::Current) {
            if let Some(region) = target.region.as_ref().or(self.default_region.as_ref()) {
                by_region.entry(region).or_default().push(&target.secret_id);
            }
        }
        let mut calls = Vec::new();
        for (region, ids) in &by_region {
            if self.batch == AwsBatch::Auto && ids.len() < 2 {
                continue;
            }
            for chunk in ids.chunks(20) {
                calls.push(self.batch_call(&self.clients[*region], chunk));
            }
        }
        let results: Vec<_> = futures_util::stream::iter(calls)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for result in results {
            match result {
                Ok(fetched) => self.prefetched.borrow_mut().extend(fetched),
                Err(err) if self.batch == AwsBatch::Always => {
                    return Err(err.context("BatchGetSecretValue (--aws-batch always)"));
                }
                Err(err) => {
                    debug!("BatchGetSecretValue failed, fetching one by one instead: {err:#}")
                }
            }
        }
        Ok(())
    }

    async fn fetch(&self, target: &AwsTarget) -> Result<Fetched> {
        if target.version == Version::Current
            && let Some(fetched) = self.prefetched.borrow_mut().remove(&target.secret_id)
        {
            return Ok(fetched);
        }
        let region = self.client(target)?;
        let request = region.get_secret_value().secret_id(&target.secret_id);
        let request = match &target.version {
            Version::Current => request,
            Version::Stage(stage) => request.version_stage(stage),
            Version::Id(id) => request.version_id(id),
        };
        let output = request.send().await.map_err(classify)?;
        Ok(Fetched {
            value: value_of(output.secret_string, output.secret_binary)?,
            version: output.version_id,
        })
    }
}

impl Aws {
    fn client(&self, target: &AwsTarget) -> Result<&Client> {
        target
            .region
            .as_ref()
            .or(self.default_region.as_ref())
            .and_then(|region| self.clients.get(region))
            .context("no client for the secret's region")
            .context(Failure::Internal)
    }

    /// One BatchGetSecretValue call; returns the values it got, keyed by the `SecretId`
    /// that asked for them (a name or a full ARN).
    async fn batch_call(&self, client: &Client, ids: &[&str]) -> Result<Vec<(String, Fetched)>> {
        let started = std::time::Instant::now();
        let output = client
            .batch_get_secret_value()
            .set_secret_id_list(Some(ids.iter().map(|id| id.to_string()).collect()))
            .send()
            .await
            .map_err(classify)?;
        let mut fetched = Vec::new();
        for entry in output.secret_values.unwrap_or_default() {
            let Some(id) = ids.iter().find(|id| {
                Some(**id) == entry.name.as_deref() || Some(**id) == entry.arn.as_deref()
            }) else {
                continue;
            };
            let value = value_of(entry.secret_string, entry.secret_binary)?;
            fetched.push((
                id.to_string(),
                Fetched {
                    value,
                    version: entry.version_id,
                },
            ));
        }
        debug!(
            asked = ids.len(),
            got = fetched.len(),
            ms = started.elapsed().as_millis() as u64,
            "BatchGetSecretValue"
        );
        Ok(fetched)
    }
}

/// A secret's bytes, from whichever of the two fields the service filled in.
fn value_of(
    text: Option<String>,
    binary: Option<aws_sdk_secretsmanager::primitives::Blob>,
) -> Result<SecretValue> {
    match (text, binary) {
        (Some(text), _) => Ok(SecretValue::from_string(text)),
        (None, Some(blob)) => Ok(SecretValue::new(blob.into_inner())),
        (None, None) => Err(anyhow!(
            "the response has neither SecretString nor SecretBinary"
        ))
        .context(Failure::BadData),
    }
}

/// The name of the credential-chain link that produced `credentials` (`Environment`,
/// `Profile`, `WebIdentityToken`, `EcsContainer`, `Ec2InstanceMetadata`, ...).
///
/// `Credentials` keeps the name private and shows it only in its `Debug` output, which
/// redacts the secret key; the string is read here and dropped, never logged whole.
fn credential_source(credentials: &aws_credential_types::Credentials) -> String {
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
        let credentials = aws_credential_types::Credentials::new(
            "AKID",
            "hunter2",
            None,
            None,
            "WebIdentityToken",
        );
        assert_eq!(credential_source(&credentials), "WebIdentityToken");
    }
}
