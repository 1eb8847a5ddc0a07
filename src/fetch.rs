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

    let total = Cell::new(0usize);
    let mut results: Results<'_> = stream::iter(&targets)
        .map(|target| {
            let (providers, total) = (&providers, &total);
            async move {
                let started = Instant::now();
                let result = policy
                    .run(|| providers.fetch(target))
                    .await
                    .and_then(|fetched| {
                        total.set(total.get() + fetched.value.len());
                        if total.get() > MAX_TOTAL_BYTES {
                            return Err(anyhow!(
                                "the secrets fetched so far add up to more than {MAX_TOTAL_BYTES} \
                                 bytes, the most one run holds"
                            ))
                            .context(Failure::BadData);
                        }
                        Ok(fetched)
                    })
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
