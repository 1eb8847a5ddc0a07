//! `ssm://NAME`, `ssm:///PATH/NAME`, `ssm://arn:aws:ssm:…:parameter/…` and `ssm:///PATH/`:
//! the Parameter Store part of a reference, read without any SDK.

use anyhow::{Result, bail};

use crate::providers::Params;

/// Which version of the parameter to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Version {
    /// The latest.
    Latest,
    /// `?version=N`.
    Number(u64),
    /// `?label=L`.
    Label(String),
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SsmTarget {
    /// The name (`db-password`, `/app/prod/db`) or ARN, passed to the service as `Name`;
    /// for a path, the path with its trailing `/`.
    pub name: String,
    /// The region named in an ARN, which wins over the environment's.
    pub region: Option<String>,
    pub version: Version,
    /// `ssm:///app/prod/`: every parameter under the path, recursively.
    pub path: bool,
}

/// Parameter Store's limit on a name, hierarchy included.
const MAX_NAME: usize = 1011;

impl SsmTarget {
    pub fn parse(locator: &str, params: &mut Params) -> Result<SsmTarget> {
        let version = match (params.take_value("version")?, params.take_value("label")?) {
            (None, None) => Version::Latest,
            (Some(number), None) => Version::Number(parse_version(&number)?),
            (None, Some(label)) => Version::Label(parse_label(label)?),
            (Some(_), Some(_)) => bail!("give version or label, not both"),
        };
        let (region, path) = if locator.starts_with("arn:") {
            (Some(parse_arn_region(locator)?), false)
        } else {
            validate_name(locator)?;
            (None, locator.ends_with('/'))
        };
        if path && version != Version::Latest {
            bail!(
                "'{locator}' is a path: it publishes the latest version of every parameter \
                 under it, and takes no version or label"
            );
        }
        Ok(SsmTarget {
            name: locator.to_owned(),
            region,
            version,
            path,
        })
    }

    /// The name as GetParameters takes it, with the version or label selector.
    pub fn selected(&self) -> String {
        match &self.version {
            Version::Latest => self.name.clone(),
            Version::Number(number) => format!("{}:{number}", self.name),
            Version::Label(label) => format!("{}:{label}", self.name),
        }
    }

    /// The parameter's name without its leading `/` (for an ARN, the part after
    /// `parameter/`; for a path, without its slashes at either end).
    pub fn short_name(&self) -> String {
        let name = match self.region {
            Some(_) => self.name.split_once(":parameter/").map_or("", |(_, n)| n),
            None => &self.name,
        };
        name.trim_matches('/').to_owned()
    }
}

fn parse_version(text: &str) -> Result<u64> {
    match text.parse::<u64>() {
        Ok(number) if number > 0 && !text.starts_with(['0', '+']) => Ok(number),
        _ => bail!("version '{text}' is not a parameter version (1, 2, ...)"),
    }
}

/// Labels are up to 100 letters, digits, `.`, `-` and `_`, and do not start with a digit.
fn parse_label(label: String) -> Result<String> {
    let allowed = label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !allowed || label.len() > 100 || label.starts_with(|c: char| c.is_ascii_digit()) {
        bail!(
            "label '{label}' is not a Parameter Store label (up to 100 of A-Z a-z 0-9 . - _, \
             not starting with a digit)"
        );
    }
    Ok(label)
}

/// `arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME` → `REGION`.
fn parse_arn_region(arn: &str) -> Result<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "ssm", region, account, resource]
            if !partition.is_empty()
                && !region.is_empty()
                && !account.is_empty()
                && resource
                    .strip_prefix("parameter/")
                    .is_some_and(|name| !name.is_empty() && !name.ends_with('/')) =>
        {
            Ok((*region).to_owned())
        }
        _ => bail!(
            "'{arn}' is not a Parameter Store parameter ARN \
             (arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME)"
        ),
    }
}

/// Names are letters, digits, `.`, `-`, `_` and, in a hierarchy, `/`-separated levels
/// that start with `/`. A name ending in `/` is a path.
fn validate_name(name: &str) -> Result<()> {
    if name.len() > MAX_NAME {
        bail!(
            "parameter name is {} characters; Parameter Store allows {MAX_NAME}",
            name.len()
        );
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/_.-".contains(*c)))
    {
        bail!(
            "parameter name '{name}' has {bad:?}; Parameter Store names use A-Z a-z 0-9 . - _ \
             and / between levels"
        );
    }
    if name.contains('/') && !name.starts_with('/') {
        bail!("'{name}' is hierarchical, so it starts with '/': ssm:///{name} (three slashes)");
    }
    if name.contains("//") {
        bail!("parameter name '{name}' has an empty level ('//')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(locator: &str, query: &str) -> Result<SsmTarget> {
        SsmTarget::parse(locator, &mut Params::parse(query).unwrap())
    }

    #[test]
    fn names_paths_and_arns() {
        let plain = parse("db-password", "").unwrap();
        assert_eq!(
            (plain.short_name().as_str(), plain.path),
            ("db-password", false)
        );
        let nested = parse("/app/prod/db", "").unwrap();
        assert_eq!(nested.short_name(), "app/prod/db");
        assert!(!nested.path);
        let path = parse("/app/prod/", "").unwrap();
        assert!(path.path);
        assert_eq!(path.short_name(), "app/prod");
        let arn = parse("arn:aws:ssm:eu-west-1:123456789012:parameter/app/db", "").unwrap();
        assert_eq!(arn.region.as_deref(), Some("eu-west-1"));
        assert_eq!(arn.short_name(), "app/db");
        for bad in [
            "app/db",
            "/app//db",
            "/app/db pass",
            "arn:aws:secretsmanager:eu-west-1:1:secret:x",
            "arn:aws:ssm:eu-west-1:1:parameter/",
            "arn:aws:ssm::1:parameter/x",
        ] {
            assert!(parse(bad, "").is_err(), "{bad}");
        }
        assert!(parse(&"a".repeat(1012), "").is_err());
    }

    #[test]
    fn versions_and_labels_become_selectors() {
        assert_eq!(parse("/a/b", "version=3").unwrap().selected(), "/a/b:3");
        assert_eq!(
            parse("/a/b", "label=stable").unwrap().selected(),
            "/a/b:stable"
        );
        assert_eq!(parse("/a/b", "").unwrap().selected(), "/a/b");
        for (locator, query) in [
            ("/a/b", "version=0"),
            ("/a/b", "version=01"),
            ("/a/b", "version=x"),
            ("/a/b", "label=1st"),
            ("/a/b", "label=a:b"),
            ("/a/b", "version=1&label=x"),
            ("/a/", "version=1"),
        ] {
            assert!(parse(locator, query).is_err(), "{locator}?{query}");
        }
    }
}
