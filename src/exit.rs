//! Exit codes: the one contract an orchestrator reads from an init container.
//!
//! Every failure is tagged with the [`Class`] that decides the process exit code. The tag
//! travels as an `anyhow` context, so the one-line error message reads as
//! `<class label>: <what>: <cause>` and the code is found by walking the chain, without
//! string matching.

use std::fmt;
use std::process::ExitCode;

/// Why a run failed; [`Class::code`] is the process exit code (`0` is success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
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

impl Class {
    pub const ALL: [Class; 9] = [
        Class::Internal,
        Class::Usage,
        Class::Auth,
        Class::NotFound,
        Class::Denied,
        Class::Transient,
        Class::Output,
        Class::BadData,
        Class::Interrupted,
    ];

    pub fn code(self) -> u8 {
        match self {
            Class::Internal => 1,
            Class::Usage => 2,
            Class::Auth => 3,
            Class::NotFound | Class::Denied => 4,
            Class::Transient => 5,
            Class::Output => 6,
            Class::BadData => 7,
            // 128 + SIGTERM, what a shell reports for a process SIGTERM ended.
            Class::Interrupted => 143,
        }
    }

    /// The label that opens the error line and the README table.
    pub fn label(self) -> &'static str {
        match self {
            Class::Internal => "internal error",
            Class::Usage => "usage error",
            Class::Auth => "authentication failed",
            Class::NotFound => "secret not found",
            Class::Denied => "access denied",
            Class::Transient => "transient failure",
            Class::Output => "output error",
            Class::BadData => "bad secret data",
            Class::Interrupted => "interrupted",
        }
    }

    /// The class an error chain was tagged with (the outermost tag); untagged errors are
    /// internal. anyhow's downcast looks through every context layer.
    pub fn of(err: &anyhow::Error) -> Class {
        err.downcast_ref::<Class>()
            .copied()
            .unwrap_or(Class::Internal)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl From<Class> for ExitCode {
    fn from(class: Class) -> ExitCode {
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
        for class in Class::ALL {
            // Not found and denied share code 4 on purpose; nothing else shares a code.
            if let Some(other) = seen.insert(class.code(), class) {
                assert_eq!((other, class), (Class::NotFound, Class::Denied));
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
        assert_eq!(Class::of(&plain), Class::Internal);

        let tagged: anyhow::Result<()> = Err(anyhow::anyhow!("io"))
            .context(Class::Output)
            .context("while publishing");
        let err = tagged.unwrap_err();
        assert_eq!(Class::of(&err), Class::Output);
        assert_eq!(format!("{err:#}"), "while publishing: output error: io");

        let retagged = err.context(Class::Usage);
        assert_eq!(Class::of(&retagged), Class::Usage);
    }
}
