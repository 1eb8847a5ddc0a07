//! AWS Secrets Manager.
//!
//! ```text
//! --secret db=aws://prod/db#password
//! --secret aws://arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/tls-AbCdEf
//! --secret aws://prod/db?version-stage=AWSPREVIOUS      (or ?version-id=UUID)
//! ```
//!
//! Identity comes from aws-config's default chain with nothing added: static keys in the
//! environment, IRSA (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, the token file re-read
//! on every exchange), EKS Pod Identity (`AWS_CONTAINER_CREDENTIALS_FULL_URI` +
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`), the ECS task role, shared profiles, and
//! instance metadata. `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_SECRETS_MANAGER` are honoured
//! by the SDK (that is how LocalStack is reached).
//!
//! The region is the one in an ARN, else the environment's or the profile's. One client is
//! built per region and reused for every secret in it. Every request carries a
//! `secret-sidecar/<version>` User-Agent suffix so CloudTrail can attribute the calls.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;

use anyhow::{Context, Result, anyhow, bail};
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_secretsmanager::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_smithy_types::body::SdkBody;
use tracing::{debug, info};

use super::{
    Fetched, MAX_RESPONSE_BYTES, Provider, ResponseTooLarge, Settings, certificate_error,
    certificate_refused, error_chain, user_agent,
};
use crate::cli::AwsBatch;
use crate::exit::Class;
use crate::reference::Params;
use crate::retry::RetryAfter;
use crate::secret::SecretValue;

mod web_identity;

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

/// Connected Secrets Manager clients, one per region.
pub struct Aws {
    clients: HashMap<String, Client>,
    /// The region of targets that are plain names.
    default_region: Option<String>,
    batch: AwsBatch,
    /// Secrets read ahead by BatchGetSecretValue, by `SecretId`, each taken once.
    prefetched: RefCell<HashMap<String, Fetched>>,
}

impl Provider for Aws {
    type Target = AwsTarget;

    async fn connect(targets: &[&AwsTarget], settings: &Settings) -> Result<Aws> {
        // One attempt per call: the core's retry policy repeats transient failures.
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(path) = &settings.ca_file {
            loader = loader.http_client(http_client_trusting(path)?);
        } else if plain_http_only(&|name| std::env::var(name).ok()) {
            // LocalStack and other local endpoints: skip loading and parsing the system's
            // CA store for a TLS connection that will never be made.
            loader = loader.http_client(aws_smithy_http_client::Builder::new().build_http());
        }
        let mut loader = loader.retry_config(RetryConfig::disabled()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(settings.attempt_timeout)
                .operation_attempt_timeout(settings.attempt_timeout)
                .build(),
        );
        // When every secret is an ARN and the environment names no region, take the
        // region from the ARN rather than probing profiles and instance metadata for one.
        let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        if !env_region
            && targets.iter().all(|t| t.region.is_some())
            && let Some(region) = targets.iter().find_map(|t| t.region.clone())
        {
            loader = loader.region(Region::new(region));
        }
        if settings.aws_token.is_some() {
            // The token source replaces the default chain: no profile, container or
            // instance-metadata probing for credentials that will not be used.
            loader = loader.no_credentials();
        }
        let shared = loader.load().await;
        let default_region = shared.region().map(|r| r.to_string());

        // Resolve the identity once for every regional client: one STS exchange per run,
        // and an identity failure is reported as such before any secret is requested.
        let credentials = match &settings.aws_token {
            Some(source) => web_identity::assume_role(&shared, source, settings).await?,
            None => shared
                .credentials_provider()
                .ok_or_else(|| anyhow!("no AWS credentials provider is configured"))
                .context(Class::Auth)?
                .provide_credentials()
                .await
                .map_err(|err| {
                    if certificate_refused(&err) {
                        return certificate_error(error_chain(&err))
                            .context(format!("loading AWS credentials{}", identity_hint()));
                    }
                    let class = credentials_class(&err).unwrap_or(Class::Auth);
                    anyhow!(error_chain(&err))
                        .context(format!("loading AWS credentials{}", identity_hint()))
                        .context(class)
                })?,
        };
        info!(
            source = %credential_source(&credentials),
            expires_in_s = credentials
                .expiry()
                .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
                .map(|left| left.as_secs()),
            "AWS identity loaded"
        );

        let mut clients = HashMap::new();
        for target in targets {
            let region = match (&target.region, &default_region) {
                (Some(region), _) | (None, Some(region)) => region.clone(),
                (None, None) => {
                    return Err(anyhow!(
                        "no AWS region for '{}': set AWS_REGION or use the secret's ARN",
                        target.secret_id
                    ))
                    .context(Class::Usage);
                }
            };
            clients.entry(region.clone()).or_insert_with(|| {
                let config = aws_sdk_secretsmanager::config::Builder::from(&shared)
                    .region(Region::new(region))
                    .credentials_provider(credentials.clone())
                    .interceptor(UserAgentSuffix)
                    .interceptor(ResponseLimit)
                    .build();
                Client::from_conf(config)
            });
        }
        Ok(Aws {
            clients,
            default_region,
            batch: settings.aws_batch,
            prefetched: RefCell::default(),
        })
    }

    /// Reads the current versions of a region's secrets 20 per BatchGetSecretValue call
    /// (the API's limit), the calls in flight together. With `auto`, a failed call (no
    /// permission, throttled, unreachable) only means those secrets are fetched one by
    /// one; with `always` it fails the run. A secret the batch reports an error for is
    /// always left to GetSecretValue, whose answer then decides.
    async fn prefetch(&self, targets: &[&AwsTarget]) -> Result<()> {
        if self.batch == AwsBatch::Never {
            return Ok(());
        }
        let mut by_region: HashMap<&str, Vec<&str>> = HashMap::new();
        for target in targets.iter().filter(|t| t.version == Version::Current) {
            if let Some(region) = target.region.as_ref().or(self.default_region.as_ref()) {
                by_region.entry(region).or_default().push(&target.secret_id);
            }
        }
        let mut calls = Vec::new();
        for (region, ids) in &by_region {
            if self.batch == AwsBatch::Auto && ids.len() < 2 {
                continue;
            }
            for chunk in ids.chunks(20) {
                calls.push(self.batch_call(&self.clients[*region], chunk));
            }
        }
        for result in futures_util::future::join_all(calls).await {
            match result {
                Ok(fetched) => self.prefetched.borrow_mut().extend(fetched),
                Err(err) if self.batch == AwsBatch::Always => {
                    return Err(err.context("BatchGetSecretValue (--aws-batch always)"));
                }
                Err(err) => {
                    debug!("BatchGetSecretValue failed, fetching one by one instead: {err:#}")
                }
            }
        }
        Ok(())
    }

    async fn fetch(&self, target: &AwsTarget) -> Result<Fetched> {
        if target.version == Version::Current
            && let Some(fetched) = self.prefetched.borrow_mut().remove(&target.secret_id)
        {
            return Ok(fetched);
        }
        let region = self.client(target)?;
        let request = region.get_secret_value().secret_id(&target.secret_id);
        let request = match &target.version {
            Version::Current => request,
            Version::Stage(stage) => request.version_stage(stage),
            Version::Id(id) => request.version_id(id),
        };
        let output = request.send().await.map_err(classify)?;
        Ok(Fetched {
            value: value_of(output.secret_string, output.secret_binary)?,
            version: output.version_id,
        })
    }
}

impl Aws {
    fn client(&self, target: &AwsTarget) -> Result<&Client> {
        target
            .region
            .as_ref()
            .or(self.default_region.as_ref())
            .and_then(|region| self.clients.get(region))
            .context("no client for the secret's region")
            .context(Class::Internal)
    }

    /// One BatchGetSecretValue call; returns the values it got, keyed by the `SecretId`
    /// that asked for them (a name or a full ARN).
    async fn batch_call(&self, client: &Client, ids: &[&str]) -> Result<Vec<(String, Fetched)>> {
        let started = std::time::Instant::now();
        let output = client
            .batch_get_secret_value()
            .set_secret_id_list(Some(ids.iter().map(|id| id.to_string()).collect()))
            .send()
            .await
            .map_err(classify)?;
        let mut fetched = Vec::new();
        for entry in output.secret_values.unwrap_or_default() {
            let Some(id) = ids.iter().find(|id| {
                Some(**id) == entry.name.as_deref() || Some(**id) == entry.arn.as_deref()
            }) else {
                continue;
            };
            let value = value_of(entry.secret_string, entry.secret_binary)?;
            fetched.push((
                id.to_string(),
                Fetched {
                    value,
                    version: entry.version_id,
                },
            ));
        }
        debug!(
            asked = ids.len(),
            got = fetched.len(),
            ms = started.elapsed().as_millis() as u64,
            "BatchGetSecretValue"
        );
        Ok(fetched)
    }
}

/// A secret's bytes, from whichever of the two fields the service filled in.
fn value_of(
    text: Option<String>,
    binary: Option<aws_sdk_secretsmanager::primitives::Blob>,
) -> Result<SecretValue> {
    match (text, binary) {
        (Some(text), _) => Ok(SecretValue::from_string(text)),
        (None, Some(blob)) => Ok(SecretValue::new(blob.into_inner())),
        (None, None) => Err(anyhow!(
            "the response has neither SecretString nor SecretBinary"
        ))
        .context(Class::BadData),
    }
}

/// Tags an SDK error with the exit class an operator needs, keeping the SDK's own
/// messages (see [`error_chain`] for why never its `Debug`).
fn classify<E>(err: SdkError<E>) -> anyhow::Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    classify_with(err, classify_code)
}

/// [`classify`] for any AWS service, with that service's error codes.
fn classify_with<E>(err: SdkError<E>, by_code: fn(Option<&str>, u16) -> Class) -> anyhow::Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    if has_cause::<http_body_util::LengthLimitError>(&err) {
        return anyhow::Error::new(ResponseTooLarge).context(Class::BadData);
    }
    if certificate_refused(&err) {
        return certificate_error(error_chain(&err));
    }
    let class = match &err {
        SdkError::ServiceError(service) => {
            by_code(service.err().code(), service.raw().status().as_u16())
        }
        SdkError::TimeoutError(_) => Class::Transient,
        SdkError::ResponseError(_) => Class::Transient,
        SdkError::DispatchFailure(failure) => match credentials_class(&err) {
            Some(class) => class,
            None if failure.is_user() => Class::Usage,
            None => Class::Transient,
        },
        SdkError::ConstructionFailure(_) => credentials_class(&err).unwrap_or(Class::Internal),
        _ => Class::Internal,
    };
    let retry_after = match &err {
        SdkError::ServiceError(service) => service
            .raw()
            .headers()
            .get("retry-after")
            .and_then(RetryAfter::from_header),
        _ => None,
    };
    let err = anyhow!(error_chain(&err));
    match retry_after {
        Some(wait) => err.context(wait).context(class),
        None => err.context(class),
    }
}

/// Secrets Manager's error codes (the same for every operation), then the HTTP status.
fn classify_code(code: Option<&str>, status: u16) -> Class {
    match code {
        // Missing, scheduled for deletion, or a version not in a usable state.
        Some("ResourceNotFoundException" | "InvalidRequestException") => Class::NotFound,
        // Not allowed to read it, or to use its KMS key.
        Some("AccessDeniedException" | "AccessDenied" | "DecryptionFailure") => Class::Denied,
        Some("InvalidParameterException" | "ValidationException") => Class::Usage,
        Some(
            "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "ExpiredTokenException"
            | "ExpiredToken",
        ) => Class::Auth,
        Some(
            "InternalServiceError"
            | "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "ServiceUnavailable"
            | "ServiceUnavailableException",
        ) => Class::Transient,
        _ if status >= 500 || status == 429 => Class::Transient,
        _ if status == 401 => Class::Auth,
        _ if status == 403 => Class::Denied,
        _ => Class::Internal,
    }
}

/// Whether every AWS endpoint this run can reach is plain `http://`: `AWS_ENDPOINT_URL`
/// is set to one, and no per-service override or container-credential URI says otherwise.
fn plain_http_only(var: &dyn Fn(&str) -> Option<String>) -> bool {
    let http = |name: &str| var(name).is_none_or(|url| url.starts_with("http://"));
    var("AWS_ENDPOINT_URL").is_some_and(|url| url.starts_with("http://"))
        && [
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            "AWS_ENDPOINT_URL_STS",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ]
        .iter()
        .all(|name| http(name))
        && var("AWS_PROFILE").is_none()
}

/// The SDK's own HTTPS client (rustls with aws-lc, the platform's roots, which
/// `SSL_CERT_FILE` replaces), trusting the PEM bundle at `path` as well. It serves STS and
/// the container credential endpoints too, since it is set on the shared config.
fn http_client_trusting(
    path: &std::path::Path,
) -> Result<aws_sdk_secretsmanager::config::SharedHttpClient> {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let pem = std::fs::read(path)
        .with_context(|| format!("reading --ca-file {}", path.display()))
        .context(Class::Usage)?;
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::default().with_pem_certificate(pem))
        .build()
        .map_err(|err| anyhow!(error_chain(&err)))
        .with_context(|| format!("--ca-file {}", path.display()))
        .context(Class::Usage)?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

/// The name of the credential-chain link that produced `credentials` (`Environment`,
/// `Profile`, `WebIdentityToken`, `EcsContainer`, `Ec2InstanceMetadata`, ...).
///
/// `Credentials` keeps the name private and shows it only in its `Debug` output, which
/// redacts the secret key; the string is read here and dropped, never logged whole.
fn credential_source(credentials: &aws_credential_types::Credentials) -> String {
    let debug = format!("{credentials:?}");
    debug
        .split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Names the identity inputs the environment provides (never their contents), so an
/// operator sees at once which source failed.
fn identity_hint() -> String {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let mut inputs = Vec::new();
    if var("AWS_ACCESS_KEY_ID").is_some() {
        inputs.push("static keys in AWS_ACCESS_KEY_ID".to_owned());
    }
    if let Some(file) = var("AWS_WEB_IDENTITY_TOKEN_FILE") {
        let role = var("AWS_ROLE_ARN").unwrap_or_else(|| "<AWS_ROLE_ARN unset>".to_owned());
        inputs.push(format!("web identity token file {file} for role {role}"));
    }
    if let Some(uri) = var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        inputs.push(format!("container credentials at {uri}"));
    }
    if var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some() {
        inputs.push("the ECS task role".to_owned());
    }
    if let Some(profile) = var("AWS_PROFILE") {
        inputs.push(format!("profile {profile}"));
    }
    match inputs.is_empty() {
        true => {
            " (no credentials in the environment; tried profiles and instance metadata)".to_owned()
        }
        false => format!(" (from {})", inputs.join(", ")),
    }
}

fn has_cause<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if current.is::<T>() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Credential failures surface inside dispatch or construction errors. A provider that
/// could not reach its endpoint is transient; anything else is an identity failure.
fn credentials_class(err: &(dyn StdError + 'static)) -> Option<Class> {
    let mut cause = Some(err);
    let mut found = None;
    while let Some(current) = cause {
        if let Some(creds) = current.downcast_ref::<CredentialsError>() {
            found = Some(match creds {
                CredentialsError::ProviderTimedOut(_) => Class::Transient,
                _ => Class::Auth,
            });
        } else if found.is_some()
            && let Some(connector) =
                current.downcast_ref::<aws_sdk_secretsmanager::error::ConnectorError>()
            && (connector.is_io() || connector.is_timeout())
        {
            return Some(Class::Transient);
        }
        cause = current.source();
    }
    found
}

/// Caps every response body at [`MAX_RESPONSE_BYTES`] before the SDK reads it whole.
#[derive(Debug)]
struct ResponseLimit;

impl Intercept for ResponseLimit {
    fn name(&self) -> &'static str {
        "SecretSidecarResponseLimit"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.response_mut().body_mut();
        let whole = std::mem::replace(body, SdkBody::taken());
        *body = SdkBody::from_body_1_x(http_body_util::Limited::new(whole, MAX_RESPONSE_BYTES));
        Ok(())
    }
}

/// Appends `secret-sidecar/<version>` to the User-Agent after signing (the header is not
/// signed), so the calls are attributable in CloudTrail.
#[derive(Debug)]
struct UserAgentSuffix;

impl Intercept for UserAgentSuffix {
    fn name(&self) -> &'static str {
        "SecretSidecarUserAgent"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = context.request_mut().headers_mut();
        let agent = user_agent(headers.get("user-agent"));
        headers.insert("user-agent", agent);
        Ok(())
    }
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
    fn plain_http_client_only_when_no_endpoint_can_be_https() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(plain_http_only(&env(&[(
            "AWS_ENDPOINT_URL",
            "http://127.0.0.1:4566"
        )])));
        assert!(!plain_http_only(&env(&[])));
        assert!(!plain_http_only(&env(&[(
            "AWS_ENDPOINT_URL",
            "https://vpce.example"
        )])));
        assert!(!plain_http_only(&env(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_ENDPOINT_URL_STS", "https://sts.amazonaws.com"),
        ])));
        assert!(!plain_http_only(&env(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_PROFILE", "sso"),
        ])));
    }

    #[test]
    fn credential_source_is_read_from_the_redacting_debug() {
        let credentials = aws_credential_types::Credentials::new(
            "AKID",
            "hunter2",
            None,
            None,
            "WebIdentityToken",
        );
        assert_eq!(credential_source(&credentials), "WebIdentityToken");
    }

    #[test]
    fn service_errors_map_to_exit_classes() {
        // Responses carry the code in their error metadata for every operation alike.
        for (code, status, class) in [
            ("ResourceNotFoundException", 400, Class::NotFound),
            ("AccessDeniedException", 400, Class::Denied),
            ("DecryptionFailure", 400, Class::Denied),
            ("InvalidRequestException", 400, Class::NotFound),
            ("InvalidParameterException", 400, Class::Usage),
            ("UnrecognizedClientException", 400, Class::Auth),
            ("ThrottlingException", 400, Class::Transient),
            ("InternalServiceError", 500, Class::Transient),
            ("Whatever", 503, Class::Transient),
            ("Whatever", 403, Class::Denied),
            ("Whatever", 400, Class::Internal),
        ] {
            assert_eq!(classify_code(Some(code), status), class, "{code} {status}");
        }
    }
}
