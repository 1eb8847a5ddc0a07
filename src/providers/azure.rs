//! Azure Key Vault secrets.
//!
//! ```text
//! --secret db=azure://my-vault/db-password                  https://my-vault.vault.azure.net
//! --secret azure://my-vault/db?version=0123456789abcdef0123456789abcdef#password
//! --secret azure://https://my-vault.vault.azure.cn/secrets/db[/VERSION]   (any host, any port)
//! --azure-cloud china|usgov      the short form's vault suffix (default: AZURE_AUTHORITY_HOST's)
//! --azure-credential auto|workload|managed|developer                     (default auto)
//! --azure-skip-challenge-resource-check   private-endpoint aliases, custom DNS names, tests
//! ```
//!
//! Identity, with `--azure-credential auto`:
//! - **workload identity** when `AZURE_FEDERATED_TOKEN_FILE` is set (AKS injects it with
//!   `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and `AZURE_AUTHORITY_HOST`): the projected token is
//!   exchanged at Entra ID (`POST {AZURE_AUTHORITY_HOST}/{tenant}/oauth2/v2.0/token`,
//!   client-assertion grant) by azure_identity's `ClientAssertionCredential`. The assertion
//!   is ours: the file is read at every exchange and ASCII whitespace around the token is
//!   removed, because Entra rejects a padded JWT (AADSTS50027) and a hand-made file often
//!   ends in a newline. A half-configured set of variables is an identity error, never a
//!   silent fall-back to another identity;
//! - otherwise **managed identity** (App Service / Functions through `IDENTITY_ENDPOINT` +
//!   `IDENTITY_HEADER`, else the instance metadata service), user-assigned when
//!   `AZURE_CLIENT_ID` is set.
//!
//! The developer chain (Azure CLI, then Azure Developer CLI) is used only when asked for
//! with `--azure-credential developer`. The run logs which credential it selected and, at
//! the first token, for which scope and how long it lasts; never a token.
//!
//! Key Vault names the token's audience in its 401 challenge, and the SDK accepts a
//! challenge only for a resource whose domain the vault host ends in
//! (`verify_challenge_resource`). A vault reached under another name needs
//! `--azure-skip-challenge-resource-check`; it then gets a token for whatever resource the
//! server names, so it is never on by default.
//!
//! One `SecretClient` per vault, reused for every secret in it, over one rustls
//! `reqwest::Client` (the platform's roots, which `SSL_CERT_FILE` replaces, plus
//! `--ca-file`; `HTTPS_PROXY`/`NO_PROXY` honoured). The SDK's retries are off and every
//! request's User-Agent ends in `secret-sidecar/<version>`. Credentials live in
//! `azure/identity.rs`; the set-up on Azure's side is in `docs/azure.md`.

mod identity;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, Result, anyhow, bail};
use azure_core::Bytes;
use azure_core::credentials::TokenCredential;
use azure_core::error::{Error as AzureError, ErrorKind, ErrorResponse};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    AsyncRawResponse, ClientOptions, Context, HttpClient, RawResponse, Request, RetryOptions,
    Transport, Url, headers,
};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures_util::StreamExt as _;
use tracing::info;
use zeroize::Zeroize;

use super::{
    Fetched, MAX_RESPONSE_BYTES, Provider, ResponseTooLarge, Settings, certificate_error,
    certificate_refused, error_chain, user_agent,
};
use crate::cli::AzureCloud;
use crate::exit::Class;
use crate::reference::Params;
use crate::retry::RetryAfter;
use crate::secret::SecretValue;
use identity::{Identity, Reported, credential, entra_advice};

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
}

pub fn vault_suffix(cloud: AzureCloud) -> &'static str {
    match cloud {
        AzureCloud::Public => "vault.azure.net",
        AzureCloud::China => "vault.azure.cn",
        AzureCloud::Usgov => "vault.usgovcloudapi.net",
    }
}

/// The sovereign cloud an Entra authority host belongs to, for the vault suffix.
fn cloud_of(authority_host: &str) -> Option<AzureCloud> {
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

/// Connected Key Vault clients, one per vault, sharing one credential.
pub struct Azure {
    clients: HashMap<String, SecretClient>,
    cloud: AzureCloud,
    identity: Arc<Identity>,
}

impl Provider for Azure {
    type Target = AzureTarget;

    async fn connect(targets: &[&AzureTarget], settings: &Settings) -> Result<Azure> {
        let options = &settings.azure;
        let cloud = options
            .azure_cloud
            .or_else(|| {
                std::env::var("AZURE_AUTHORITY_HOST")
                    .ok()
                    .and_then(|host| cloud_of(&host))
            })
            .unwrap_or_default();
        let client_options = client_options(settings)?;
        let (credential, identity) = credential(options.azure_credential, cloud, &client_options)?;
        info!(
            credential = %identity.kind,
            using = %identity.inputs,
            "Azure credential selected"
        );
        let identity = Arc::new(identity);
        let credential: Arc<dyn TokenCredential> =
            Arc::new(Reported::new(credential, identity.kind));

        let mut clients = HashMap::new();
        for target in targets {
            let url = target.vault_url(cloud);
            if clients.contains_key(&url) {
                continue;
            }
            let client = SecretClient::new(
                &url,
                credential.clone(),
                Some(SecretClientOptions {
                    client_options: client_options.clone(),
                    verify_challenge_resource: Some(!options.azure_skip_challenge_resource_check),
                    ..Default::default()
                }),
            )
            .map_err(|err| anyhow!(error_chain(&err)))
            .with_context(|| format!("vault {url}"))
            .context(Class::Usage)?;
            clients.insert(url, client);
        }
        Ok(Azure {
            clients,
            cloud,
            identity,
        })
    }

    async fn fetch(&self, target: &AzureTarget) -> Result<Fetched> {
        let url = target.vault_url(self.cloud);
        let client = self
            .clients
            .get(&url)
            .context("no client for the secret's vault")
            .context(Class::Internal)?;
        let options = SecretClientGetSecretOptions {
            secret_version: target.version.clone(),
            ..Default::default()
        };
        let response = client
            .get_secret(&target.name, Some(options))
            .await
            .map_err(|err| classify(&err, &self.identity))?;
        bundle(response.into_body().into())
    }
}

/// The secret bundle's fields this program reads. The body is parsed here rather than by
/// the SDK so that a malformed answer is reported without quoting it: serde's messages
/// can include the value that did not fit.
#[derive(serde::Deserialize)]
struct Bundle {
    value: Option<String>,
    id: Option<String>,
}

fn bundle(body: Bytes) -> Result<Fetched> {
    let parsed = serde_json::from_slice::<Bundle>(&body);
    // Best effort: the HTTP stack's own buffers are out of reach, this copy is not.
    if let Ok(mut owned) = body.try_into_mut() {
        owned.as_mut().zeroize();
    }
    let bundle = parsed
        .map_err(|err| {
            anyhow!(
                "the answer is not a Key Vault secret bundle (JSON {:?} error at line {} column {})",
                err.classify(),
                err.line(),
                err.column()
            )
        })
        .context(Class::Internal)?;
    let version = bundle
        .id
        .as_deref()
        .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
        .map(str::to_owned);
    let value = bundle
        .value
        .ok_or_else(|| anyhow!("the secret bundle has no value"))
        .context(Class::BadData)?;
    Ok(Fetched {
        value: SecretValue::from_string(value),
        version,
    })
}

/// The reqwest client every Azure request goes through, Entra ID's included.
fn client_options(settings: &Settings) -> Result<ClientOptions> {
    let http = crate::https::client(settings.attempt_timeout, settings.ca_file.as_deref())
        .context("for Azure")?;
    Ok(ClientOptions {
        transport: Some(Transport::new(Arc::new(Limited(http)))),
        // One attempt per call: the core's retry policy repeats transient failures.
        retry: RetryOptions::none(),
        per_try_policies: vec![Arc::new(UserAgentSuffix)],
        ..Default::default()
    })
}

/// Appends `secret-sidecar/<version>` to the SDK's User-Agent, on every attempt.
#[derive(Debug)]
struct UserAgentSuffix;

#[async_trait::async_trait]
impl Policy for UserAgentSuffix {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        // Key Vault's challenge policy sends the same request again once it has a token;
        // `user_agent` does not append the suffix twice.
        let agent = user_agent(request.headers().get_optional_str(&headers::USER_AGENT));
        request.insert_header(headers::USER_AGENT, agent);
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The transport: reqwest, with every response body (Key Vault's, Entra ID's, a managed
/// identity endpoint's) capped at [`MAX_RESPONSE_BYTES`] while it streams in.
///
/// It has to be the transport, not a policy: the SDK's pipeline reads each response whole
/// in its last step, the transport policy, so a policy would see a body only once it had
/// been read to its end, however long that is (tests/faults.rs streams one without end).
#[derive(Debug)]
struct Limited(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for Limited {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let (status, headers, body) = self.0.execute_request(request).await?.deconstruct();
        let mut total = 0usize;
        let limited = body.map(move |chunk| {
            let chunk = chunk?;
            total = total.saturating_add(chunk.len());
            match total > MAX_RESPONSE_BYTES {
                true => Err(AzureError::new(ErrorKind::DataConversion, ResponseTooLarge)),
                false => Ok(chunk),
            }
        });
        Ok(AsyncRawResponse::new(status, headers, Box::pin(limited)))
    }
}

/// Tags an SDK error with its exit class and gives it a one-line, `Display`-only text
/// that never quotes a response body the service did not shape as an error.
fn classify(err: &AzureError, identity: &Identity) -> anyhow::Error {
    if certificate_refused(err) {
        return certificate_error(error_chain(err));
    }
    let verdict = Verdict::of(err);
    let mut text = match verdict.http {
        // Key Vault's own error: status, code and message, parsed from the JSON error.
        Some((status, raw)) if !verdict.credential => describe_http(status, raw),
        _ => error_chain(err),
    };
    if verdict.challenge_mismatch {
        // The SDK's message names its own option; name ours instead.
        text = format!(
            "{}: the vault's authentication challenge names a resource outside the vault's \
             domain. If this host is a private-endpoint alias, a custom DNS name or a test \
             server, and only then, pass --azure-skip-challenge-resource-check",
            text.split(". Set verify_challenge_resource")
                .next()
                .unwrap_or(&text)
        );
    }
    if verdict.class == Class::Auth {
        text.push_str(&format!(
            " (credential: {} with {}",
            identity.kind, identity.inputs
        ));
        if let Some(advice) = verdict.entra_code.as_deref().and_then(entra_advice) {
            text.push_str("; check: ");
            text.push_str(advice);
        }
        if identity.trimmed.load(Ordering::Relaxed) {
            text.push_str(
                "; note: the token file had whitespace around the token, which was removed \
                 before sending",
            );
        }
        text.push(')');
    }
    let mut text = text.replace(['\r', '\n'], " ");
    while text.contains("  ") {
        text = text.replace("  ", " ");
    }
    let mut error = anyhow!(text);
    if let Some(wait) = verdict.retry_after {
        error = error.context(wait);
    }
    error.context(verdict.class)
}

/// What an error chain says, read from the SDK's typed error kinds.
struct Verdict<'e> {
    class: Class,
    /// The error came from the credential (Entra ID, managed identity, a CLI).
    credential: bool,
    http: Option<(u16, Option<&'e RawResponse>)>,
    entra_code: Option<String>,
    retry_after: Option<RetryAfter>,
    challenge_mismatch: bool,
}

impl<'e> Verdict<'e> {
    fn of(err: &'e AzureError) -> Verdict<'e> {
        let mut credential = false;
        let mut http = None;
        let mut entra_code = None;
        let mut transport = false;
        let mut too_large = false;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(current) = cause {
            too_large |= current.is::<ResponseTooLarge>();
            if let Some(azure) = current.downcast_ref::<AzureError>() {
                match azure.kind() {
                    ErrorKind::Credential => credential = true,
                    ErrorKind::Connection | ErrorKind::Io => transport = true,
                    ErrorKind::HttpResponse {
                        status,
                        error_code,
                        raw_response,
                    } if http.is_none() => {
                        http = Some((u16::from(*status), raw_response.as_deref()));
                        entra_code = error_code.clone();
                    }
                    _ => {}
                }
            }
            cause = current.source();
        }
        // The only typed trace of a refused challenge is its message (azure_security_keyvault_*
        // 1.0 returns ErrorKind::Other); it is matched only to improve the hint.
        let challenge_mismatch = matches!(err.kind(), ErrorKind::Other)
            && err.to_string().contains("verify_challenge_resource");
        let retry_after = http
            .and_then(|(_, raw)| raw)
            .and_then(|raw| raw.headers().get_optional_str(&headers::RETRY_AFTER))
            .and_then(RetryAfter::from_header);
        let class = match http.map(|(status, _)| status) {
            _ if too_large => Class::BadData,
            Some(429 | 500..=599) => Class::Transient,
            _ if transport => Class::Transient,
            _ if credential => Class::Auth,
            _ if challenge_mismatch => Class::Usage,
            Some(404) => Class::NotFound,
            Some(403) => Class::Denied,
            Some(401) => Class::Auth,
            Some(400)
                if kv_code(http.and_then(|(_, raw)| raw)).as_deref() == Some("BadParameter") =>
            {
                Class::Usage
            }
            _ => Class::Internal,
        };
        Verdict {
            class,
            credential,
            http,
            entra_code: entra_code.filter(|_| credential),
            retry_after,
            challenge_mismatch,
        }
    }
}

fn kv_code(raw: Option<&RawResponse>) -> Option<String> {
    let body: ErrorResponse = serde_json::from_slice(raw?.body()).ok()?;
    body.error?.code
}

/// `403 Forbidden (AccessDenied): The user, group or application ... does not have secrets
/// get permission ...`; a body that is not Key Vault's JSON error is not shown.
fn describe_http(status: u16, raw: Option<&RawResponse>) -> String {
    let parsed: Option<ErrorResponse> = raw.and_then(|raw| serde_json::from_slice(raw.body()).ok());
    match parsed.and_then(|body| body.error) {
        Some(detail) => {
            let mut codes = Vec::new();
            codes.extend(detail.code.clone());
            let mut inner = detail.inner_error.as_ref();
            while let Some(current) = inner {
                codes.extend(current.code.clone());
                inner = current.inner_error.as_deref();
            }
            format!(
                "HTTP {status} {}: {}",
                codes.join("/"),
                detail.message.as_deref().unwrap_or("(no message)")
            )
        }
        None => format!(
            "HTTP {status} with a body that is not a Key Vault error ({} bytes, not shown)",
            raw.map_or(0, |raw| raw.body().len())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::StatusCode;
    use azure_core::http::headers::Headers;

    fn parse(text: &str) -> Result<AzureTarget> {
        AzureTarget::parse(text, &mut Params::default())
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

    fn raw(status: u16, headers: &[(&'static str, &str)], body: &str) -> RawResponse {
        let mut map = Headers::new();
        for (name, value) in headers {
            map.insert(*name, value.to_string());
        }
        RawResponse::from_bytes(StatusCode::from(status), map, body.to_owned())
    }

    fn http_error(status: u16, headers: &[(&'static str, &str)], body: &str) -> AzureError {
        AzureError::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::from(status),
                error_code: None,
                raw_response: Some(Box::new(raw(status, headers, body))),
            },
            "message",
        )
    }

    fn identity() -> Identity {
        Identity {
            kind: "WorkloadIdentity",
            inputs: "token file /t for client c in tenant t at https://login".into(),
            trimmed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    #[test]
    fn key_vault_answers_map_to_exit_classes() {
        let not_found = r#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) db was not found in this key vault."}}"#;
        let err = classify(&http_error(404, &[], not_found), &identity());
        assert_eq!(Class::of(&err), Class::NotFound);
        assert_eq!(
            format!("{err:#}"),
            "secret not found: HTTP 404 SecretNotFound: A secret with (name/id) db was not found in this key vault."
        );

        let forbidden = r#"{"error":{"code":"Forbidden","message":"not\r\nallowed","innererror":{"code":"AccessDenied"}}}"#;
        let err = classify(&http_error(403, &[], forbidden), &identity());
        assert_eq!(Class::of(&err), Class::Denied);
        assert!(format!("{err:#}").ends_with("HTTP 403 Forbidden/AccessDenied: not allowed"));

        let err = classify(&http_error(429, &[("retry-after", "7")], "{}"), &identity());
        assert_eq!(Class::of(&err), Class::Transient);
        assert_eq!(
            err.downcast_ref::<RetryAfter>(),
            Some(&RetryAfter(std::time::Duration::from_secs(7)))
        );
        assert_eq!(
            Class::of(&classify(&http_error(503, &[], ""), &identity())),
            Class::Transient
        );
        assert_eq!(
            Class::of(&classify(&http_error(401, &[], ""), &identity())),
            Class::Auth
        );
        assert_eq!(
            Class::of(&classify(&http_error(418, &[], ""), &identity())),
            Class::Internal
        );
        let bad = r#"{"error":{"code":"BadParameter","message":"bad version"}}"#;
        assert_eq!(
            Class::of(&classify(&http_error(400, &[], bad), &identity())),
            Class::Usage
        );

        let connection = AzureError::with_message(ErrorKind::Connection, "refused");
        assert_eq!(
            Class::of(&classify(&connection, &identity())),
            Class::Transient
        );
    }

    #[test]
    fn bodies_that_are_not_key_vault_errors_are_never_quoted() {
        let err = classify(
            &http_error(502, &[], "<html>sentinel-body</html>"),
            &identity(),
        );
        let text = format!("{err:#}");
        assert!(!text.contains("sentinel-body"), "{text}");
        assert!(text.contains("HTTP 502"), "{text}");
    }

    #[test]
    fn entra_rejections_are_identity_failures_with_advice() {
        let entra = AzureError::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::BadRequest,
                error_code: Some("700211".into()),
                raw_response: None,
            },
            "AADSTS700211: No matching federated identity record found for presented assertion issuer.",
        );
        let err = AzureError::with_error(
            ErrorKind::Credential,
            entra,
            "ClientAssertionCredential authentication failed.",
        );
        let err = classify(&err, &identity());
        assert_eq!(Class::of(&err), Class::Auth);
        let text = format!("{err:#}");
        assert!(text.contains("AADSTS700211"), "{text}");
        assert!(text.contains("OIDC issuer"), "{text}");
        assert!(text.contains("whitespace"), "{text}");

        // Entra throttled or down: the core retries.
        let busy = AzureError::with_error(
            ErrorKind::Credential,
            http_error(503, &[("retry-after", "2")], "{}"),
            "ClientAssertionCredential authentication failed.",
        );
        let err = classify(&busy, &identity());
        assert_eq!(Class::of(&err), Class::Transient);
        assert!(err.downcast_ref::<RetryAfter>().is_some());
    }

    #[test]
    fn bundles_give_value_and_version_and_never_quote_bad_ones() {
        let fetched = bundle(Bytes::from_static(
            br#"{"value":"v","id":"https://h/secrets/db/abc123","attributes":{"enabled":true}}"#,
        ))
        .unwrap();
        assert_eq!(fetched.value.expose(), b"v");
        assert_eq!(fetched.version.as_deref(), Some("abc123"));

        let Err(err) = bundle(Bytes::from_static(br#"{"value":{"sentinel-body":1}}"#)) else {
            panic!("a value that is not a string was accepted");
        };
        assert!(!format!("{err:#}").contains("sentinel"), "{err:#}");
        assert_eq!(Class::of(&err), Class::Internal);
        let Err(err) = bundle(Bytes::from_static(br#"{"id":"x"}"#)) else {
            panic!("a bundle without a value was accepted");
        };
        assert_eq!(Class::of(&err), Class::BadData);
    }
}
