//! The options of refresh mode (`--refresh`), which keeps the published set current
//! after the first publish. They are the normal command's: refresh is the init run that
//! does not exit. Checked together by `refresh::Settings`.

use std::net::SocketAddr;

use clap::ValueEnum;

use super::Seconds;
use crate::notify::NotifyArgs;

/// What refresh mode does with a secret that was deleted, or may no longer be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OnRevoked {
    /// Keep publishing the last value read, with a warning each cycle (the default).
    #[default]
    Keep,
    /// Republish the set without the files made from it, and notify.
    Remove,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RefreshArgs {
    /// Keep running after the first publish: read the secrets again every DURATION (give
    /// or take 10%, so a fleet started together spreads out), and republish the set
    /// atomically, through the same ..data swap, only when a file's content changed; then
    /// notify (--notify-*). A failed read keeps the published set and retries with
    /// back-off. SIGTERM stops it with exit 0, the files in place. Without it: publish
    /// once and exit. 60, 30s, 5m or 1h.
    ///
    /// Example: --refresh 5m
    #[arg(long, value_name = "DURATION", env = "SECRET_SIDECAR_REFRESH")]
    pub refresh: Option<Seconds>,

    /// With --refresh: how long the set may go without a successful check before the
    /// process reports itself unhealthy (--probe then fails). Must be longer than
    /// --refresh. Default: never.
    ///
    /// Example: --max-stale 30m
    #[arg(long, value_name = "DURATION", env = "SECRET_SIDECAR_MAX_STALE")]
    pub max_stale: Option<Seconds>,

    /// With --refresh: what to do when a secret the set was made from is deleted or may no
    /// longer be read. keep (default): keep its files as they are, warn every cycle, and
    /// let the set go stale; a mistake in a policy or a deletion that will be undone then
    /// costs the application nothing. remove: republish the set without its files (and
    /// without aggregate files that use it) and notify.
    ///
    /// Example: --on-revoked remove
    #[arg(
        long,
        value_enum,
        value_name = "WHAT",
        env = "SECRET_SIDECAR_ON_REVOKED"
    )]
    pub on_revoked: Option<OnRevoked>,

    /// With --refresh: serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics:
    /// the last successful check, cycles, failures, changes, notifications and calls per
    /// secret store. They hold counts and times, never a name or a value. 127.0.0.1:PORT
    /// keeps them inside the pod.
    ///
    /// Example: --metrics-addr 127.0.0.1:9102
    #[arg(long, value_name = "ADDR", env = "SECRET_SIDECAR_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Check instead of run: exit 0 if a refresh process has published the set in
    /// --output-dir and checked it within its --max-stale, 1 otherwise. For the startup and
    /// liveness probes of the container running --refresh (a minimal image has no shell).
    /// It reads --output-dir/..status/refresh, which holds times, never a secret. No
    /// environment variable: it would turn the container itself into a probe.
    ///
    /// Example: --probe --output-dir /run/secrets
    #[arg(long)]
    pub probe: bool,

    #[command(flatten)]
    pub notify: NotifyArgs,
}

impl RefreshArgs {
    /// Whether an option that only refresh mode reads was given.
    pub fn refresh_options_given(&self) -> bool {
        self.max_stale.is_some()
            || self.on_revoked.is_some()
            || self.metrics_addr.is_some()
            || self.notify.given()
    }
}
