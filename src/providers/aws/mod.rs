//! AWS Secrets Manager.
//!
//! ```text
//! --secret db=aws://prod/db#password
//! --secret aws://arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/tls-AbCdEf
//! --secret aws://prod/db?version-stage=AWSPREVIOUS      (or ?version-id=UUID)
//! ```
//!
//! Identity, the HTTP client and the error classification are shared with Parameter
//! Store, in [`crate::providers::aws_session`]: the run's identity is resolved once for
//! both. `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_SECRETS_MANAGER` are honoured by the SDK
//! (that is how LocalStack is reached).
//!
//! The region is the one in an ARN, else the environment's or the profile's. One client is
//! built per region and reused for every secret in it. Every request carries a
//! `secret-sidecar/<version>` User-Agent suffix so CloudTrail can attribute the calls.
//!
//! The pieces: `target.rs` reads the reference, `errors.rs` holds Secrets Manager's error
//! codes; this file connects, opens connections ahead of the reads ([`warm_up`]) and
//! fetches.

mod errors;
mod target;

use std::cell::RefCell;
use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use clap::ValueEnum;
use futures_util::StreamExt as _;
use tracing::debug;

use super::aws_session::{OnSession, UserAgentSuffix, check_endpoints, warm};
use super::{Fetched, Provider};
use crate::exit::Failure;
use crate::identity::options::AwsTokenArgs;
use crate::identity::web_token::TokenSource;
use crate::net::HttpConfig;
use crate::secret::SecretValue;
use errors::classify;
pub use target::{AwsTarget, Version};

/// The Secrets Manager options (identity has its own: [`AwsTokenArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// AWS Secrets Manager only: read up to 20 secrets per call with BatchGetSecretValue. auto batches
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

impl AwsBatch {
    /// Whether `count` batchable targets of one region are read by batch calls.
    pub fn batches(self, count: usize) -> bool {
        match self {
            AwsBatch::Auto => count >= 2,
            AwsBatch::Always => count >= 1,
            AwsBatch::Never => false,
        }
    }
}

/// Secrets per BatchGetSecretValue call: the API's limit.
const BATCH: usize = 20;

/// Opens the Secrets Manager connections the reads of `targets` will need while the
/// identity is resolved; see `aws_session/warm.rs`. The session waits for them, briefly.
pub fn warm_up(
    shared: &SdkConfig,
    targets: &[&AwsTarget],
    config: &AwsConfig,
) -> Vec<tokio::task::JoinHandle<()>> {
    let needed = warm::connections(
        (targets.iter()).map(|t| (t.region.as_deref(), t.version == Version::Current)),
        shared.region().map(|region| region.as_ref()),
        |count| config.args.aws_batch.batches(count),
        BATCH,
        config.concurrency,
    );
    let build = |config: &SdkConfig| {
        let config = aws_sdk_secretsmanager::config::Builder::from(config)
            .interceptor(UserAgentSuffix)
            .interceptor(warm::BareHead)
            .build();
        Client::from_conf(config)
    };
    warm::spawn(
        shared,
        needed,
        "Secrets Manager",
        build,
        |client| async move {
            let _ = client.get_secret_value().secret_id("-").send().await;
        },
    )
}

/// What the AWS stores are given: the Secrets Manager options, the identity's token source
/// when `--aws-token-source` replaces aws-config's default chain (for Parameter Store too),
/// and how many calls the run lets it make at once (`--concurrency`, which bounds batch
/// reads too).
#[derive(Debug, Clone)]
pub struct AwsConfig {
    pub args: AwsArgs,
    pub token: Option<TokenSource>,
    pub concurrency: usize,
}

impl AwsConfig {
    /// Checks the options together; a missing or misplaced one is a usage error.
    pub fn new(args: &AwsArgs, token: &AwsTokenArgs, concurrency: usize) -> Result<AwsConfig> {
        check_endpoints(args.aws_allow_plain_http)?;
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
    /// When the credentials resolved at connect time expire (static keys never do). The
    /// clients hold those credentials as they are, so a long-running mode reconnects
    /// before then.
    expires: Option<std::time::SystemTime>,
}

impl Provider for Aws {
    type Target = AwsTarget;
    type Config = OnSession<AwsConfig>;

    async fn connect(
        targets: &[&AwsTarget],
        config: &OnSession<AwsConfig>,
        _http: &HttpConfig,
    ) -> Result<Aws> {
        let session = &config.session;
        let clients = session.clients(
            targets
                .iter()
                .map(|t| (t.region.as_deref(), t.secret_id.as_str())),
            |shared| {
                let config = aws_sdk_secretsmanager::config::Builder::from(shared)
                    .interceptor(UserAgentSuffix)
                    .build();
                Client::from_conf(config)
            },
        )?;
        Ok(Aws {
            clients,
            default_region: session.default_region(),
            batch: config.options.args.aws_batch,
            prefetched: RefCell::default(),
            concurrency: config.options.concurrency,
            expires: session.expires(),
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
            if !self.batch.batches(ids.len()) {
                continue;
            }
            for chunk in ids.chunks(BATCH) {
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
        crate::calls::count("aws", "GetSecretValue");
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

    /// A version id names one value for good: read once, never again. Stages move, and are
    /// read again (current versions in batches, like a first read).
    async fn refetch(&self, target: &AwsTarget, last: Option<&str>) -> Result<Option<Fetched>> {
        if matches!(target.version, Version::Id(_)) && last.is_some() {
            return Ok(None);
        }
        self.fetch(target).await.map(Some)
    }

    fn renew_by(&self) -> Option<std::time::SystemTime> {
        self.expires
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
        crate::calls::count("aws", "BatchGetSecretValue");
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
