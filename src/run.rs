//! One run: plan, check the output directory, fetch everything, shape, publish.
//!
//! Nothing touches the output directory until every secret has been fetched and shaped,
//! so any failure before the publish step leaves the previous set exactly as it was.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures_util::stream::{self, StreamExt};
use tracing::{debug, error, info};

use crate::cli::Cli;
use crate::exit::Class;
use crate::extract;
use crate::plan::Plan;
use crate::providers::{Fetched, Providers, Settings, Target};
use crate::publish::{OutputDir, OutputFile};
use crate::secret::SecretValue;

/// The longest a single HTTP attempt may take; the run's deadline bounds the total.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per request for transient failures (the SDKs' standard retry policy).
const MAX_ATTEMPTS: u32 = 3;

pub async fn run(cli: &Cli) -> Result<()> {
    let plan = Plan::build(cli)?;
    let output = OutputDir::open(&plan.output_dir, plan.allow_non_tmpfs)?;
    let settings = Settings {
        attempt_timeout: ATTEMPT_TIMEOUT.min(plan.timeout),
        max_attempts: MAX_ATTEMPTS,
    };

    let started = Instant::now();
    let fetched = tokio::time::timeout(plan.timeout, fetch_all(&plan, &settings))
        .await
        .map_err(|_| {
            anyhow!(
                "the {:?} deadline (--timeout) passed before every secret was fetched",
                plan.timeout
            )
        })
        .context(Class::Transient)??;

    let values = plan
        .items
        .iter()
        .map(|item| {
            let (fetched, _) = &fetched[&item.reference.target];
            match &item.reference.key {
                Some(key) => extract::select(&fetched.value, key),
                None => Ok(SecretValue::new(fetched.value.expose().to_vec())),
            }
            .with_context(|| format!("{} for {}", item.reference, item.file))
        })
        .collect::<Result<Vec<_>>>()?;

    let files: Vec<OutputFile<'_>> = plan
        .items
        .iter()
        .zip(&values)
        .map(|(item, value)| OutputFile {
            path: &item.file,
            value,
            mode: item.mode,
            owner: item.owner,
        })
        .collect();
    output.publish(&files)?;

    for (item, value) in plan.items.iter().zip(&values) {
        let (fetched, elapsed) = &fetched[&item.reference.target];
        info!(
            reference = %item.reference,
            version = %fetched.version.as_deref().unwrap_or("-"),
            file = %output.path().join(&item.file).display(),
            bytes = value.len(),
            ms = elapsed.as_millis() as u64,
            "published"
        );
    }
    info!(
        dir = %output.path().display(),
        files = files.len(),
        ms = started.elapsed().as_millis() as u64,
        "all secrets published"
    );
    Ok(())
}

/// Fetches each distinct secret once (two keys of one JSON secret cost one call), a
/// bounded number at a time. Every failure is logged; the first one is returned.
async fn fetch_all<'p>(
    plan: &'p Plan,
    settings: &Settings,
) -> Result<HashMap<&'p Target, (Fetched, Duration)>> {
    let mut targets: Vec<&Target> = Vec::new();
    for item in &plan.items {
        if !targets.contains(&&item.reference.target) {
            targets.push(&item.reference.target);
        }
    }
    let providers = Providers::connect(targets.iter().copied(), settings).await?;

    let results: Vec<(&Target, Result<(Fetched, Duration)>)> = stream::iter(&targets)
        .map(|target| {
            let providers = &providers;
            async move {
                let started = Instant::now();
                let result = providers.fetch(target).await;
                if let Ok(fetched) = &result {
                    debug!(
                        target = ?target,
                        version = %fetched.version.as_deref().unwrap_or("-"),
                        ms = started.elapsed().as_millis() as u64,
                        "fetched"
                    );
                }
                (*target, result.map(|fetched| (fetched, started.elapsed())))
            }
        })
        .buffered(plan.concurrency)
        .collect()
        .await;

    let mut fetched = HashMap::new();
    let mut first_error = None;
    for (target, result) in results {
        match result {
            Ok(value) => {
                fetched.insert(target, value);
            }
            Err(err) => {
                let reference = plan
                    .items
                    .iter()
                    .find(|item| &item.reference.target == target)
                    .map(|item| item.reference.text.as_str())
                    .unwrap_or_default();
                let err = err.context(format!("fetching {reference}"));
                if first_error.is_none() {
                    first_error = Some(err);
                } else {
                    error!(exit_code = Class::of(&err).code(), "{err:#}");
                }
            }
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(fetched),
    }
}
