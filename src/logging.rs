//! Log set-up: `tracing` to stderr, as text or one JSON object per line.
//!
//! stdout stays empty so an orchestrator's log pipeline sees only these lines. The level
//! comes from `RUST_LOG`; by default this crate logs at info.
//!
//! Two guards hold whatever `RUST_LOG` says:
//! - **Only this crate's events.** The SDKs and the HTTP stack under them print requests,
//!   responses and errors with `Debug` (aws-config's credential chain prints an STS answer
//!   it could not parse whole, credentials included), so their events are dropped.
//!   `--log-sdk-internals` lets them through under `RUST_LOG`, for debugging only.
//! - **One event, one line.** Text that came from outside (a reference, a file name, a
//!   server's error message) may hold newlines, carriage returns, escape sequences or
//!   bidirectional controls that would forge a log line or reorder what a terminal
//!   shows; every such character is written escaped (`\u000a`), in both formats.

use std::io::{IsTerminal, Write};

use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::paths::is_unprintable;

/// The format of the log lines on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The log options.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format on stderr. The level comes from RUST_LOG (default: info for
    /// secret-sidecar).
    ///
    /// Example: --log-format json
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "SECRET_SIDECAR_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// For debugging only, never in production: also log the SDKs' and the HTTP stack's
    /// own events at the RUST_LOG level. They print requests and responses with Debug, so
    /// they can show tokens, credentials and secret values. Without this flag they are
    /// dropped whatever RUST_LOG says.
    ///
    /// Example: --log-sdk-internals (with RUST_LOG=debug)
    #[arg(long, env = "SECRET_SIDECAR_LOG_SDK_INTERNALS", global = true)]
    pub log_sdk_internals: bool,
}

const DEFAULT_FILTER: &str = "warn,secret_sidecar=info";
/// The target prefix of this crate's own events.
const OWN_TARGET: &str = "secret_sidecar";

pub fn init(args: &LogArgs) {
    let levels =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let sdk_internals = args.log_sdk_internals;
    let own_only = filter_fn(move |meta| sdk_internals || meta.target().starts_with(OWN_TARGET));
    let ansi = args.log_format == LogFormat::Text && std::io::stderr().is_terminal();
    let writer = move || OneLine {
        inner: std::io::stderr(),
        ansi,
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    let layer = match args.log_format {
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    // A second initialisation (never expected) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(levels.and(own_only)))
        .try_init();
}

/// stderr, one log line per event: the formatter hands over each event whole, and every
/// unprintable character but the line's final newline is written as `\uXXXX`, a form both
/// people and JSON parsers read. With colours on, escape sequences are the formatter's
/// own and are kept.
struct OneLine<W> {
    inner: W,
    ansi: bool,
}

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let mut line = String::with_capacity(text.len());
        for c in body.chars() {
            let keep = c == '\t' || (c == '\x1b' && self.ansi);
            if is_unprintable(c) && !keep {
                line.push_str(&format!("\\u{:04x}", u32::from(c)));
            } else {
                line.push(c);
            }
        }
        line.push_str(end);
        self.inner.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(text: &str, ansi: bool) -> String {
        let mut out = OneLine {
            inner: Vec::new(),
            ansi,
        };
        out.write_all(text.as_bytes()).unwrap();
        String::from_utf8(out.inner).unwrap()
    }

    #[test]
    fn every_event_stays_one_line() {
        assert_eq!(
            through(
                "ERROR fetching aws://x#a\nINFO all secrets published\n",
                false
            ),
            "ERROR fetching aws://x#a\\u000aINFO all secrets published\n"
        );
        assert_eq!(
            through("a\rb\u{202e}c\u{85}d\te\n", false),
            "a\\u000db\\u202ec\\u0085d\te\n"
        );
        assert_eq!(through("\x1b[31mred\n", false), "\\u001b[31mred\n");
        assert_eq!(through("\x1b[31mred\n", true), "\x1b[31mred\n");
        // A JSON line keeps parsing, with the character it had.
        let json = through("{\"msg\":\"a\u{202e}b\"}\n", false);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["msg"], "a\u{202e}b");
    }
}
