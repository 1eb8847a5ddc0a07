//! The `--config` YAML file: many secrets, each with the same options as `--secret`, and
//! aggregate files built from several secrets.
//!
//! ```yaml
//! secrets:
//!   - ref: aws://prod/db            # required
//!     file: db/password             # optional; derived from ref when absent
//!     key: password                 # optional; same as ref#password
//!     format: raw                   # optional; raw, explode, base64, pem-key, pem-cert, ...
//!     optional: false               # optional; skip the secret if it does not exist
//!     mode: "0400"                  # optional; a quoted octal string
//!     owner: "1000:1000"            # optional; UID[:GID]
//! files:
//!   - file: app.env                 # required
//!     format: env                   # required; env, json or template
//!     values:                       # NAME: REF, each a string
//!       DB_PASSWORD: aws://prod/db#password
//!     template: "..."               # template only (or template_file: PATH)
//!     multiline: false              # env only: allow line breaks in values
//!     mode: "0400"
//!     owner: "1000"
//! ```
//!
//! Unknown fields are rejected. Parse errors give line and column but never quote the
//! file's text, since a mistaken config may hold a literal value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;

use crate::reference::Format;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub secrets: Vec<SecretEntry>,
    #[serde(default)]
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretEntry {
    #[serde(rename = "ref")]
    pub reference: String,
    pub file: Option<String>,
    pub key: Option<String>,
    pub format: Option<Format>,
    pub optional: Option<bool>,
    pub mode: Option<String>,
    pub owner: Option<String>,
}

/// One file assembled from several secrets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub file: String,
    pub format: AggregateFormat,
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    pub template: Option<String>,
    pub template_file: Option<PathBuf>,
    /// `format: env` only: let values hold line breaks (quoted), for readers known to
    /// handle them; refused by default.
    pub multiline: Option<bool>,
    pub mode: Option<String>,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggregateFormat {
    Env,
    Json,
    Template,
}

impl ConfigFile {
    /// Reads and parses `path`. Its errors are usage errors; the plan tags them so.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        ConfigFile::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ConfigFile> {
        serde_saphyr::from_str::<ConfigFile>(text).map_err(|err| anyhow!(describe(&err)))
    }
}

/// Renders a YAML error as `MESSAGE at line L, column C`, keeping nothing from the file
/// but field names: see [`redact`].
fn describe(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter as _;
    let message = redact(&serde_saphyr::UserMessageFormatter.format_message(err));
    match err.location() {
        Some(at) => format!("{message} at line {}, column {}", at.line(), at.column()),
        None => message,
    }
}

/// What of a parse error can be shown without showing a value from the file.
///
/// serde quotes the offending value in its messages (`invalid type: string "…"`,
/// ``unknown variant `…` ``), and a value may itself hold any quote character, so the
/// message cannot be parsed by its quotes. Instead it is kept only up to its first quote of
/// any kind, followed by serde's closing `, expected …` clause, which comes from this
/// program's schema and is always last. Field names (unknown, missing or duplicate) are
/// keys, not values, and are shown: they are what tells the user what to fix.
fn redact(message: &str) -> String {
    let expected = message.rfind(", expected ").map(|at| &message[at..]);
    for kind in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = message.strip_prefix(kind) {
            let name = match expected {
                Some(tail) => rest.strip_suffix(tail).unwrap_or(rest),
                None => rest,
            };
            let name = name.strip_suffix('`').unwrap_or(name);
            return format!("{kind}{name}`{}", expected.unwrap_or_default());
        }
    }
    let cut = message.find(['"', '\'', '`']).unwrap_or(message.len());
    let mut out = message[..cut].trim_end().to_owned();
    if cut < message.len() {
        out.push_str(" …");
        // serde's clause names types and this schema's own names: plain words, commas and
        // backticks. Anything else in a tail is not serde's, so it is not shown.
        let schema_like = |tail: &&str| {
            tail.chars()
                .all(|c| c.is_ascii_alphanumeric() || " _-,.`".contains(c))
        };
        if let Some(tail) = expected.filter(schema_like)
            && message.len() - tail.len() > cut
        {
            out.push_str(tail);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_entry() {
        let config = ConfigFile::parse(
            "secrets:\n  - ref: aws://prod/db\n    file: db/password\n    key: password\n    mode: \"0400\"\n    owner: \"1000:2000\"\n",
        )
        .unwrap();
        let entry = &config.secrets[0];
        assert_eq!(entry.reference, "aws://prod/db");
        assert_eq!(entry.file.as_deref(), Some("db/password"));
        assert_eq!(entry.key.as_deref(), Some("password"));
        assert_eq!(entry.mode.as_deref(), Some("0400"));
        assert_eq!(entry.owner.as_deref(), Some("1000:2000"));
    }

    #[test]
    fn reads_aggregate_files() {
        let config = ConfigFile::parse(
            "files:\n  - file: app.env\n    format: env\n    values:\n      B: aws://b\n      A: aws://a#k\n",
        )
        .unwrap();
        assert!(config.secrets.is_empty());
        let file = &config.files[0];
        assert_eq!(file.format, AggregateFormat::Env);
        let names: Vec<_> = file.values.keys().collect();
        assert_eq!(names, ["A", "B"]);
        assert!(ConfigFile::parse("files:\n  - file: x\n    format: yaml\n").is_err());
    }

    #[test]
    fn unknown_fields_are_rejected_with_a_line_number() {
        let err = ConfigFile::parse("secrets:\n  - ref: aws://a\n    flie: x\n").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("flie"), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn unknown_enum_values_are_not_echoed() {
        // Found by the config fuzz target (fuzz/regressions/config/format-variant-echoed).
        for text in [
            "files:\n  - format: SENTINELX9\n",
            "secrets:\n  - ref: aws://x\n    format: SENTINELX9\n",
        ] {
            let err = ConfigFile::parse(text).unwrap_err().to_string();
            assert!(!err.contains("SENTINELX9"), "{err}");
            assert!(err.contains("unknown variant"), "{err}");
        }
    }

    #[test]
    fn errors_never_quote_the_file() {
        let err = ConfigFile::parse("secrets:\n  - ref: [\"hunter2-sentinel\"]\n").unwrap_err();
        let message = err.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        let err = ConfigFile::parse("secrets: 'hunter2-sentinel'\n").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn redaction_keeps_structure() {
        for (message, shown) in [
            (
                r#"invalid type: string "x y", expected u8"#,
                "invalid type: string …, expected u8",
            ),
            (
                "unknown field `flie`, expected one of `ref`, `file`",
                "unknown field `flie`, expected one of `ref`, `file`",
            ),
            ("missing field `ref`", "missing field `ref`"),
            (
                "unknown variant `SENTINELX9`, expected one of `env`, `json`",
                "unknown variant …, expected one of `env`, `json`",
            ),
            // A value holding quotes of every kind cannot close the span early.
            (
                "unknown variant ``a:SENTINELX9`, expected one of `env`",
                "unknown variant …, expected one of `env`",
            ),
            (
                r#"invalid type: string "a"SENTINELX9, expected x"", expected u8"#,
                "invalid type: string …, expected u8",
            ),
            ("dangling \"abc", "dangling …"),
        ] {
            assert_eq!(redact(message), shown, "for {message:?}");
        }
    }
}
