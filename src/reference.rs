//! Secret references: `SCHEME://LOCATOR[?PARAMS][#KEY]`.
//!
//! One grammar for every provider. The scheme picks the provider (`aws://`, and later
//! `azure://`, `gcp://`); the locator is the provider's own name for the secret (a name or
//! ARN, `VAULT/NAME`, `PROJECT/NAME`); `?PARAMS` are `&`-separated `name=value` pairs (or a
//! bare `name`) that the provider or the core claims; `#KEY` picks one string field out of
//! a JSON secret, either a top-level key (`#password`) or a JSON Pointer (`#/db/password`).
//!
//! Values are taken literally: no percent-decoding, because no provider allows `?`, `#`
//! or `&` in secret names and decoding would make `%` ambiguous.

use std::fmt;

use anyhow::{Result, bail};

use crate::plan::{Owner, parse_mode, parse_owner};
use crate::providers::Target;

/// A parsed reference. It holds names, never values, so it may be printed freely.
#[derive(Debug)]
pub struct SecretRef {
    /// The reference exactly as the user wrote it, for logs and errors.
    pub text: String,
    pub target: Target,
    pub key: Option<JsonKey>,
    /// Per-secret options given as `?format=…&optional&mode=…&owner=…`.
    pub options: Options,
}

/// How a fetched value becomes files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The value, byte for byte.
    #[default]
    Raw,
    /// Each top-level member of a JSON object becomes a file in a folder.
    Explode,
    /// The value is base64 text; publish the decoded bytes.
    Base64,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Format> {
        match text {
            "raw" => Ok(Format::Raw),
            "explode" => Ok(Format::Explode),
            "base64" => Ok(Format::Base64),
            other => bail!("format '{other}' is not one of raw, explode, base64"),
        }
    }
}

/// The core's own parameters; each overrides the global default for one secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub format: Option<Format>,
    pub optional: Option<bool>,
    pub mode: Option<u32>,
    pub owner: Option<Owner>,
}

impl Options {
    fn take(params: &mut Params) -> Result<Options> {
        Ok(Options {
            format: params
                .take_value("format")?
                .map(|f| f.parse())
                .transpose()?,
            optional: params.take_flag("optional")?,
            mode: params
                .take_value("mode")?
                .map(|m| parse_mode(&m))
                .transpose()?,
            owner: params
                .take_value("owner")?
                .map(|o| parse_owner(&o))
                .transpose()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Options::default()
    }
}

/// Which field of a JSON secret to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonKey {
    /// `#name`: a top-level member.
    Member(String),
    /// `#/a/b`: an RFC 6901 JSON Pointer.
    Pointer(String),
}

impl JsonKey {
    pub fn parse(raw: &str) -> Result<JsonKey> {
        if raw.is_empty() {
            bail!("empty key after '#'");
        }
        Ok(if raw.starts_with('/') {
            JsonKey::Pointer(raw.to_owned())
        } else {
            JsonKey::Member(raw.to_owned())
        })
    }

    /// The parts used in a derived file name: the member, or the pointer's segments.
    fn name_parts(&self) -> Vec<String> {
        match self {
            JsonKey::Member(name) => vec![name.clone()],
            JsonKey::Pointer(pointer) => pointer
                .split('/')
                .skip(1)
                .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
                .collect(),
        }
    }
}

impl fmt::Display for JsonKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonKey::Member(name) => f.write_str(name),
            JsonKey::Pointer(pointer) => f.write_str(pointer),
        }
    }
}

/// The `?name=value&flag` part of a reference. Providers and the core each take the
/// parameters they understand; whatever is left over is an error, so a misspelt
/// parameter never silently does nothing.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, Option<String>)>);

impl Params {
    fn parse(raw: &str) -> Result<Params> {
        let mut params = Vec::new();
        for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (pair, None),
            };
            if name.is_empty() {
                bail!("parameter with an empty name in '?{raw}'");
            }
            if params.iter().any(|(seen, _)| seen == name) {
                bail!("parameter '{name}' given twice");
            }
            params.push((name.to_owned(), value));
        }
        Ok(Params(params))
    }

    /// Removes and returns a parameter that must have a non-empty value.
    pub fn take_value(&mut self, name: &str) -> Result<Option<String>> {
        let Some(index) = self.0.iter().position(|(seen, _)| seen == name) else {
            return Ok(None);
        };
        match self.0.remove(index).1 {
            Some(value) if !value.is_empty() => Ok(Some(value)),
            _ => bail!("parameter '{name}' needs a value ({name}=...)"),
        }
    }

    /// Removes a yes/no parameter: bare `name` or `name=true` is yes, `name=false` no.
    pub fn take_flag(&mut self, name: &str) -> Result<Option<bool>> {
        let Some(index) = self.0.iter().position(|(seen, _)| seen == name) else {
            return Ok(None);
        };
        match self.0.remove(index).1.as_deref() {
            None | Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => bail!("parameter '{name}' is true or false, not '{other}'"),
        }
    }

    fn reject_rest(&self) -> Result<()> {
        match self.0.first() {
            None => Ok(()),
            Some((name, _)) => bail!("unknown parameter '{name}'"),
        }
    }
}

impl SecretRef {
    pub fn parse(text: &str) -> Result<SecretRef> {
        let Some((scheme, rest)) = text.split_once("://") else {
            bail!("'{text}' is not a reference: expected SCHEME://NAME, e.g. aws://prod/db");
        };
        let (rest, key) = match rest.split_once('#') {
            Some((rest, key)) => (rest, Some(JsonKey::parse(key)?)),
            None => (rest, None),
        };
        let (locator, mut params) = match rest.split_once('?') {
            Some((locator, query)) => (locator, Params::parse(query)?),
            None => (rest, Params::default()),
        };
        if locator.is_empty() {
            bail!("'{text}' names no secret after '{scheme}://'");
        }
        let options = Options::take(&mut params)?;
        let target = Target::parse(scheme, locator, &mut params)?;
        params.reject_rest()?;
        Ok(SecretRef {
            text: text.to_owned(),
            target,
            key,
            options,
        })
    }

    /// The file name used when the user gives none: the provider's short name for the
    /// secret, then the JSON key's parts, joined by `_`, with every character outside
    /// `[A-Za-z0-9._-]` replaced by `_` and a leading dot replaced too. The result is
    /// always one safe path component.
    pub fn default_file_name(&self) -> String {
        let mut parts = vec![self.target.short_name()];
        if let Some(key) = &self.key {
            parts.extend(key.name_parts());
        }
        safe_component(&parts.join("_"))
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Maps any string to one path component that the publisher accepts.
pub fn safe_component(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with('.') {
        name.replace_range(0..1, "_");
    }
    // Every character is ASCII now, so any byte index is a char boundary.
    name.truncate(crate::plan::MAX_COMPONENT_BYTES);
    if name.is_empty() {
        name.push_str("secret");
    }
    name
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use super::*;

    #[test]
    fn splits_locator_params_and_key() {
        let r = SecretRef::parse("aws://prod/db?version-stage=AWSPREVIOUS#password").unwrap();
        assert_eq!(r.key, Some(JsonKey::Member("password".into())));
        assert_eq!(r.default_file_name(), "prod_db_password");
        assert_eq!(
            r.to_string(),
            "aws://prod/db?version-stage=AWSPREVIOUS#password"
        );
    }

    #[test]
    fn pointer_keys_name_files_by_segment() {
        let r = SecretRef::parse("aws://app#/db/pass~1word").unwrap();
        assert_eq!(r.key, Some(JsonKey::Pointer("/db/pass~1word".into())));
        assert_eq!(r.default_file_name(), "app_db_pass_word");
    }

    #[test]
    fn core_options_are_taken_before_the_provider_sees_the_rest() {
        let r = SecretRef::parse(
            "aws://db?format=explode&optional&mode=0400&owner=1:2&version-stage=X",
        )
        .unwrap();
        assert_eq!(r.options.format, Some(Format::Explode));
        assert_eq!(r.options.optional, Some(true));
        assert_eq!(r.options.mode, Some(0o400));
        assert_eq!(
            r.options.owner,
            Some(Owner {
                uid: 1,
                gid: Some(2)
            })
        );
        assert!(
            SecretRef::parse("aws://db?optional=false")
                .unwrap()
                .options
                .optional
                == Some(false)
        );
        for bad in [
            "aws://db?format=yaml",
            "aws://db?optional=maybe",
            "aws://db?mode=9",
            "aws://db?owner=x",
        ] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "prod/db",
            "aws://",
            "aws://?version-stage=X",
            "aws://db#",
            "aws://db?bogus=1",
            "aws://db?version-stage",
            "aws://db?version-stage=A&version-stage=B",
            "aws://db?=x",
            "nosuch://db",
        ] {
            assert!(SecretRef::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn safe_component_is_always_one_plain_component() {
        for (raw, want) in [
            ("prod/db", "prod_db"),
            ("..data", "_.data"),
            (".env", "_env"),
            ("", "secret"),
            ("a b\0c", "a_b_c"),
            ("ünï", "_n_"),
        ] {
            assert_eq!(safe_component(raw), want, "for {raw:?}");
        }
        assert_eq!(safe_component(&"x".repeat(300)).len(), 255);
    }
}
