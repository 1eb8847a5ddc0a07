//! Secret references: `SCHEME://LOCATOR[?PARAMS][#KEY]`.
//!
//! One grammar for every provider. The scheme picks the provider (`aws://`, `azure://`,
//! `gcp://`); the locator is the provider's own name for the secret (a name or ARN,
//! `VAULT/NAME`, `PROJECT/NAME`); `?PARAMS` are `&`-separated `name=value` pairs (or a bare
//! `name`), the file options ([`FileOptions`]) taken here and the rest by the provider;
//! `#KEY` picks one field out of a JSON secret, either a top-level key (`#password`) or a
//! JSON Pointer (`#/db/password`).

use std::fmt;

use anyhow::{Result, bail};

use crate::paths::{Owner, parse_mode, parse_owner, safe_component};
use crate::providers::{Params, Target};

/// A parsed reference. It holds names, never values, so it may be printed freely.
#[derive(Debug)]
pub struct SecretRef {
    /// The reference exactly as the user wrote it, for logs and errors.
    pub text: String,
    pub target: Target,
    pub key: Option<JsonKey>,
    /// Per-secret options given as `?format=…&optional&mode=…&owner=…`.
    pub options: FileOptions,
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
    /// A certificate (PKCS#12, raw or base64, or a PEM bundle): its private key as PEM.
    #[serde(rename = "pem-key")]
    PemKey,
    /// ... its leaf certificate as PEM.
    #[serde(rename = "pem-cert")]
    PemCert,
    /// ... its chain as PEM, leaf first.
    #[serde(rename = "pem-chain")]
    PemChain,
    /// ... its private key, then its chain, in one PEM file.
    #[serde(rename = "pem-bundle")]
    PemBundle,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Format> {
        match text {
            "raw" => Ok(Format::Raw),
            "explode" => Ok(Format::Explode),
            "base64" => Ok(Format::Base64),
            "pem-key" => Ok(Format::PemKey),
            "pem-cert" => Ok(Format::PemCert),
            "pem-chain" => Ok(Format::PemChain),
            "pem-bundle" => Ok(Format::PemBundle),
            other => bail!(
                "format '{other}' is not one of raw, explode, base64, pem-key, pem-cert, \
                 pem-chain, pem-bundle"
            ),
        }
    }
}

/// The core's own parameters; each overrides the global default for one secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileOptions {
    pub format: Option<Format>,
    pub optional: Option<bool>,
    pub mode: Option<u32>,
    pub owner: Option<Owner>,
}

impl FileOptions {
    fn take(params: &mut Params) -> Result<FileOptions> {
        Ok(FileOptions {
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
        *self == FileOptions::default()
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
        let options = FileOptions::take(&mut params)?;
        let target = Target::parse(scheme, locator, &mut params)?;
        params.reject_rest()?;
        if target.is_tree() && (key.is_some() || options.format.is_some()) {
            bail!(
                "'{text}' is a path: it publishes every parameter under it as a file, as \
                 stored, so it takes no #KEY and no format"
            );
        }
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
}
