//! AWS Systems Manager Parameter Store.
//!
//! ```text
//! --secret db=ssm://db-password                      a name without hierarchy
//! --secret ssm:///app/prod/db#password               a hierarchical name: three slashes
//! --secret ssm://arn:aws:ssm:eu-west-1:123456789012:parameter/app/prod/db
//! --secret ssm:///app/prod/db?version=3              (or ?label=stable)
//! --secret config=ssm:///app/prod/                   every parameter under the path, as files
//! ```
//!
//! String, StringList (its comma-separated text) and SecureString (decrypted: the role
//! needs `kms:Decrypt` on the parameter's key) are published as stored. The identity, the
//! HTTP client and the error classification are Secrets Manager's
//! ([`crate::providers::aws_session`]); `AWS_ENDPOINT_URL_SSM` is honoured too.
//!
//! Reads are batched like Secrets Manager's: with `--ssm-batch auto` a region's two or
//! more parameters at their latest version are read 10 per `GetParameters` call (the
//! API's limit), at most `--concurrency` calls in flight; a parameter the batch did not
//! return (missing, or the call was denied or failed) is read alone with `GetParameter`,
//! whose answer then decides. A parameter at a version or label is always read alone:
//! the answer to a batch names each parameter, but only AWS (not LocalStack) says which
//! selector it answers, so two selectors of one name could not be told apart.
//!
//! A path (`ssm:///app/prod/`, ending in `/`) is read with `GetParametersByPath`,
//! recursively, 10 per page, and becomes one file per parameter under the reference's
//! folder (`/app/prod/db/password` → `FILE/db/password`). Its parameters travel to the
//! shaping step as one JSON object of relative names, which `shape::tree` turns into
//! files after checking each name by the file-name rules. A path with no parameters is
//! "not found" (exit 4, or skipped with `?optional`).
//!
//! The pieces: `target.rs` reads the reference, `errors.rs` holds Parameter Store's error
//! codes; this file connects and fetches.

mod errors;
mod target;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use anyhow::{Context, Result, anyhow};
use aws_config::SdkConfig;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::types::Parameter;
use futures_util::StreamExt as _;
use tracing::debug;
use zeroize::Zeroize;

use super::aws::AwsBatch;
use super::aws_session::{OnSession, UserAgentSuffix, warm};
use super::{Fetched, Provider};
use crate::exit::Failure;
use crate::net::HttpConfig;
use crate::secret::SecretValue;
use errors::classify;
pub use target::{SsmTarget, Version};

/// The Parameter Store options (identity and endpoints are shared with Secrets Manager).
#[derive(Debug, Clone, clap::Args)]
pub struct SsmArgs {
    /// Parameter Store only: read up to 10 parameters per call with GetParameters. auto
    /// batches when a region has two or more parameters and falls back to one
    /// GetParameter per parameter if the batch call is denied or fails; always batches
    /// even one and fails if the batch call fails; never uses GetParameter only. Batching
    /// needs ssm:GetParameters as well as ssm:GetParameter.
    ///
    /// Example: --ssm-batch never
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        env = "SECRET_SIDECAR_SSM_BATCH",
        default_value = "auto"
    )]
    pub ssm_batch: AwsBatch,
}

/// What the Parameter Store provider is given: its options and how many calls the run
/// lets it make at once (`--concurrency`, which bounds batch reads too).
#[derive(Debug, Clone)]
pub struct SsmConfig {
    pub args: SsmArgs,
    pub concurrency: usize,
}

/// GetParameters' limit on names per call.
const BATCH: usize = 10;

/// Opens the Parameter Store connections the reads of `targets` will need while the
/// identity is resolved; see `aws_session/warm.rs`. The session waits for them, briefly.
pub fn warm_up(
    shared: &SdkConfig,
    targets: &[&SsmTarget],
    config: &SsmConfig,
) -> Vec<tokio::task::JoinHandle<()>> {
    let needed = warm::connections(
        (targets.iter()).map(|t| (t.region.as_deref(), !t.path && t.version == Version::Latest)),
        shared.region().map(|region| region.as_ref()),
        |count| config.args.ssm_batch.batches(count),
        BATCH,
        config.concurrency,
    );
    let build = |config: &SdkConfig| {
        let config = aws_sdk_ssm::config::Builder::from(config)
            .interceptor(UserAgentSuffix)
            .interceptor(warm::BareHead)
            .build();
        Client::from_conf(config)
    };
    warm::spawn(
        shared,
        needed,
        "Parameter Store",
        build,
        |client| async move {
            let _ = client.get_parameter().name("-").send().await;
        },
    )
}

/// Connected Parameter Store clients, one per region.
pub struct Ssm {
    clients: HashMap<String, Client>,
    default_region: Option<String>,
    batch: AwsBatch,
    /// Latest versions read ahead by GetParameters, by name or ARN, each taken once.
    prefetched: RefCell<HashMap<String, Fetched>>,
    concurrency: usize,
    /// When the session's credentials expire: the clients hold them as they are, so a
    /// long-running mode reconnects before then (as for Secrets Manager).
    expires: Option<std::time::SystemTime>,
}

impl Provider for Ssm {
    type Target = SsmTarget;
    type Config = OnSession<SsmConfig>;

    async fn connect(
        targets: &[&SsmTarget],
        config: &OnSession<SsmConfig>,
        _http: &HttpConfig,
    ) -> Result<Ssm> {
        let session = &config.session;
        let clients = session.clients(
            targets
                .iter()
                .map(|t| (t.region.as_deref(), t.name.as_str())),
            |shared| {
                let config = aws_sdk_ssm::config::Builder::from(shared)
                    .interceptor(UserAgentSuffix)
                    .build();
                Client::from_conf(config)
            },
        )?;
        Ok(Ssm {
            clients,
            default_region: session.default_region(),
            batch: config.options.args.ssm_batch,
            prefetched: RefCell::default(),
            concurrency: config.options.concurrency,
            expires: session.expires(),
        })
    }

    /// Reads a region's parameters 10 per GetParameters call, the calls in flight
    /// together (at most `--concurrency`). With `auto`, a failed call only means its
    /// parameters are read one by one; with `always` it fails the run.
    async fn prefetch(&self, targets: &[&SsmTarget]) -> Result<()> {
        if self.batch == AwsBatch::Never {
            return Ok(());
        }
        let mut by_region: HashMap<&str, Vec<&SsmTarget>> = HashMap::new();
        for target in targets
            .iter()
            .filter(|t| !t.path && t.version == Version::Latest)
        {
            if let Some(region) = target.region.as_ref().or(self.default_region.as_ref()) {
                by_region.entry(region).or_default().push(target);
            }
        }
        let mut calls = Vec::new();
        for (region, group) in &by_region {
            if !self.batch.batches(group.len()) {
                continue;
            }
            for chunk in group.chunks(BATCH) {
                calls.push(batch_call(&self.clients[*region], chunk));
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
                    return Err(err.context("GetParameters (--ssm-batch always)"));
                }
                Err(err) => debug!("GetParameters failed, reading one by one instead: {err:#}"),
            }
        }
        Ok(())
    }

    async fn fetch(&self, target: &SsmTarget) -> Result<Fetched> {
        if target.path {
            return self.by_path(target).await;
        }
        if target.version == Version::Latest
            && let Some(fetched) = self.prefetched.borrow_mut().remove(&target.name)
        {
            return Ok(fetched);
        }
        let output = self
            .client(target)?
            .get_parameter()
            .name(target.selected())
            .with_decryption(true)
            .send()
            .await
            .map_err(classify)?;
        let parameter = output
            .parameter
            .ok_or_else(|| anyhow!("GetParameter answered without a parameter"))
            .context(Failure::Internal)?;
        fetched(parameter)
    }

    /// A pinned version never changes once read; the latest, a label or a path is read
    /// again (latest versions in batches, like a first read).
    async fn refetch(&self, target: &SsmTarget, last: Option<&str>) -> Result<Option<Fetched>> {
        if matches!(target.version, Version::Number(_)) && last.is_some() {
            return Ok(None);
        }
        self.fetch(target).await.map(Some)
    }

    fn renew_by(&self) -> Option<std::time::SystemTime> {
        self.expires
    }
}

impl Ssm {
    fn client(&self, target: &SsmTarget) -> Result<&Client> {
        target
            .region
            .as_ref()
            .or(self.default_region.as_ref())
            .and_then(|region| self.clients.get(region))
            .context("no client for the parameter's region")
            .context(Failure::Internal)
    }

    /// Every parameter under a path, recursively, as one JSON object of names relative
    /// to the path.
    async fn by_path(&self, target: &SsmTarget) -> Result<Fetched> {
        let started = std::time::Instant::now();
        // The API takes the path without its trailing slash (the root is `/`).
        let path = match target.name.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let mut pages = self
            .client(target)?
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .with_decryption(true)
            .max_results(BATCH as i32)
            .into_paginator()
            .send();
        let mut found = Tree::default();
        let mut calls = 0;
        while let Some(page) = pages.next().await {
            calls += 1;
            for parameter in page.map_err(classify)?.parameters.unwrap_or_default() {
                let name = parameter.name.clone().unwrap_or_default();
                let Some(relative) = name.strip_prefix(&prefix) else {
                    return Err(anyhow!(
                        "GetParametersByPath {path} answered with '{}', which is not under it",
                        name.escape_debug()
                    ))
                    .context(Failure::Internal);
                };
                found.insert(relative.to_owned(), parameter.value);
            }
        }
        debug!(
            path,
            parameters = found.0.len(),
            calls,
            ms = started.elapsed().as_millis() as u64,
            "GetParametersByPath"
        );
        if found.0.is_empty() {
            return Err(anyhow!("Parameter Store has no parameters under {path}"))
                .context(Failure::NotFound);
        }
        Ok(Fetched {
            value: found.to_json()?,
            version: None,
        })
    }
}

/// One GetParameters call for latest versions; returns the values it got, keyed by the
/// name (or ARN) that asked. Names it reports as invalid (missing) are left out, for
/// GetParameter to answer.
async fn batch_call(client: &Client, targets: &[&SsmTarget]) -> Result<Vec<(String, Fetched)>> {
    let started = std::time::Instant::now();
    let output = client
        .get_parameters()
        .set_names(Some(targets.iter().map(|t| t.name.clone()).collect()))
        .with_decryption(true)
        .send()
        .await
        .map_err(classify)?;
    let mut fetched = Vec::new();
    for parameter in output.parameters.unwrap_or_default() {
        let Some(target) = targets.iter().find(|t| answers(t, &parameter)) else {
            continue;
        };
        fetched.push((target.name.clone(), self::fetched(parameter)?));
    }
    debug!(
        asked = targets.len(),
        got = fetched.len(),
        ms = started.elapsed().as_millis() as u64,
        "GetParameters"
    );
    Ok(fetched)
}

/// Whether `parameter` in a GetParameters answer is the one `target` asked for: the same
/// name, or ARN.
fn answers(target: &SsmTarget, parameter: &Parameter) -> bool {
    [&parameter.name, &parameter.arn]
        .iter()
        .any(|id| id.as_deref() == Some(target.name.as_str()))
}

fn fetched(parameter: Parameter) -> Result<Fetched> {
    let value = parameter
        .value
        .ok_or_else(|| anyhow!("the parameter has no Value"))
        .context(Failure::BadData)?;
    Ok(Fetched {
        value: SecretValue::from_string(value),
        version: Some(parameter.version.to_string()),
    })
}

/// A path's parameters by relative name; the values are zeroed when it is dropped.
#[derive(Default)]
struct Tree(BTreeMap<String, String>);

impl Tree {
    fn insert(&mut self, name: String, value: Option<String>) {
        if let Some(mut old) = self.0.insert(name, value.unwrap_or_default()) {
            old.zeroize();
        }
    }

    /// `{"db/password": "...", ...}`, written into a buffer of exactly its size so that
    /// no reallocation leaves a copy behind.
    fn to_json(&self) -> Result<SecretValue> {
        let mut counter = Counter(0);
        serde_json::to_writer(&mut counter, &self.0).context("measuring the parameters")?;
        let mut bytes = Vec::with_capacity(counter.0);
        serde_json::to_writer(&mut bytes, &self.0).context("writing the parameters")?;
        Ok(SecretValue::new(bytes))
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.0.values_mut().for_each(Zeroize::zeroize);
    }
}

/// Counts what is written to it.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0 += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
