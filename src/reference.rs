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

use crate::providers::Target;

/// A parsed reference. It holds names, never values, so it may be printed freely.
#[derive(Debug)]
pub struct SecretRef {
    /// The reference exactly as the user wrote it, for logs and errors.
    pub text: String,
    pub target: Target,
    pub key: Option<JsonKey>,
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
        let target = Target::parse(scheme, locator, &mut params)?;
        params.reject_rest()?;
        Ok(SecretRef {
            text: text.to_owned(),
            target,
            key,
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
