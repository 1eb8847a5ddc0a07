//! The one retry policy every provider shares.
//!
//! Providers make exactly one attempt per call (their SDKs' own retries are switched
//! off) and tag failures with a [`Failure`]. This module repeats an attempt only when it
//! failed with [`Failure::Transient`] — connection errors, timeouts, throttling, 5xx — and
//! never for usage, identity, not-found, denied or bad-data failures. Each attempt is
//! bounded by its own timeout; between attempts it waits a capped exponential back-off
//! with full jitter, or what the server asked for with `Retry-After` (capped too). The
//! run's `--timeout` deadline bounds everything from outside.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tracing::debug;

use crate::exit::Failure;

/// A server's request to wait before retrying, from a `Retry-After` header or its
/// equivalent. Providers attach it to a transient error as context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server asked to retry after {:?}", self.0)
    }
}

impl RetryAfter {
    /// Parses a `Retry-After` value given in seconds (the form secret stores send; the
    /// HTTP-date form is ignored rather than guessed at).
    pub fn from_header(value: &str) -> Option<RetryAfter> {
        value
            .trim()
            .parse::<u64>()
            .ok()
            .map(|s| RetryAfter(Duration::from_secs(s)))
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Upper bound for one attempt, connection set-up included.
    pub attempt_timeout: Duration,
    /// The first back-off's upper bound; it doubles per attempt.
    pub base_delay: Duration,
    /// No back-off is longer than this.
    pub max_delay: Duration,
    /// No `Retry-After` is honoured for longer than this.
    pub max_retry_after: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_attempts: 3,
            attempt_timeout: Duration::from_secs(10),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(20),
        }
    }
}

impl Policy {
    /// The default policy, its attempts no longer than `deadline` (the run's `--timeout`).
    pub fn within(deadline: Duration) -> Policy {
        let default = Policy::default();
        Policy {
            attempt_timeout: default.attempt_timeout.min(deadline),
            ..default
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out.
    pub async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut number = 1;
        loop {
            let result = match tokio::time::timeout(self.attempt_timeout, attempt()).await {
                Ok(result) => result,
                Err(_) => Err(anyhow!("no answer within {:?}", self.attempt_timeout))
                    .context(Failure::Transient),
            };
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if Failure::of(&err) != Failure::Transient || number >= self.max_attempts {
                return Err(match number {
                    1 => err,
                    _ => err.context(format!("after {number} attempts")),
                });
            }
            let delay = self.delay(number, err.downcast_ref::<RetryAfter>());
            debug!(
                attempt = number,
                delay_ms = delay.as_millis() as u64,
                "retrying: {err:#}"
            );
            tokio::time::sleep(delay).await;
            number += 1;
        }
    }

    /// Full jitter over the capped exponential bound, so many pods restarting together
    /// do not retry in step. A server's `Retry-After` wins.
    fn delay(&self, attempt: u32, retry_after: Option<&RetryAfter>) -> Duration {
        if let Some(RetryAfter(wait)) = retry_after {
            return (*wait).min(self.max_retry_after);
        }
        full_jitter(backoff_bound(self.base_delay, self.max_delay, attempt))
    }
}

/// The bound for the `attempt`-th retry (from 1): `first`, doubling each time, at most
/// `max`. Every wait between attempts in this crate (a fetch's retries, a long-running
/// mode's back-off after a failed cycle) is a jittered draw under this bound.
pub fn backoff_bound(first: Duration, max: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(1 << attempt.saturating_sub(1).min(20))
        .min(max)
}

/// Uniform in `0..=bound`: requests from many clients spread out the most, for retries
/// within one run.
pub fn full_jitter(bound: Duration) -> Duration {
    Duration::from_millis(fastrand::u64(0..=bound.as_millis() as u64))
}

/// Uniform in `bound/2..=bound`: spread out, yet never so short that a loop that keeps
/// failing spins, for long-running modes that retry until they succeed.
pub fn equal_jitter(bound: Duration) -> Duration {
    let half = bound / 2;
    half + full_jitter(half)
}

/// The waits of a long-running mode after failed cycles (token mode's refreshes, refresh
/// mode's re-reads): `first`, doubling with each failure in a row up to `max`, each drawn
/// with equal jitter, so a fleet that failed together does not retry in step and a loop
/// that keeps failing never spins. A success starts it over.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            failures: 0,
        }
    }

    /// Counts one more failure and returns how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        equal_jitter(backoff_bound(self.first, self.max, self.failures))
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn quick() -> Policy {
        Policy {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            attempt_timeout: Duration::from_millis(200),
            ..Policy::default()
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn failing(class: Failure, calls: &Cell<u32>) -> impl std::future::Future<Output = Result<()>> {
        calls.set(calls.get() + 1);
        std::future::ready(Err(anyhow!("boom")).context(class))
    }

    #[test]
    fn retries_only_transient_failures() {
        for (class, expected) in [
            (Failure::Transient, 3),
            (Failure::NotFound, 1),
            (Failure::Denied, 1),
            (Failure::Auth, 1),
            (Failure::Usage, 1),
            (Failure::BadData, 1),
            (Failure::Internal, 1),
        ] {
            let calls = Cell::new(0);
            let err = runtime()
                .block_on(quick().run(|| failing(class, &calls)))
                .unwrap_err();
            assert_eq!(calls.get(), expected, "{class:?}");
            assert_eq!(Failure::of(&err), class);
        }
    }

    #[test]
    fn a_later_success_wins_and_slow_attempts_time_out() {
        let calls = Cell::new(0);
        let value = runtime()
            .block_on(quick().run(|| {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n == 1 {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Ok(n)
                }
            }))
            .unwrap();
        assert_eq!(value, 2, "the first attempt should have timed out");
    }

    #[test]
    fn backoff_is_capped_jittered_and_retry_after_is_honoured_up_to_a_cap() {
        let policy = Policy::default();
        for attempt in 1..30 {
            assert!(policy.delay(attempt, None) <= policy.max_delay);
        }
        assert!(policy.delay(1, None) <= Duration::from_millis(100));
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff_bound(first, max, 1), first);
        assert_eq!(backoff_bound(first, max, 3), Duration::from_secs(4));
        assert_eq!(backoff_bound(first, max, 40), max);
        for attempt in 1..40 {
            let wait = equal_jitter(backoff_bound(first, max, attempt));
            assert!(wait >= first / 2 && wait <= max, "{attempt}: {wait:?}");
        }
        let mut backoff = Backoff::new(first, max);
        for failures in 1..40 {
            let wait = backoff.failed();
            assert!(wait >= first / 2 && wait <= max, "{failures}: {wait:?}");
        }
        assert_eq!(backoff.failures(), 39);
        assert!(backoff.failed() >= max / 2);
        backoff.succeeded();
        assert!(backoff.failed() <= first);
        let asked = RetryAfter(Duration::from_secs(3));
        assert_eq!(policy.delay(1, Some(&asked)), Duration::from_secs(3));
        let greedy = RetryAfter(Duration::from_secs(3600));
        assert_eq!(policy.delay(1, Some(&greedy)), policy.max_retry_after);
        assert_eq!(
            RetryAfter::from_header(" 7 "),
            Some(RetryAfter(Duration::from_secs(7)))
        );
        assert_eq!(
            RetryAfter::from_header("Wed, 21 Oct 2015 07:28:00 GMT"),
            None
        );
    }

    #[test]
    fn retry_after_is_found_through_context_layers() {
        let err = Err::<(), _>(anyhow!("429"))
            .context(RetryAfter(Duration::from_secs(2)))
            .context(Failure::Transient)
            .context("fetching x")
            .unwrap_err();
        assert_eq!(
            err.downcast_ref::<RetryAfter>(),
            Some(&RetryAfter(Duration::from_secs(2)))
        );
        assert_eq!(Failure::of(&err), Failure::Transient);
    }
}
