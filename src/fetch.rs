//! Fetching everything a plan names: each distinct secret once (two keys of one JSON
//! secret cost one call), the providers connected once, batched reads first, then a
//! bounded number of reads at a time, each under the shared retry policy.
//!
//! What it returns is every outcome, so that the caller can publish what it has and skip
//! what may be skipped: every failure fails the fetch, except a secret that does not
//! exist and that only optional items use.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use futures_util::stream::{self, StreamExt};
use tracing::{debug, error};

use crate::exit::Failure;
use crate::plan::Plan;
use crate::providers::{Fetched, Providers, Target};
use crate::reference::SecretRef;

/// A fetched secret with when it arrived and how long it took.
pub struct Received {
    pub fetched: Fetched,
    pub at: SystemTime,
    pub took: Duration,
}

/// Each distinct target's outcome. An `Err` left in it is a skipped optional secret.
pub type Results<'p> = HashMap<&'p Target, Result<Received>>;

/// Fetches every secret of `plan`; see the module header for what fails and what is
/// skipped. One line is logged per failed secret, in plan order; the first one's error
/// is returned whole, so its chain (and its class tag) is reported once, as the provider
/// wrote it.
pub async fn everything(plan: &Plan) -> Result<Results<'_>> {
    let policy = &plan.policy;
    let mut targets: Vec<&Target> = Vec::new();
    for reference in plan.references() {
        if !targets.contains(&&reference.target) {
            targets.push(&reference.target);
        }
    }
    let providers = policy
        .run(|| Providers::connect(targets.iter().copied(), &plan.providers))
        .await?;
    providers.prefetch(targets.iter().copied()).await?;

    let mut results: Results<'_> = stream::iter(&targets)
        .map(|target| {
            let providers = &providers;
            async move {
                let started = Instant::now();
                let result = policy
                    .run(|| providers.fetch(target))
                    .await
                    .map(|fetched| Received {
                        fetched,
                        at: SystemTime::now(),
                        took: started.elapsed(),
                    });
                if let Ok(received) = &result {
                    debug!(
                        target = ?target,
                        version = %received.fetched.version.as_deref().unwrap_or("-"),
                        ms = received.took.as_millis() as u64,
                        "fetched"
                    );
                }
                (*target, result)
            }
        })
        .buffered(plan.concurrency)
        .collect()
        .await;

    let mut first_error = None;
    for reference in plan.references() {
        let failed = matches!(&results.get(&reference.target), Some(Err(err)) if !skippable(plan, reference, err));
        if !failed {
            continue;
        }
        let Some(Err(err)) = results.remove(&reference.target) else {
            continue;
        };
        let err = err.context(format!("fetching {reference}"));
        match first_error {
            None => first_error = Some(err),
            Some(_) => error!(exit_code = Failure::of(&err).code(), "{err:#}"),
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(results),
    }
}

/// Only "does not exist" is skippable, and only when nothing required uses the secret.
fn skippable(plan: &Plan, reference: &SecretRef, err: &anyhow::Error) -> bool {
    Failure::of(err) == Failure::NotFound
        && plan
            .items
            .iter()
            .filter(|item| item.reference.target == reference.target)
            .all(|item| item.optional)
        && !plan
            .aggregates
            .iter()
            .any(|a| a.values.iter().any(|(_, r)| r.target == reference.target))
}
