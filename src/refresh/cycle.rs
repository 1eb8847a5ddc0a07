//! One refresh cycle: read every secret again (or learn without a read that it is
//! unchanged), decide what each outcome means for the published set, and republish only
//! when a file an application reads would change.
//!
//! What each outcome means:
//! - a value: compared with the last one by version; if any version moved, the set is
//!   rendered again and compared file by file (a new version of a JSON secret whose
//!   published key did not change republishes nothing);
//! - unchanged (a pinned version): the last value is used again;
//! - not found, for a secret only optional files use: left out, as at the first publish;
//! - not found or denied otherwise: with `--on-revoked keep` the last value is kept (with a
//!   warning, and the set counts as stale); with `remove` its files are left out;
//! - any other failure fails the cycle: nothing is published, the last set stays.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use tracing::{debug, error, info, warn};

use crate::cli::OnRevoked;
use crate::exit::Failure;
use crate::fetch::{self, Outcomes, Received, Results};
use crate::plan::Plan;
use crate::providers::{Providers, Target};
use crate::publish::Publisher;
use crate::render::{self, Rendered};

/// How long before its credentials expire a connection is renewed.
const RENEW_AHEAD: Duration = Duration::from_secs(5 * 60);

/// What refresh mode carries from one cycle to the next.
pub struct State<'p> {
    pub providers: Providers,
    /// What the last successful cycle read (or kept), by target.
    pub fetched: Results<'p>,
    /// The set that is published now.
    pub rendered: Rendered<'p>,
    /// Reconnect before the next read (after an identity failure).
    pub reconnect: bool,
}

/// What a successful cycle did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// A new set was published.
    pub changed: bool,
    /// Secrets whose last value was kept although the store no longer gives them.
    pub kept: usize,
}

enum Decision {
    New(Received),
    Unchanged,
    Kept,
    Left(anyhow::Error),
}

/// Runs one cycle. A failure leaves `state` and the published set as they were.
pub async fn run<'p>(
    plan: &'p Plan,
    state: &mut State<'p>,
    publisher: &Publisher,
    on_revoked: OnRevoked,
) -> Result<Outcome> {
    let targets = fetch::targets(plan);
    renew(plan, state, &targets).await?;
    let outcomes = fetch::read(plan, &state.providers, &targets, Some(&state.fetched)).await?;
    let decided = decide(plan, &state.fetched, outcomes, on_revoked)?;
    let kept = decided
        .iter()
        .filter(|(_, d)| matches!(d, Decision::Kept))
        .count();
    if !decided
        .iter()
        .any(|(target, d)| changes(d, state.fetched.get(target)))
    {
        debug!(kept, "no version changed");
        return Ok(Outcome {
            changed: false,
            kept,
        });
    }

    // From here on nothing waits: a stop signal or the deadline cannot cut in, so the
    // state is either updated whole or given back whole.
    let changed: Vec<(&'p Target, Option<String>)> = decided
        .iter()
        .filter(|(target, d)| changes(d, state.fetched.get(target)))
        .map(|(target, d)| match d {
            Decision::New(received) => (*target, received.fetched.version.clone()),
            _ => (*target, None),
        })
        .collect();
    let (next, taken) = assemble(decided, &mut state.fetched);
    let rendered = match render::set(plan, &next) {
        Ok(rendered) => rendered,
        Err(err) => {
            give_back(next, &taken, &mut state.fetched);
            return Err(err);
        }
    };
    if render::same_files(&rendered, &state.rendered) {
        debug!("new versions, the same files: nothing to publish");
        state.fetched = next;
        return Ok(Outcome {
            changed: false,
            kept,
        });
    }
    if let Err(err) = publisher.publish(&rendered.to_publish()) {
        give_back(next, &taken, &mut state.fetched);
        return Err(err);
    }
    for (target, version) in changed {
        if let Some(reference) = fetch::reference_of(plan, target) {
            info!(
                reference = %reference,
                version = %version.as_deref().unwrap_or("-"),
                "secret changed"
            );
        }
    }
    info!(
        dir = %publisher.path().display(),
        files = rendered.files.len(),
        "set republished"
    );
    state.fetched = next;
    state.rendered = rendered;
    Ok(Outcome {
        changed: true,
        kept,
    })
}

/// Reconnects when asked to, or when the credentials of the connection are about to expire.
async fn renew<'p>(plan: &'p Plan, state: &mut State<'p>, targets: &[&'p Target]) -> Result<()> {
    let expiring = state
        .providers
        .renew_by()
        .is_some_and(|at| at <= SystemTime::now() + RENEW_AHEAD);
    if state.reconnect || expiring {
        state.providers = fetch::connect(plan, targets).await?;
        state.reconnect = false;
        info!(expiring, "reconnected to the secret stores");
    }
    Ok(())
}

/// What each outcome means for the set; fails with the first failure that fails a cycle
/// (each other one is logged).
fn decide<'p>(
    plan: &'p Plan,
    last: &Results<'p>,
    outcomes: Outcomes<'p>,
    on_revoked: OnRevoked,
) -> Result<Vec<(&'p Target, Decision)>> {
    let mut decided = Vec::with_capacity(outcomes.len());
    let mut failures = Vec::new();
    for (target, outcome) in outcomes {
        let decision = match outcome {
            Ok(Some(received)) => Decision::New(received),
            Ok(None) => Decision::Unchanged,
            Err(err) => {
                let Some(reference) = fetch::reference_of(plan, target) else {
                    failures.push(err.context(Failure::Internal));
                    continue;
                };
                let class = Failure::of(&err);
                let err = err.context(format!("fetching {reference}"));
                if fetch::skippable(plan, reference, &err) {
                    Decision::Left(err)
                } else if matches!(class, Failure::NotFound | Failure::Denied) {
                    match (on_revoked, last.get(target)) {
                        (OnRevoked::Keep, Some(Ok(_))) => {
                            warn!(
                                reference = %reference,
                                "the store no longer gives this secret; its files keep the last \
                                 value read (--on-revoked keep): {err:#}"
                            );
                            Decision::Kept
                        }
                        _ => Decision::Left(err),
                    }
                } else {
                    failures.push(err);
                    continue;
                }
            }
        };
        decided.push((target, decision));
    }
    let mut failures = failures.into_iter();
    match failures.next() {
        Some(first) => {
            for other in failures {
                error!(class = Failure::of(&other).label(), "{other:#}");
            }
            Err(first)
        }
        None => Ok(decided),
    }
}

/// Whether `decision` makes the set differ from what `last` gave.
fn changes(decision: &Decision, last: Option<&anyhow::Result<Received>>) -> bool {
    let last = last.and_then(|l| l.as_ref().ok());
    match decision {
        Decision::New(received) => match last {
            Some(last) => {
                let (new, old) = (&received.fetched.version, &last.fetched.version);
                new.is_none() || old.is_none() || new != old
            }
            None => true,
        },
        Decision::Unchanged | Decision::Kept => false,
        Decision::Left(_) => last.is_some(),
    }
}

/// The next set's inputs: new values, and last values moved out of `last` (returned by
/// target, so that they can be given back).
fn assemble<'p>(
    decided: Vec<(&'p Target, Decision)>,
    last: &mut Results<'p>,
) -> (Results<'p>, Vec<&'p Target>) {
    let mut next: Results<'p> = HashMap::with_capacity(decided.len());
    let mut taken = Vec::new();
    for (target, decision) in decided {
        match decision {
            Decision::New(received) => {
                next.insert(target, Ok(received));
            }
            Decision::Unchanged | Decision::Kept => {
                if let Some(value) = last.remove(target) {
                    next.insert(target, value);
                    taken.push(target);
                }
            }
            Decision::Left(err) => {
                next.insert(target, Err(err));
            }
        }
    }
    (next, taken)
}

/// Puts the last values [`assemble`] took back where they were.
fn give_back<'p>(mut next: Results<'p>, taken: &[&'p Target], last: &mut Results<'p>) {
    for target in taken {
        if let Some(value) = next.remove(target) {
            last.insert(target, value);
        }
    }
}
