//! `aws://NAME_OR_ARN[?version-stage=STAGE|version-id=ID]`: the Secrets Manager part of
//! a reference, read without any SDK.

use anyhow::{Result, bail};

use crate::providers::Params;

/// Which version of the secret to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Version {
    /// The service's default, `AWSCURRENT`.
    Current,
    Stage(String),
    Id(String),
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AwsTarget {
    /// The name or ARN, passed to the service as `SecretId`.
    pub secret_id: String,
    /// The region named in an ARN, which wins over the environment's.
    pub region: Option<String>,
    pub version: Version,
}

impl AwsTarget {
    pub fn parse(locator: &str, params: &mut Params) -> Result<AwsTarget> {
        let region = if locator.starts_with("arn:") {
            Some(parse_arn_region(locator)?)
        } else {
            validate_name(locator)?;
            None
        };
        let stage = params.take_value("version-stage")?;
        let id = params.take_value("version-id")?;
        let version = match (stage, id) {
            (None, None) => Version::Current,
            (Some(stage), None) => Version::Stage(stage),
            (None, Some(id)) => Version::Id(id),
            (Some(_), Some(_)) => bail!("give version-stage or version-id, not both"),
        };
        Ok(AwsTarget {
            secret_id: locator.to_owned(),
            region,
            version,
        })
    }

    /// The secret's name: for an ARN, the part after `secret:` without the six-character
    /// suffix Secrets Manager appends.
    pub fn short_name(&self) -> String {
        if self.region.is_none() {
            return self.secret_id.clone();
        }
        let name = self.secret_id.splitn(7, ':').nth(6).unwrap_or_default();
        match name.rsplit_once('-') {
            Some((stem, suffix))
                if suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                stem.to_owned()
            }
            _ => name.to_owned(),
        }
    }
}

/// `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME` → `REGION`.
fn parse_arn_region(arn: &str) -> Result<String> {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    match parts.as_slice() {
        [
            "arn",
            partition,
            "secretsmanager",
            region,
            account,
            "secret",
            name,
        ] if !partition.is_empty()
            && !region.is_empty()
            && !account.is_empty()
            && !name.is_empty() =>
        {
            Ok((*region).to_owned())
        }
        _ => bail!(
            "'{arn}' is not a Secrets Manager secret ARN \
             (arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME)"
        ),
    }
}

/// Secrets Manager names are 1–512 characters of `[A-Za-z0-9/_+=.@-]`.
fn validate_name(name: &str) -> Result<()> {
    if name.len() > 512 {
        bail!(
            "secret name is {} characters; Secrets Manager allows 512",
            name.len()
        );
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
    {
        bail!(
            "secret name '{name}' has {bad:?}; Secrets Manager names use A-Z a-z 0-9 / _ + = . @ -"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AwsTarget> {
        let mut params = Params::default();
        AwsTarget::parse(text, &mut params)
    }

    #[test]
    fn arn_gives_region_and_short_name() {
        let target =
            parse("arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/tls-AbCdEf").unwrap();
        assert_eq!(target.region.as_deref(), Some("eu-west-1"));
        assert_eq!(target.short_name(), "prod/tls");

        let partial = parse("arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:db").unwrap();
        assert_eq!(partial.region.as_deref(), Some("cn-north-1"));
        assert_eq!(partial.short_name(), "db");
    }

    #[test]
    fn names_are_validated_like_the_service_does() {
        assert!(parse("prod/db_+=.@-1").is_ok());
        assert!(parse("prod db").is_err());
        assert!(parse(&"a".repeat(513)).is_err());
        assert!(parse("arn:aws:s3:::bucket").is_err());
        assert!(parse("arn:aws:secretsmanager::123:secret:x").is_err());
    }

    #[test]
    fn a_version_is_a_stage_or_an_id_not_both() {
        let mut params = Params::parse("version-stage=AWSPREVIOUS").unwrap();
        let target = AwsTarget::parse("db", &mut params).unwrap();
        assert_eq!(target.version, Version::Stage("AWSPREVIOUS".into()));
        let mut params = Params::parse("version-stage=A&version-id=B").unwrap();
        assert!(AwsTarget::parse("db", &mut params).is_err());
    }
}
