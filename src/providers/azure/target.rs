//! `azure://VAULT/NAME[?version=V]` and `azure://https://HOST[:PORT]/secrets/NAME[/V]`:
//! the Key Vault part of a reference, read without any SDK, and the vault URL it means.

use anyhow::{Result, anyhow, bail};
use azure_core::http::Url;

use crate::identity::azure::AzureCloud;
use crate::providers::Params;

/// Where the secret lives: a vault name (public or `--azure-cloud` suffix) or a vault URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Vault {
    Name(String),
    /// `https://host[:port]`, as written (host lower-cased), without a trailing slash.
    Url(String),
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AzureTarget {
    pub vault: Vault,
    pub name: String,
    /// `None` is the latest version.
    pub version: Option<String>,
}

impl AzureTarget {
    /// `VAULT/NAME` or `https://HOST[:PORT]/secrets/NAME[/VERSION]`; `?version=` either way.
    pub fn parse(locator: &str, params: &mut Params) -> Result<AzureTarget> {
        let param_version = params.take_value("version")?;
        let (vault, name, url_version) = if locator.contains("://") {
            parse_identifier(locator)?
        } else {
            let Some((vault, name)) = locator.split_once('/') else {
                bail!("'{locator}' is not VAULT/NAME or https://HOST/secrets/NAME[/VERSION]");
            };
            validate_vault_name(vault)?;
            (Vault::Name(vault.to_ascii_lowercase()), name, None)
        };
        validate_secret_name(name)?;
        let version = match (url_version, param_version) {
            (Some(_), Some(_)) => bail!("give the version in the URL or as ?version=, not both"),
            (Some(version), None) | (None, Some(version)) => {
                validate_version(&version)?;
                Some(version)
            }
            (None, None) => None,
        };
        Ok(AzureTarget {
            vault,
            name: name.to_owned(),
            version,
        })
    }

    pub fn short_name(&self) -> String {
        self.name.clone()
    }

    /// The vault's URL, the short form resolved with the cloud's vault suffix.
    pub fn vault_url(&self, cloud: AzureCloud) -> String {
        match &self.vault {
            Vault::Url(url) => url.clone(),
            Vault::Name(name) => format!("https://{name}.{}", vault_suffix(cloud)),
        }
    }

    /// The token scope Key Vault's challenge will name for this secret's vault, where the
    /// SDK would accept it: the vault resource of the cloud whose suffix the host ends in.
    /// A host outside the known suffixes (a private-endpoint alias, a custom name, a test
    /// server) is accepted only with the challenge check off (`check` false), and then
    /// assumed to answer for the run's cloud; with the check on, the SDK would refuse the
    /// challenge, so there is no scope to ask for.
    pub fn token_scope(&self, cloud: AzureCloud, check: bool) -> Option<String> {
        let url = self.vault_url(cloud);
        let host = Url::parse(&url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_default();
        let known = [AzureCloud::Public, AzureCloud::China, AzureCloud::Usgov]
            .into_iter()
            .map(vault_suffix)
            .find(|suffix| host.ends_with(&format!(".{suffix}")));
        let suffix = match (known, check) {
            (Some(suffix), _) => suffix,
            (None, false) => vault_suffix(cloud),
            (None, true) => return None,
        };
        Some(format!("https://{suffix}/.default"))
    }
}

pub fn vault_suffix(cloud: AzureCloud) -> &'static str {
    match cloud {
        AzureCloud::Public => "vault.azure.net",
        AzureCloud::China => "vault.azure.cn",
        AzureCloud::Usgov => "vault.usgovcloudapi.net",
    }
}

/// The sovereign cloud an Entra authority host belongs to, for the vault suffix.
pub(super) fn cloud_of(authority_host: &str) -> Option<AzureCloud> {
    let host = Url::parse(authority_host)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    match host.as_str() {
        "login.microsoftonline.com" => Some(AzureCloud::Public),
        "login.chinacloudapi.cn" | "login.partner.microsoftonline.cn" => Some(AzureCloud::China),
        "login.microsoftonline.us" => Some(AzureCloud::Usgov),
        _ => None,
    }
}

/// `https://HOST[:PORT]/secrets/NAME[/VERSION]`, Key Vault's own secret identifier.
fn parse_identifier(locator: &str) -> Result<(Vault, &str, Option<String>)> {
    let shape = "a secret identifier is https://HOST[:PORT]/secrets/NAME[/VERSION]";
    let url = Url::parse(locator).map_err(|err| anyhow!("'{locator}': {err}; {shape}"))?;
    if url.scheme() != "https" || !locator.starts_with("https://") {
        bail!("'{locator}': Key Vault is only reached over https; {shape}");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("'{locator}': a vault URL carries no user or password");
    }
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("'{locator}' has no host; {shape}"))?;
    let vault = match url.port() {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    };
    // The name and version are taken from the text, not the parsed path, so that nothing
    // the URL parser normalises (dots, percent signs) slips past the name checks.
    let after_scheme = &locator["https://".len()..];
    let (authority, path) =
        after_scheme.split_at(after_scheme.find('/').unwrap_or(after_scheme.len()));
    if authority.is_empty() || authority.contains(['@', '\\']) {
        bail!("'{locator}' has no host; {shape}");
    }
    let mut segments = path.trim_end_matches('/').split('/').skip(1);
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("secrets"), Some(name), version, None) => {
            Ok((Vault::Url(vault), name, version.map(str::to_owned)))
        }
        _ => bail!("'{locator}' does not name a secret; {shape}"),
    }
}

/// Vault names: 3–24 of `[A-Za-z0-9-]`, starting with a letter, ending with a letter or
/// digit, no `--`.
fn validate_vault_name(name: &str) -> Result<()> {
    let ok = (3..=24).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("--");
    if !ok {
        bail!(
            "'{name}' is not a Key Vault name (3-24 letters, digits and single hyphens, \
             starting with a letter); for another host give https://HOST/secrets/NAME"
        );
    }
    Ok(())
}

/// Secret names: 1–127 of `[A-Za-z0-9-]`.
fn validate_secret_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 127 {
        bail!(
            "a Key Vault secret name has 1 to 127 characters, not {}",
            name.len()
        );
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        bail!("secret name '{name}' has {bad:?}; Key Vault names use A-Z a-z 0-9 and -");
    }
    Ok(())
}

/// Versions are 32 hexadecimal characters; accept any short alphanumeric id.
fn validate_version(version: &str) -> Result<()> {
    if version.is_empty()
        || version.len() > 64
        || !version.chars().all(|c| c.is_ascii_alphanumeric())
    {
        bail!("'{version}' is not a Key Vault secret version (32 hexadecimal characters)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AzureTarget> {
        AzureTarget::parse(text, &mut Params::default())
    }

    #[test]
    fn token_scope_follows_the_vault_hosts_cloud() {
        let scope = |text: &str, cloud, check| parse(text).unwrap().token_scope(cloud, check);
        let public = Some("https://vault.azure.net/.default".to_owned());
        assert_eq!(scope("my-vault/db", AzureCloud::Public, true), public);
        let china = Some("https://vault.azure.cn/.default".to_owned());
        assert_eq!(scope("my-vault/db", AzureCloud::China, true), china);
        let cn = "https://my-vault.vault.azure.cn/secrets/db";
        assert_eq!(scope(cn, AzureCloud::Public, true), china);
        // Another host: the SDK refuses its challenge unless the check is off, and then
        // it is taken to answer for the run's cloud.
        let local = "https://127.0.0.1:8443/secrets/db";
        assert_eq!(scope(local, AzureCloud::Public, true), None);
        assert_eq!(scope(local, AzureCloud::Public, false), public);
        let alias = "https://secrets.internal.example/secrets/db";
        let usgov = Some("https://vault.usgovcloudapi.net/.default".to_owned());
        assert_eq!(scope(alias, AzureCloud::Usgov, false), usgov);
    }

    #[test]
    fn short_form_resolves_to_the_clouds_vault_suffix() {
        let target = parse("My-Vault/db-password").unwrap();
        assert_eq!(target.vault, Vault::Name("my-vault".into()));
        assert_eq!(target.short_name(), "db-password");
        assert_eq!(target.version, None);
        assert_eq!(
            target.vault_url(AzureCloud::Public),
            "https://my-vault.vault.azure.net"
        );
        assert_eq!(
            target.vault_url(AzureCloud::China),
            "https://my-vault.vault.azure.cn"
        );
        assert_eq!(
            target.vault_url(AzureCloud::Usgov),
            "https://my-vault.vault.usgovcloudapi.net"
        );
    }

    #[test]
    fn the_authority_host_names_the_cloud() {
        assert_eq!(
            cloud_of("https://login.chinacloudapi.cn/"),
            Some(AzureCloud::China)
        );
        assert_eq!(
            cloud_of("https://login.microsoftonline.us"),
            Some(AzureCloud::Usgov)
        );
        assert_eq!(
            cloud_of("https://LOGIN.microsoftonline.com/"),
            Some(AzureCloud::Public)
        );
        assert_eq!(cloud_of("https://127.0.0.1:8443/"), None);
        assert_eq!(cloud_of("not a url"), None);
    }

    #[test]
    fn secret_identifiers_name_host_port_and_version() {
        let target = parse(
            "https://Vault.Privatelink.example:8443/secrets/db/0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        assert_eq!(
            target.vault,
            Vault::Url("https://vault.privatelink.example:8443".into())
        );
        assert_eq!(target.name, "db");
        assert_eq!(
            target.version.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            parse("https://v.vault.azure.net/secrets/db/")
                .unwrap()
                .version,
            None
        );
        let mut params = Params::default();
        assert!(AzureTarget::parse("vault1/db", &mut params).is_ok());
    }

    #[test]
    fn malformed_references_are_rejected() {
        for bad in [
            "vault",
            "ab/db",
            "1vault/db",
            "my--vault/db",
            "vault-/db",
            "my-vault/",
            "my-vault/db_password",
            "my-vault/a/b",
            "http://v.vault.azure.net/secrets/db",
            "https://v.vault.azure.net/keys/db",
            "https://v.vault.azure.net/secrets",
            "https://v.vault.azure.net/secrets/db/v1/extra",
            "https://v.vault.azure.net/secrets/../db",
            "https://user:pw@v.vault.azure.net/secrets/db",
            "https:///secrets/db",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse(&format!("vault/{}", "a".repeat(128))).is_err());
    }
}
