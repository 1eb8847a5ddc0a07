//! Google Secret Manager.
//!
//! ```text
//! --secret db=gcp://my-project/db-password                      (version `latest`)
//! --secret gcp://my-project/db-password?version=7               (or ?version=ALIAS)
//! --secret gcp://projects/my-project/secrets/db-password/versions/7
//! --secret gcp://my-project/db-password?location=europe-west1   (a regional secret)
//! --gcp-endpoint https://secretmanager-myendpoint.p.googleapis.com   (Private Service Connect)
//! ```
//!
//! Identity comes from google-cloud-auth's Application Default Credentials, with nothing
//! added: `GOOGLE_APPLICATION_CREDENTIALS` naming an `external_account` configuration
//! (workload identity federation: a projected Kubernetes token file or URL exchanged at
//! Google STS, optionally impersonating a service account), a service-account key (the
//! discouraged last resort) or any other ADC file; else gcloud's application-default file;
//! else the metadata server (GKE Workload Identity, GCE), at `GCE_METADATA_HOST` when set.
//! The identity is resolved once, before any secret is read, and the run logs which source
//! it came from.
//!
//! One client per endpoint is built and reused: the global
//! `https://secretmanager.googleapis.com`, or `https://secretmanager.LOCATION.rep.googleapis.com`
//! for a regional secret, or `--gcp-endpoint` for every secret when given. The client's own
//! retries are off; the core's policy retries `UNAVAILABLE`, `RESOURCE_EXHAUSTED`,
//! `DEADLINE_EXCEEDED` and 5xx, honouring a `RetryInfo` delay or `Retry-After`. A payload
//! whose `dataCrc32c` does not match its bytes is rejected (exit 7), which the official
//! clients do not check. Every request's User-Agent is `secret-sidecar/<version>`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use google_cloud_auth::credentials::{AccessTokenCredentials, Builder as CredentialsBuilder};
use google_cloud_auth::errors::CredentialsError;
use google_cloud_gax::client_builder::internal::with_follow_redirects;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::{Code, StatusDetails};
use google_cloud_gax::options::RequestOptionsBuilder as _;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_secretmanager_v1::client::SecretManagerService;

use super::{
    Fetched, MAX_RESPONSE_BYTES, Provider, ResponseTooLarge, Settings, USER_AGENT,
    certificate_error, certificate_refused, error_chain, is_loopback_host,
};
use crate::exit::Class;
use crate::reference::Params;
use crate::retry::RetryAfter;
use crate::secret::SecretValue;

mod identity;

use identity::Source;
// For the gcp-metadata token source of `--aws-token-source`.
#[cfg(feature = "aws")]
pub(crate) use identity::METADATA_HOST;
pub(crate) use identity::metadata_host_resolves;

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
    fn endpoint(&self, endpoint_override: Option<&str>) -> String {
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

/// Connected Secret Manager clients, one per endpoint.
pub struct Gcp {
    clients: HashMap<String, SecretManagerService>,
    endpoint_override: Option<String>,
}

impl Provider for Gcp {
    type Target = GcpTarget;

    async fn connect(targets: &[&GcpTarget], settings: &Settings) -> Result<Gcp> {
        refuse_unsafe_settings(settings)?;
        let endpoint_override = settings
            .gcp_endpoint
            .as_deref()
            .map(check_endpoint)
            .transpose()
            .context(Class::Usage)?;

        // Resolve the identity once, before any secret is requested, so an identity
        // failure is reported as such and every client shares one token cache.
        let source = Source::discover()?;
        if let Source::Metadata { host, default } = &source
            && *default
        {
            metadata_host_resolves(host).await?;
        }
        let credentials: AccessTokenCredentials = CredentialsBuilder::default()
            .build_access_token_credentials()
            .map_err(|err| anyhow!(scrub(&error_chain(&err))))
            .with_context(|| format!("loading Google credentials ({})", source.describe()))
            .context(Class::Auth)?;
        let mut token = credentials.access_token().await.map_err(|err| {
            credentials_error(&err).context(format!(
                "getting a Google access token ({})",
                source.describe()
            ))
        })?;
        zeroize::Zeroize::zeroize(&mut token.token);
        source.log(settings.attempt_timeout).await;

        let mut clients = HashMap::new();
        for target in targets {
            let endpoint = target.endpoint(endpoint_override.as_deref());
            if clients.contains_key(&endpoint) {
                continue;
            }
            let builder = SecretManagerService::builder()
                .with_endpoint(endpoint.clone())
                .with_credentials(credentials.clone())
                .with_retry_policy(NeverRetry)
                .with_attempt_timeout(settings.attempt_timeout);
            // The client follows redirects unless told not to, and a redirect is never
            // Secret Manager's answer. The switch sits in gax's public `internal` module
            // (hidden from its docs); tests/faults.rs checks it holds.
            let client = with_follow_redirects(builder, false)
                .build()
                .await
                .map_err(|err| anyhow!(scrub(&error_chain(&err))))
                .with_context(|| format!("creating the Secret Manager client for {endpoint}"))
                .context(Class::Internal)?;
            clients.insert(endpoint, client);
        }
        Ok(Gcp {
            clients,
            endpoint_override,
        })
    }

    async fn fetch(&self, target: &GcpTarget) -> Result<Fetched> {
        let client = self
            .clients
            .get(&target.endpoint(self.endpoint_override.as_deref()))
            .context("no client for the secret's endpoint")
            .context(Class::Internal)?;
        let response = client
            .access_secret_version()
            .set_name(target.resource_name())
            .with_user_agent(USER_AGENT)
            .send()
            .await
            .map_err(classify)?;
        // `projects/NUMBER/secrets/S/versions/7`: the number the alias or `latest` resolved to.
        let version = response
            .name
            .rsplit_once("/versions/")
            .map(|(_, version)| version.to_owned());
        let Some(payload) = response.payload else {
            return Err(anyhow!("the response has no payload")).context(Class::BadData);
        };
        // The client reads the whole response before this point (google-cloud-gax offers
        // no hook to stop it sooner; its attempt timeout is what bounds that read), so
        // this only keeps the exit code and the outcome the same as the other providers'.
        if payload.data.len() > MAX_RESPONSE_BYTES {
            return Err(anyhow::Error::new(ResponseTooLarge)).context(Class::BadData);
        }
        let expected = payload.data_crc32c;
        // Zero-copy when the buffer is not shared, so SecretValue zeroes the only copy.
        let value = SecretValue::new(Vec::from(payload.data));
        if let Some(expected) = expected
            && i64::from(crc32c::crc32c(value.expose())) != expected
        {
            // Neither checksum is printed: a CRC says something about the value.
            return Err(anyhow!(
                "the payload does not match its dataCrc32c checksum (corrupted in transit?)"
            ))
            .context(Class::BadData);
        }
        Ok(Fetched { value, version })
    }
}

/// Settings this provider cannot honour safely are usage errors rather than surprises.
fn refuse_unsafe_settings(settings: &Settings) -> Result<()> {
    // The client's own logging prints responses with Debug, secret payloads included.
    if std::env::var("GOOGLE_CLOUD_RUST_LOGGING").is_ok_and(|v| v == "true") {
        return Err(anyhow!(
            "GOOGLE_CLOUD_RUST_LOGGING=true makes the Google client log whole responses, \
             secret payloads included; unset it"
        ))
        .context(Class::Usage);
    }
    // The Google clients build their own HTTPS clients and take no extra roots.
    if let Some(path) = &settings.ca_file {
        return Err(anyhow!(
            "--ca-file {} cannot be applied to the Google clients; point SSL_CERT_FILE at a \
             bundle holding both the system roots and this CA instead",
            path.display()
        ))
        .context(Class::Usage);
    }
    Ok(())
}

/// `--gcp-endpoint` must be an https URL; plain http only to a loopback address, since
/// every request carries an access token.
fn check_endpoint(endpoint: &str) -> Result<String> {
    let loopback = |rest: &str| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match host.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => host,
        };
        is_loopback_host(host)
    };
    match endpoint.split_once("://") {
        Some(("https", rest)) if !rest.is_empty() => Ok(endpoint.to_owned()),
        Some(("http", rest)) if loopback(rest) => Ok(endpoint.to_owned()),
        Some(("http", _)) => bail!(
            "--gcp-endpoint {endpoint}: use https (plain http is accepted only for loopback \
             addresses, since every request carries an access token)"
        ),
        _ => bail!("--gcp-endpoint {endpoint} is not an https:// URL"),
    }
}

/// Tags a Secret Manager error with its exit class, keeping the service's own message.
fn classify(err: GaxError) -> anyhow::Error {
    if certificate_refused(&err) {
        return certificate_error(scrub(&error_chain(&err)));
    }
    let class = error_class(&err);
    let text = if err.is_deserialization() {
        // serde's messages can quote the response, and a response holds the secret.
        "the response could not be parsed (the parser's details are withheld: they can \
         quote the response, which holds the secret)"
            .to_owned()
    } else {
        scrub(&error_chain(&err))
    };
    let mut out = anyhow!(text);
    if class == Class::Transient
        && let Some(wait) = retry_after(&err)
    {
        out = out.context(wait);
    }
    out.context(class)
}

fn error_class(err: &GaxError) -> Class {
    if err.is_authentication() {
        let transient = std::error::Error::source(err)
            .and_then(|source| source.downcast_ref::<CredentialsError>())
            .is_some_and(CredentialsError::is_transient);
        return if transient {
            Class::Transient
        } else {
            Class::Auth
        };
    }
    if let Some(status) = err.status() {
        match status.code {
            Code::NotFound => return Class::NotFound,
            // A version that is disabled or destroyed cannot be read, like a missing one.
            Code::FailedPrecondition => return Class::NotFound,
            Code::PermissionDenied => return Class::Denied,
            Code::Unauthenticated => return Class::Auth,
            Code::ResourceExhausted
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Internal => return Class::Transient,
            Code::InvalidArgument | Code::OutOfRange => return Class::Usage,
            _ => {}
        }
    }
    if let Some(code) = err.http_status_code() {
        return match code {
            408 | 429 | 500..=599 => Class::Transient,
            401 => Class::Auth,
            403 => Class::Denied,
            404 => Class::NotFound,
            _ => Class::Internal,
        };
    }
    if err.is_timeout() || err.is_connect() || err.is_io() || err.is_exhausted() {
        return Class::Transient;
    }
    if err.is_transport() {
        return Class::Transient;
    }
    Class::Internal
}

/// The server's requested delay: a `google.rpc.RetryInfo` detail, else `Retry-After`.
fn retry_after(err: &GaxError) -> Option<RetryAfter> {
    let from_detail = err.status().and_then(|status| {
        status.details.iter().find_map(|detail| match detail {
            StatusDetails::RetryInfo(info) => info
                .retry_delay
                .and_then(|delay| Duration::try_from(delay).ok()),
            _ => None,
        })
    });
    from_detail.map(RetryAfter).or_else(|| {
        err.http_headers()?
            .get("retry-after")?
            .to_str()
            .ok()
            .and_then(RetryAfter::from_header)
    })
}

/// A credential failure: transient ones (a metadata server or STS that is not answering,
/// 5xx) are retried by the core; everything else is an identity failure.
pub(crate) fn credentials_error(err: &CredentialsError) -> anyhow::Error {
    if certificate_refused(err) {
        return certificate_error(scrub(&error_chain(err)));
    }
    let class = match err.is_transient() {
        true => Class::Transient,
        false => Class::Auth,
    };
    anyhow!(scrub(&error_chain(err))).context(class)
}

/// Removes anything shaped like a Google access token (`ya29.…`) or a JWT (`eyJ…` with
/// three dot-separated parts) from text a server sent, in case an error body echoes one.
/// Long outputs are cut, since error bodies are not bounded.
fn scrub(text: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || "-_.~".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let token = word.starts_with("ya29.")
            || (word.starts_with("eyJ") && word.matches('.').count() == 2);
        out.push_str(if token { "<redacted token>" } else { word });
        word.clear();
    };
    for c in text.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    const LIMIT: usize = 600;
    if out.len() > LIMIT {
        let mut cut = LIMIT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GcpTarget> {
        let reference = crate::reference::SecretRef::parse(&format!("gcp://{text}"))?;
        match reference.target {
            super::super::Target::Gcp(target) => Ok(target),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
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

    #[test]
    fn endpoints_must_be_https_except_on_loopback() {
        assert!(check_endpoint("https://secretmanager-x.p.googleapis.com").is_ok());
        assert!(check_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(check_endpoint("http://[::1]:8080/").is_ok());
        assert!(check_endpoint("http://localhost:1").is_ok());
        assert!(check_endpoint("http://10.0.0.1:8080").is_err());
        assert!(check_endpoint("http://127.0.0.1.evil.example").is_err());
        assert!(check_endpoint("secretmanager.googleapis.com").is_err());
    }

    #[test]
    fn errors_map_to_exit_classes() {
        use google_cloud_gax::error::rpc::Status;
        let service = |code: Code| GaxError::service(Status::default().set_code(code));
        assert_eq!(error_class(&service(Code::NotFound)), Class::NotFound);
        assert_eq!(error_class(&service(Code::PermissionDenied)), Class::Denied);
        assert_eq!(error_class(&service(Code::Unauthenticated)), Class::Auth);
        for code in [
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::DeadlineExceeded,
        ] {
            assert_eq!(error_class(&service(code)), Class::Transient, "{code:?}");
        }
        let http = |status: u16| {
            GaxError::http(
                status,
                http::HeaderMap::new(),
                bytes::Bytes::from_static(b"<html>"),
            )
        };
        assert_eq!(error_class(&http(502)), Class::Transient);
        assert_eq!(error_class(&http(404)), Class::NotFound);
        assert_eq!(error_class(&http(418)), Class::Internal);
        assert_eq!(
            error_class(&GaxError::authentication(CredentialsError::from_msg(
                false, "nope"
            ))),
            Class::Auth
        );
        assert_eq!(
            error_class(&GaxError::authentication(CredentialsError::from_msg(
                true, "later"
            ))),
            Class::Transient
        );
    }

    #[test]
    fn retry_after_comes_from_retry_info_or_the_header() {
        let mut headers = http::HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        let err = GaxError::http(429, headers, bytes::Bytes::new());
        assert_eq!(retry_after(&err), Some(RetryAfter(Duration::from_secs(3))));

        let body = bytes::Bytes::from_static(
            br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED",
                "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2s"}]}}"#,
        );
        let status = google_cloud_gax::error::rpc::Status::try_from(&body).unwrap();
        let err = GaxError::service(status);
        assert_eq!(retry_after(&err), Some(RetryAfter(Duration::from_secs(2))));
    }

    #[test]
    fn scrub_removes_tokens_and_keeps_names() {
        let text = "failed to exchange token, body=<{\"error\":\"invalid_grant\",\
                    \"token\":\"eyJhbGciOi.eyJzdWIiOi.c2ln\"}> bearer ya29.a0AfB_xyz \
                    projects/my-project/secrets/db-password sa@p.iam.gserviceaccount.com";
        let clean = scrub(text);
        assert!(!clean.contains("eyJhbGciOi"), "{clean}");
        assert!(!clean.contains("ya29."), "{clean}");
        assert!(clean.contains("invalid_grant"), "{clean}");
        assert!(
            clean.contains("projects/my-project/secrets/db-password"),
            "{clean}"
        );
        assert!(clean.contains("sa@p.iam.gserviceaccount.com"), "{clean}");
        assert!(scrub(&"x ".repeat(1000)).chars().count() <= 601);
    }
}
