//! `gcp://PROJECT/NAME[?version=V][&location=L]` and
//! `gcp://projects/P/[locations/L/]secrets/S[/versions/V]`: the Secret Manager part of a
//! reference, read without any SDK, and the endpoint it is read from.

use anyhow::{Result, bail};

use crate::providers::Params;

const GLOBAL_ENDPOINT: &str = "https://secretmanager.googleapis.com";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct GcpTarget {
    /// A project ID or number.
    pub project: String,
    /// The region of a regional secret.
    pub location: Option<String>,
    pub secret: String,
    /// `latest`, a version number or an alias.
    pub version: String,
}

impl GcpTarget {
    /// `PROJECT/NAME` or a full resource name,
    /// `projects/P/[locations/L/]secrets/S[/versions/V]`; `?version=` and `?location=`.
    pub fn parse(locator: &str, params: &mut Params) -> Result<GcpTarget> {
        let parts: Vec<&str> = locator.split('/').collect();
        let (project, location, secret, version) = match parts.as_slice() {
            [project, secret] => (*project, None, *secret, None),
            ["projects", project, "secrets", secret] => (*project, None, *secret, None),
            ["projects", project, "secrets", secret, "versions", version] => {
                (*project, None, *secret, Some(*version))
            }
            [
                "projects",
                project,
                "locations",
                location,
                "secrets",
                secret,
            ] => (*project, Some(*location), *secret, None),
            [
                "projects",
                project,
                "locations",
                location,
                "secrets",
                secret,
                "versions",
                version,
            ] => (*project, Some(*location), *secret, Some(*version)),
            _ => bail!(
                "'{locator}' is neither PROJECT/NAME nor a resource name \
                 (projects/PROJECT/[locations/LOCATION/]secrets/NAME[/versions/VERSION])"
            ),
        };
        let version = match (version, params.take_value("version")?) {
            (Some(_), Some(_)) => bail!("the version is in the resource name; drop ?version="),
            (Some(version), None) => version.to_owned(),
            (None, Some(version)) => version,
            (None, None) => "latest".to_owned(),
        };
        let location = match (location, params.take_value("location")?) {
            (Some(_), Some(_)) => bail!("the location is in the resource name; drop ?location="),
            (Some(location), None) => Some(location.to_owned()),
            (None, location) => location,
        };
        validate_project(project)?;
        validate_secret(secret)?;
        validate_version(&version)?;
        if let Some(location) = &location {
            validate_location(location)?;
        }
        Ok(GcpTarget {
            project: project.to_owned(),
            location,
            secret: secret.to_owned(),
            version,
        })
    }

    /// The secret's ID, which names the file by default.
    pub fn short_name(&self) -> String {
        self.secret.clone()
    }

    /// The version's resource name, as the API takes it.
    pub fn resource_name(&self) -> String {
        match &self.location {
            None => format!(
                "projects/{}/secrets/{}/versions/{}",
                self.project, self.secret, self.version
            ),
            Some(location) => format!(
                "projects/{}/locations/{location}/secrets/{}/versions/{}",
                self.project, self.secret, self.version
            ),
        }
    }

    /// Where to send the request: `--gcp-endpoint` when given, else the regional endpoint
    /// for a regional secret, else the global one.
    pub(super) fn endpoint(&self, endpoint_override: Option<&str>) -> String {
        match (endpoint_override, &self.location) {
            (Some(endpoint), _) => endpoint.trim_end_matches('/').to_owned(),
            (None, Some(location)) => {
                format!("https://secretmanager.{location}.rep.googleapis.com")
            }
            (None, None) => GLOBAL_ENDPOINT.to_owned(),
        }
    }
}

/// Project IDs are lowercase letters, digits and hyphens; numbers are digits; legacy
/// domain-scoped IDs add `.` and `:`.
fn validate_project(project: &str) -> Result<()> {
    let valid = (1..=100).contains(&project.len())
        && project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:".contains(c))
        && project.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        bail!("'{project}' is not a Google Cloud project ID or number");
    }
    Ok(())
}

/// Secret IDs are 1–255 characters of `[A-Za-z0-9_-]`.
fn validate_secret(secret: &str) -> Result<()> {
    if secret.is_empty() || secret.len() > 255 {
        bail!("a Secret Manager secret ID has 1 to 255 characters");
    }
    if let Some(bad) = secret
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        bail!("secret ID '{secret}' has {bad:?}; Secret Manager IDs use A-Z a-z 0-9 _ -");
    }
    Ok(())
}

/// `latest`, a version number (1, 2, ...) or an alias.
fn validate_version(version: &str) -> Result<()> {
    let word = (1..=63).contains(&version.len())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let bad_number = version.chars().all(|c| c.is_ascii_digit()) && version.starts_with('0');
    if !word || bad_number {
        bail!("version '{version}' is not 'latest', a version number or an alias");
    }
    Ok(())
}

/// Regions such as `europe-west1`.
fn validate_location(location: &str) -> Result<()> {
    let valid = (1..=63).contains(&location.len())
        && location.starts_with(|c: char| c.is_ascii_lowercase())
        && location
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("'{location}' is not a Google Cloud location such as europe-west1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GcpTarget> {
        let (locator, query) = text.split_once('?').unwrap_or((text, ""));
        let mut params = Params::parse(query)?;
        let target = GcpTarget::parse(locator, &mut params)?;
        params.reject_rest()?;
        Ok(target)
    }

    #[test]
    fn short_and_full_names_mean_the_same_version() {
        let short = parse("my-project/db-password").unwrap();
        assert_eq!(
            short.resource_name(),
            "projects/my-project/secrets/db-password/versions/latest"
        );
        assert_eq!(short.short_name(), "db-password");
        assert_eq!(short.endpoint(None), GLOBAL_ENDPOINT);

        let full = parse("projects/my-project/secrets/db-password/versions/7").unwrap();
        assert_eq!(
            full.resource_name(),
            "projects/my-project/secrets/db-password/versions/7"
        );
        assert_eq!(parse("my-project/db?version=prod").unwrap().version, "prod");
        assert_eq!(
            parse("projects/123456789012/secrets/db").unwrap().version,
            "latest"
        );
    }

    #[test]
    fn regional_secrets_use_the_regional_endpoint_and_name() {
        let by_param = parse("p1/db?location=europe-west1").unwrap();
        let by_name = parse("projects/p1/locations/europe-west1/secrets/db").unwrap();
        assert_eq!(by_param, by_name);
        assert_eq!(
            by_param.resource_name(),
            "projects/p1/locations/europe-west1/secrets/db/versions/latest"
        );
        assert_eq!(
            by_param.endpoint(None),
            "https://secretmanager.europe-west1.rep.googleapis.com"
        );
        assert_eq!(
            by_param.endpoint(Some("http://127.0.0.1:9/")),
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn malformed_references_are_rejected() {
        for bad in [
            "my-project",
            "My-Project/db",
            "p/db password",
            "p/db?version=0",
            "p/db?version=1.5",
            "projects/p/secrets/db/versions/3?version=4",
            "projects/p/locations/eu/secrets/db?location=us",
            "p/db?location=Europe",
            "projects/p/topics/t",
            "p/a/b",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse(&format!("p/{}", "a".repeat(256))).is_err());
    }
}
