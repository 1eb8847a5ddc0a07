//! Refresh mode's metrics, served on `--metrics-addr` in the OpenMetrics text format
//! (which Prometheus scrapes natively) through the shared server ([`crate::serve`]).
//!
//! Counts and times only: no reference, file name or value appears in a label.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use bytes::Bytes;
use hyper::{Method, Request, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::notify::Report;
use crate::serve::{Limits, Listener, Reply, reply};

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    /// `--max-stale`, and when the set was last found current (ms since the epoch): the
    /// stale gauge is worked out at each scrape, since a long back-off would leave it
    /// behind.
    max_stale: Option<std::time::Duration>,
    checked_at_ms: AtomicU64,
    last_check: Gauge<f64, AtomicU64>,
    last_change: Gauge<f64, AtomicU64>,
    cycles: Family<Labels, Counter>,
    kept: Gauge,
    stale: Gauge,
    notifications: Family<Labels, Counter>,
    store_calls: Family<Labels, Counter>,
}

fn seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Metrics {
    pub fn new(max_stale: Option<std::time::Duration>) -> Metrics {
        let mut registry = Registry::with_prefix("secret_sidecar_refresh");
        let last_check = Gauge::<f64, AtomicU64>::default();
        let last_change = Gauge::<f64, AtomicU64>::default();
        let cycles = Family::<Labels, Counter>::default();
        let kept = Gauge::default();
        let stale = Gauge::default();
        let notifications = Family::<Labels, Counter>::default();
        let store_calls = Family::<Labels, Counter>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "When the published set was last found current (the first publish included)",
            last_check.clone(),
        );
        registry.register(
            "last_change_timestamp_seconds",
            "When a set was last published",
            last_change.clone(),
        );
        registry.register(
            "cycles",
            "Refresh cycles by outcome: unchanged, changed, failed",
            cycles.clone(),
        );
        registry.register(
            "kept_secrets",
            "Secrets whose last value is kept although the store no longer gives them",
            kept.clone(),
        );
        registry.register(
            "stale",
            "1 when the last successful check is older than --max-stale",
            stale.clone(),
        );
        registry.register(
            "notifications",
            "Notifications after a change, by result: sent, failed",
            notifications.clone(),
        );
        registry.register(
            "store_calls",
            "Calls to the secret stores by store and operation, first publish included",
            store_calls.clone(),
        );
        Metrics {
            registry,
            max_stale,
            checked_at_ms: AtomicU64::new(0),
            last_check,
            last_change,
            cycles,
            kept,
            stale,
            notifications,
            store_calls,
        }
    }

    /// The first publish, or a cycle that found the set current.
    pub fn checked(&self, at: SystemTime, changed: bool, kept: usize, first: bool) {
        self.last_check.set(seconds(at));
        let ms = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        self.checked_at_ms.store(ms, Ordering::Relaxed);
        if changed {
            self.last_change.set(seconds(at));
        }
        if !first {
            let outcome = if changed { "changed" } else { "unchanged" };
            self.cycles.get_or_create(&vec![("outcome", outcome)]).inc();
        }
        self.kept.set(kept as i64);
    }

    pub fn failed(&self) {
        self.cycles
            .get_or_create(&vec![("outcome", "failed")])
            .inc();
    }

    pub fn notified(&self, report: Report) {
        // One statement each: a family's guard must be gone before the next lookup, which
        // may need its write lock.
        self.notifications
            .get_or_create(&vec![("result", "sent")])
            .inc_by(report.sent.into());
        self.notifications
            .get_or_create(&vec![("result", "failed")])
            .inc_by(report.failed.into());
    }

    /// The text a scrape gets, the store calls brought up to date first.
    pub fn encode(&self) -> String {
        if let Some(limit) = self.max_stale {
            let checked = UNIX_EPOCH
                + std::time::Duration::from_millis(self.checked_at_ms.load(Ordering::Relaxed));
            let age = SystemTime::now()
                .duration_since(checked)
                .unwrap_or_default();
            self.stale.set(i64::from(age > limit));
        }
        for call in crate::calls::snapshot() {
            let labels = vec![("store", call.store), ("operation", call.operation)];
            let counter = self.store_calls.get_or_create(&labels);
            let known = counter.get();
            if call.count > known {
                counter.inc_by(call.count - known);
            }
            // The guard goes here, before the next label set may be created.
            drop(counter);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Serves `GET /metrics` until the caller stops polling.
    pub async fn serve(&self, listener: Listener) -> Result<()> {
        let handler = |request: Request<Bytes>| async move { self.answer(&request) };
        listener
            .serve(&Limits::default(), handler, std::future::pending())
            .await
    }

    fn answer(&self, request: &Request<Bytes>) -> Reply {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.encode(),
            ),
            (_, "/metrics") => reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n"),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "see /metrics\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_hold_no_reference() {
        let metrics = Metrics::new(None);
        metrics.checked(SystemTime::now(), true, 0, true);
        metrics.checked(SystemTime::now(), false, 1, false);
        metrics.failed();
        metrics.notified(Report { sent: 2, failed: 0 });
        crate::calls::count("metrics-test", "Read");
        let text = metrics.encode();
        for line in [
            "secret_sidecar_refresh_cycles_total{outcome=\"unchanged\"} 1",
            "secret_sidecar_refresh_cycles_total{outcome=\"failed\"} 1",
            "secret_sidecar_refresh_kept_secrets 1",
            "secret_sidecar_refresh_notifications_total{result=\"sent\"} 2",
            "secret_sidecar_refresh_store_calls_total{store=\"metrics-test\",operation=\"Read\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.contains("secret_sidecar_refresh_last_success_timestamp_seconds "));
    }
}
