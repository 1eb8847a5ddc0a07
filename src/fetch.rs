//! Fetching everything a plan names: each distinct secret once (two keys of one JSON
//! secret cost one call), the providers connected once, batched reads first, then a
//! bounded number of reads at a time, each under the shared retry policy.
//!
//! What it returns is every outcome, so that the caller can publish what it has and skip
//! what may be skipped: every failure fails the fetch, except a secret that does not
//! exist and that only optional items use.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow};
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

/// The most all the secrets of one run may add up to. The init container's manifests give
/// it 64 MiB; this leaves room for the shaped copies, the reads in flight (each answer is
/// capped at 4 MiB, `--concurrency` at a time) and the process itself. Real sets are
/// kilobytes: store secrets are 64 KiB at most.
pub const MAX_TOTAL_BYTES: usize = 16 * 1024 * 1024;

/// Fetches every secret of `plan`; see the module header for what fails and what is
/// skipped.
pub async fn everything(plan: &Plan) -> Result<Results<'_>> {
    let targets = targets(plan);
    let providers = connect(plan, &targets).await?;
    settle(plan, read(plan, &providers, &targets, None).await?)
}

/// Each distinct target of `plan`, once, in plan order.
pub fn targets(plan: &Plan) -> Vec<&Target> {
    let mut targets: Vec<&Target> = Vec::new();
    for reference in plan.references() {
        if !targets.contains(&&reference.target) {
            targets.push(&reference.target);
        }
    }
    targets
}

/// Connects the providers `targets` need, under the retry policy.
pub async fn connect(plan: &Plan, targets: &[&Target]) -> Result<Providers> {
    plan.policy
        .run(|| Providers::connect(targets.iter().copied(), &plan.providers))
        .await
}

/// What one read gave for each target: the secret, `None` when the provider needed no
/// read to know it is unchanged, or the failure.
pub type Outcomes<'p> = HashMap<&'p Target, Result<Option<Received>>>;

/// Reads every target, batched reads first, `--concurrency` at a time, each under the retry
/// policy. With `last` (what the previous read of a refresh gave) each provider is asked
/// with the version read then, and may answer that nothing needs reading. Fails only when
/// a batch read that must not fall back fails; each target's own failure is its outcome.
pub async fn read<'p>(
    plan: &'p Plan,
    providers: &Providers,
    targets: &[&'p Target],
    last: Option<&Results<'p>>,
) -> Result<Outcomes<'p>> {
    let policy = &plan.policy;
    providers.prefetch(targets.iter().copied()).await?;

    let total = Cell::new(0usize);
    let outcomes = stream::iter(targets)
        .map(|target| {
            let (providers, total) = (providers, &total);
            let last_version = last.map(|last| {
                last.get(*target)
                    .and_then(|r| r.as_ref().ok())
                    .and_then(|r| r.fetched.version.as_deref())
            });
            async move {
                let started = Instant::now();
                let result = match last_version {
                    None => policy.run(|| providers.fetch(target)).await.map(Some),
                    Some(version) => policy.run(|| providers.fetch_again(target, version)).await,
                };
                let result = result.and_then(|fetched| match fetched {
                    None => Ok(None),
                    Some(fetched) => {
                        total.set(total.get() + fetched.value.len());
                        if total.get() > MAX_TOTAL_BYTES {
                            return Err(anyhow!(
                                "the secrets fetched so far add up to more than {MAX_TOTAL_BYTES} \
                                 bytes, the most one run holds"
                            ))
                            .context(Failure::BadData);
                        }
                        Ok(Some(Received {
                            fetched,
                            at: SystemTime::now(),
                            took: started.elapsed(),
                        }))
                    }
                });
                if let Ok(Some(received)) = &result {
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
    Ok(outcomes)
}

/// The first read's outcomes as a run's results: every failure fails the run, except a
/// secret that does not exist and that only optional items use. One line is logged per
/// failed secret, in plan order; the first one's error is returned whole, so its chain
/// (and its class tag) is reported once, as the provider wrote it.
pub fn settle<'p>(plan: &'p Plan, outcomes: Outcomes<'p>) -> Result<Results<'p>> {
    let mut results: Results<'p> = HashMap::with_capacity(outcomes.len());
    for (target, outcome) in outcomes {
        let result = outcome.and_then(|received| {
            received
                .ok_or_else(|| anyhow!("a first read came back without a value"))
                .context(Failure::Internal)
        });
        results.insert(target, result);
    }
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

/// The first reference of `plan` that names `target`, to say which secret an error is about.
pub fn reference_of<'p>(plan: &'p Plan, target: &Target) -> Option<&'p SecretRef> {
    plan.references().find(|r| &r.target == target)
}

/// Only "does not exist" is skippable, and only when nothing required uses the secret.
pub fn skippable(plan: &Plan, reference: &SecretRef, err: &anyhow::Error) -> bool {
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
