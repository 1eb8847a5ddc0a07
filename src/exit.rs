//! Exit codes: the one contract an orchestrator reads from an init container.
//!
//! Every failure is tagged with the [`Failure`] class that decides the process exit code.
//! The tag travels as an `anyhow` context, found by walking the chain ([`Failure::of`]),
//! never by string matching. In the one-line message the class's label stands where the
//! tag was added, after the context added above it:
//! `fetching aws://prod/db: secret not found: ResourceNotFoundException: …`.

use std::fmt;
use std::process::ExitCode;

/// Why a run failed; [`Failure::code`] is the process exit code (`0` is success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A bug or an answer the program does not understand.
    Internal,
    /// The command line, environment or configuration file is wrong.
    Usage,
    /// The workload identity could not be proven (no credentials, token rejected), or the
    /// server's could not: its TLS certificate was refused.
    Auth,
    /// The secret (or the requested version) does not exist. Optional secrets skip this.
    NotFound,
    /// The secret exists but this identity may not read it (or not decrypt it).
    Denied,
    /// Network, throttling or server errors that outlasted the retries or the deadline.
    Transient,
    /// The output directory or filesystem refused the files.
    Output,
    /// The secret was fetched but its content is unusable (missing key, not JSON, too large).
    BadData,
    /// SIGTERM or SIGINT arrived before the set was published.
    Interrupted,
}

impl Failure {
    pub const ALL: [Failure; 9] = [
        Failure::Internal,
        Failure::Usage,
        Failure::Auth,
        Failure::NotFound,
        Failure::Denied,
        Failure::Transient,
        Failure::Output,
        Failure::BadData,
        Failure::Interrupted,
    ];

    pub fn code(self) -> u8 {
        match self {
            Failure::Internal => 1,
            Failure::Usage => 2,
            Failure::Auth => 3,
            Failure::NotFound | Failure::Denied => 4,
            Failure::Transient => 5,
            Failure::Output => 6,
            Failure::BadData => 7,
            // 128 + SIGTERM, what a shell reports for a process SIGTERM ended.
            Failure::Interrupted => 143,
        }
    }

    /// The label that opens the error line and the README table.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Internal => "internal error",
            Failure::Usage => "usage error",
            Failure::Auth => "authentication failed",
            Failure::NotFound => "secret not found",
            Failure::Denied => "access denied",
            Failure::Transient => "transient failure",
            Failure::Output => "output error",
            Failure::BadData => "bad secret data",
            Failure::Interrupted => "interrupted",
        }
    }

    /// The class an error chain was tagged with (the outermost tag); untagged errors are
    /// internal. anyhow's downcast looks through every context layer.
    pub fn of(err: &anyhow::Error) -> Failure {
        err.downcast_ref::<Failure>()
            .copied()
            .unwrap_or(Failure::Internal)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl From<Failure> for ExitCode {
    fn from(class: Failure) -> ExitCode {
        ExitCode::from(class.code())
    }
}

/// The exit-code table as shown at the end of `--help`.
pub const HELP_TABLE: &str = "\
Exit codes:
  0  every secret was published
  1  internal error (a bug; please report it)
  2  usage or configuration error (nothing was fetched)
  3  identity or authentication failed (also: a server certificate that does not verify)
  4  secret not found or access denied
  5  transient failure (network, throttling, 5xx) after retries or the deadline
  6  output directory or filesystem problem
  7  bad secret data (missing JSON key, not JSON, too large)
  143  stopped by SIGTERM or SIGINT before publishing
On any non-zero exit nothing new is published: the directory keeps its previous set, if any.";

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_are_distinct_and_documented() {
        let mut seen = std::collections::HashMap::new();
        for class in Failure::ALL {
            // Not found and denied share code 4 on purpose; nothing else shares a code.
            if let Some(other) = seen.insert(class.code(), class) {
                assert_eq!((other, class), (Failure::NotFound, Failure::Denied));
            }
            assert!(
                HELP_TABLE.contains(&format!("  {}  ", class.code())),
                "code {} missing from the help table",
                class.code()
            );
        }
    }

    #[test]
    fn outermost_tag_wins_and_untagged_is_internal() {
        let plain = anyhow::anyhow!("boom");
        assert_eq!(Failure::of(&plain), Failure::Internal);

        let tagged: anyhow::Result<()> = Err(anyhow::anyhow!("io"))
            .context(Failure::Output)
            .context("while publishing");
        let err = tagged.unwrap_err();
        assert_eq!(Failure::of(&err), Failure::Output);
        assert_eq!(format!("{err:#}"), "while publishing: output error: io");

        let retagged = err.context(Failure::Usage);
        assert_eq!(Failure::of(&retagged), Failure::Usage);
    }
}
