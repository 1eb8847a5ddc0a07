//! Refresh mode (`--refresh DURATION`): the init run that does not exit. It publishes the
//! set exactly as the init run does (fail closed, the same exit codes), then keeps it
//! current: every interval, give or take 10%, it reads the secrets again through the same
//! pipeline, and republishes the whole set through the same `..data` swap only when a file
//! an application reads would change. Then, and never after the first publish, it notifies
//! the applications ([`crate::notify`]).
//!
//! Failures never touch the published set: a failed cycle keeps it and retries with
//! growing, jittered waits (a store's `Retry-After` honoured), and recovers without a
//! restart. A secret that was deleted or denied keeps its last value unless
//! `--on-revoked remove` ([`cycle`]). `--max-stale` bounds how long the set may go without a
//! successful check before `--probe` fails ([`status`]). SIGTERM or SIGINT stops it with exit
//! 0 and the files in place (before the first publish: 143, like an init run). Optional
//! metrics ([`metrics`]).
//!
//! Between cycles the process sleeps in one timer: no thread spins, no file is touched.

mod cycle;
mod metrics;
mod status;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use tracing::{info, warn};

use crate::cli::{Cli, OnRevoked, RefreshArgs};
use crate::exit::Failure;
use crate::init;
use crate::notify::Notifier;
use crate::plan::Plan;
use crate::publish::Publisher;
use crate::retry::{Backoff, RetryAfter};
use crate::serve::Listener;
use crate::signal::Stop;
use cycle::State;
use metrics::Metrics;
use status::Status;
pub use status::probe;

/// The first wait after a failed cycle (or the interval, if shorter); it doubles with each
/// failure in a row.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The waits after failures grow to the interval, but not past these bounds: at least a
/// back-off that relieves a throttled store, at most a staleness that outlasts an outage
/// by a few minutes.
const RETRY_MAX_LOW: Duration = Duration::from_secs(30);
const RETRY_MAX_HIGH: Duration = Duration::from_secs(5 * 60);

/// Refresh mode's options, checked.
struct Settings {
    interval: Duration,
    max_stale: Option<Duration>,
    on_revoked: OnRevoked,
    metrics_addr: Option<SocketAddr>,
    notifier: Notifier,
}

impl Settings {
    fn build(args: &RefreshArgs, plan: &Plan) -> Result<Settings> {
        let (interval, max_stale) = timing(args)?;
        Ok(Settings {
            interval,
            max_stale,
            on_revoked: args.on_revoked.unwrap_or_default(),
            metrics_addr: args.metrics_addr,
            notifier: Notifier::new(&args.notify, &plan.providers.http)?,
        })
    }
}

/// The interval and the staleness limit, checked together; also what the admission webhook
/// checks a pod's refresh annotations with, so that it denies what this mode would refuse.
pub fn timing(args: &RefreshArgs) -> Result<(Duration, Option<Duration>)> {
    let interval = args
        .refresh
        .ok_or_else(|| anyhow!("--refresh is required"))?
        .0;
    let max_stale = args.max_stale.map(|s| s.0);
    if let Some(limit) = max_stale
        && limit <= interval
    {
        bail!(
            "--max-stale ({limit:?}) must be longer than --refresh ({interval:?}), or the set \
             would be stale between two checks"
        );
    }
    Ok((interval, max_stale))
}

/// Runs until SIGTERM or SIGINT; `Ok` then, since stopping is how a sidecar ends.
pub async fn run(cli: &Cli) -> Result<()> {
    let mut stop = Stop::listen();
    let plan = Plan::build(cli)?;
    let settings = Settings::build(&cli.refresh, &plan).context(Failure::Usage)?;
    let listener = match settings.metrics_addr {
        Some(addr) => Some(Listener::bind(addr, None).await?),
        None => None,
    };
    let publisher = init::open(&plan)?;
    Status::starting(&publisher);
    let metrics = Metrics::new(settings.max_stale);
    let work = keep_current(&plan, &settings, &publisher, &metrics, &mut stop);
    match listener {
        None => work.await,
        Some(listener) => {
            info!(addr = %listener.local_addr()?, "serving metrics at /metrics");
            tokio::select! {
                result = work => result,
                served = metrics.serve(listener) => served
                    .and_then(|()| Err(anyhow!("the metrics server stopped")))
                    .context(Failure::Internal),
            }
        }
    }
}

/// The first publish, then the loop.
async fn keep_current(
    plan: &Plan,
    settings: &Settings,
    publisher: &Publisher,
    metrics: &Metrics,
    stop: &mut Stop,
) -> Result<()> {
    let first = match stop.or_stop(init::publish_first(plan, publisher)).await {
        Ok(first) => first?,
        Err(signal) => {
            return Err(anyhow!(
                "stopped by {signal} before publishing; nothing new was published"
            ))
            .context(Failure::Interrupted);
        }
    };
    let mut state = State {
        providers: first.providers,
        fetched: first.fetched,
        rendered: first.rendered,
        reconnect: false,
    };
    let mut status = Status::new(settings.max_stale);
    status.record(publisher, true, true, 0, 0);
    metrics.checked(SystemTime::now(), true, 0, true);
    info!(
        every_ms = settings.interval.as_millis() as u64,
        max_stale_s = settings.max_stale.map(|d| d.as_secs()),
        "refreshing"
    );

    let first_wait = RETRY_FIRST.min(settings.interval);
    let max_wait = settings.interval.clamp(RETRY_MAX_LOW, RETRY_MAX_HIGH);
    let mut backoff = Backoff::new(first_wait, max_wait);
    let mut wait = spread(settings.interval);
    loop {
        let attempt = stop.or_stop(async {
            tokio::time::sleep(wait).await;
            let started = Instant::now();
            let cycle = cycle::run(plan, &mut state, publisher, settings.on_revoked);
            let result = match tokio::time::timeout(plan.timeout, cycle).await {
                Ok(result) => result,
                Err(_) => Err(anyhow!(
                    "the {:?} deadline (--timeout) passed before the cycle finished",
                    plan.timeout
                ))
                .context(Failure::Transient),
            };
            (result, started.elapsed())
        });
        let (result, took) = match attempt.await {
            Ok(done) => done,
            Err(signal) => {
                info!("stopped by {signal}; the published set stays in place");
                return Ok(());
            }
        };
        match result {
            Ok(outcome) => {
                backoff.succeeded();
                wait = spread(settings.interval);
                let checked = outcome.kept == 0;
                status.record(publisher, checked, outcome.changed, 0, outcome.kept);
                metrics.checked(
                    match checked {
                        true => SystemTime::now(),
                        false => status.checked_at(),
                    },
                    outcome.changed,
                    outcome.kept,
                    false,
                );
                tracing::debug!(
                    changed = outcome.changed,
                    kept = outcome.kept,
                    us = took.as_micros() as u64,
                    "refresh cycle"
                );
                if outcome.changed && !settings.notifier.is_empty() {
                    match stop.or_stop(settings.notifier.notify()).await {
                        Ok(report) => metrics.notified(report),
                        Err(signal) => {
                            info!(
                                "stopped by {signal} while notifying; the published set stays in place"
                            );
                            return Ok(());
                        }
                    }
                }
            }
            Err(err) => {
                let class = Failure::of(&err);
                wait = backoff.failed();
                if let Some(RetryAfter(asked)) = err.downcast_ref::<RetryAfter>() {
                    wait = wait.max(*asked);
                }
                if class == Failure::Auth {
                    state.reconnect = true;
                }
                metrics.failed();
                status.record(publisher, false, false, backoff.failures(), 0);
                warn!(
                    failures = backoff.failures(),
                    class = class.label(),
                    retry_in_ms = wait.as_millis() as u64,
                    "refreshing failed; the published set stays as it was: {err:#}"
                );
            }
        }
    }
}

/// `interval` give or take 10%, so that pods started together drift apart.
fn spread(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_spread_within_a_tenth() {
        let interval = Duration::from_secs(60);
        for _ in 0..1000 {
            let wait = spread(interval);
            assert!(wait >= Duration::from_secs(54) && wait <= Duration::from_secs(66));
        }
    }
}
