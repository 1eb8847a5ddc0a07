//! The value checks of single annotations, each with the binary's own parser where it has
//! one: what [`super::Asked`] applies before the command line is planned as a whole.

use anyhow::{Context as _, Result, anyhow, bail};

use super::{OAUTH2_DEFAULT_KEY, SecretKey};
use crate::cli::Seconds;
use crate::paths::{parse_mode, validate_file};

/// One line of a clap error, without its "error:" and "--help" decorations.
pub(super) fn clap_message(err: &clap::Error) -> String {
    err.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value checks of the options the [`super::FLAGS`] annotations set, with the binary's own
/// parsers; the rest is the planner's.
pub(super) fn check_flag(flag: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        bail!("is empty");
    }
    match flag {
        "mode" => drop(parse_mode(value)?),
        "timeout" | "refresh" => drop(value.parse::<Seconds>().map_err(|e| anyhow!(e))?),
        #[cfg(feature = "aws")]
        "aws-token-source" => {
            one_of::<crate::identity::options::AwsTokenSource>(value)?;
        }
        #[cfg(feature = "aws")]
        "oauth2-client-auth" => {
            one_of::<crate::identity::options::ClientAuth>(value)?;
        }
        #[cfg(not(feature = "aws"))]
        other if other.starts_with("aws-") || other.starts_with("oauth2-") => {
            bail!("this build of secret-sidecar has no AWS provider (cargo feature 'aws' was off)")
        }
        _ => {}
    }
    Ok(())
}

/// `value` as one of a command-line enum's names, or the list of them.
#[cfg(feature = "aws")]
fn one_of<E: clap::ValueEnum>(value: &str) -> Result<E> {
    E::from_str(value, false).map_err(|_| {
        let names: Vec<String> = E::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        anyhow!("'{value}' is not one of {}", names.join(", "))
    })
}

pub(super) fn boolean(value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => bail!("'{other}' is not \"true\" or \"false\""),
    }
}

/// An absolute directory of plain components, as a publisher's path would be.
pub(super) fn check_mount_path(value: &str) -> Result<()> {
    let Some(relative) = value.strip_prefix('/') else {
        bail!("'{value}' is not an absolute path");
    };
    let relative = relative.trim_end_matches('/');
    if relative.is_empty() {
        bail!("the secrets cannot be mounted over /");
    }
    validate_file(relative).with_context(|| format!("'{}'", value.escape_debug()))
}

/// `NAME` or `NAME/KEY`: a Secret of the pod's namespace and a key in it.
pub(super) fn secret_key(value: &str) -> Result<SecretKey> {
    let (name, key) = value.split_once('/').unwrap_or((value, OAUTH2_DEFAULT_KEY));
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name_ok {
        bail!("'{name}' is not a Secret name (lowercase letters, digits, '-' and '.')");
    }
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if !key_ok {
        bail!("'{key}' is not a key of a Secret (letters, digits, '-', '.' and '_')");
    }
    Ok(SecretKey {
        name: name.to_owned(),
        key: key.to_owned(),
    })
}
