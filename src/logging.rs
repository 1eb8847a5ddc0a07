//! Log set-up: `tracing` to stderr, as text or one JSON object per line.
//!
//! stdout stays empty so an orchestrator's log pipeline sees only these lines. The level
//! comes from `RUST_LOG`; by default this crate logs at info and libraries at warn.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The format of the log lines on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// aws-config is silenced unless asked for: its credential-chain messages print errors
/// with `Debug`, which can include a raw HTTP response. The run logs its own identity line
/// and Display-only error chains instead.
const DEFAULT_FILTER: &str = "warn,secret_sidecar=info,aws_config=off";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second initialisation (never expected) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
