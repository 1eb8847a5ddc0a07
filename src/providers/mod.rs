//! Secret stores behind one small, read-only interface.
//!
//! A provider knows three things: how to read its part of a reference (the locator and
//! the `?params` it owns), how to build its clients once for a whole run, and how to fetch
//! one secret. The core (plan, fetch loop, publisher) sees only [`Target`], [`Providers`]
//! and [`Fetched`]; adding a store is a new module, a [`Target`] variant and a field in
//! [`Providers`], each behind its cargo feature.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod gcp;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::exit::Class;
use crate::reference::Params;
use crate::secret::SecretValue;

/// What a provider returns for one secret.
pub struct Fetched {
    pub value: SecretValue,
    /// The provider's version identifier, logged and recorded; never a value.
    pub version: Option<String>,
}

/// Settings every provider honours.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Upper bound for one HTTP attempt, including connection set-up. The core also
    /// enforces it from outside; providers pass it to their SDK so sockets are not left
    /// waiting.
    pub attempt_timeout: Duration,
    /// A PEM bundle to trust in addition to the platform's roots (`--ca-file`), for
    /// private endpoints, proxies and tests. `SSL_CERT_FILE` is honoured as well.
    pub ca_file: Option<PathBuf>,
    /// Whether AWS reads many secrets per call with BatchGetSecretValue.
    pub aws_batch: crate::cli::AwsBatch,
    /// `--gcp-endpoint`: where every Google Secret Manager request goes instead of the
    /// global or regional endpoint (Private Service Connect, tests).
    pub gcp_endpoint: Option<String>,
    /// `--azure-credential`, `--azure-cloud`, `--azure-skip-challenge-resource-check`.
    pub azure: crate::cli::AzureArgs,
    /// `--aws-token-source` other than `file`: where the web-identity token for
    /// `AWS_ROLE_ARN` comes from instead of aws-config's default chain.
    #[cfg(feature = "aws")]
    pub aws_token: Option<crate::identity::Source>,
}

/// The most one response may hold. Far above every store's own limits (AWS: 64 KiB per
/// secret, 20 per batch; Azure: 25 KiB; Google: 64 KiB) and their encodings, and low
/// enough that a hostile or broken endpoint cannot make the process buffer without end.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// What a provider reports when a response goes over [`MAX_RESPONSE_BYTES`]: bad data,
/// exit 7, and never retried.
#[derive(Debug)]
pub struct ResponseTooLarge;

impl std::fmt::Display for ResponseTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the response is larger than {MAX_RESPONSE_BYTES} bytes, far above any secret"
        )
    }
}

impl std::error::Error for ResponseTooLarge {}

/// Whether a connection failed because this client refused the server's TLS certificate
/// (an unknown or self-signed issuer, another host's name, expired). Retrying cannot fix
/// that, and it may be an interception, so it is an authentication failure (of the
/// server), never transient.
///
/// rustls says so with `Error::InvalidCertificate`, which each SDK buries differently:
/// aws-smithy's connector and reqwest (Azure, Google) inside hyper-util's and their own
/// errors, around an `io::Error`. `io::Error::source` skips the error it carries, so an
/// `io::Error` is opened with `get_ref` as well as followed through `source`.
pub fn certificate_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut pending = vec![err];
    while let Some(current) = pending.pop() {
        if let Some(rustls::Error::InvalidCertificate(_)) = current.downcast_ref::<rustls::Error>()
        {
            return true;
        }
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            pending.push(inner);
        }
        pending.extend(current.source());
    }
    false
}

/// The error every provider reports for a refused certificate (see
/// [`certificate_refused`]): exit 3, not retried, with what to check.
pub fn certificate_error(cause: String) -> anyhow::Error {
    anyhow::anyhow!(cause)
        .context(
            "the server's TLS certificate was refused; check that its CA is trusted \
             (--ca-file, SSL_CERT_FILE) and that it names the host in the URL",
        )
        .context(Class::Auth)
}

/// Whether a URL's host (`localhost`, `127.0.0.1`, `[::1]`) is this machine, the one
/// place plain http may carry a token or a secret.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `secret-sidecar/<version>`, for every provider's User-Agent.
pub const USER_AGENT: &str = concat!("secret-sidecar/", env!("CARGO_PKG_VERSION"));

/// An SDK's User-Agent with `secret-sidecar/<version>` appended (once, however often a
/// request passes through), so calls are attributable in the provider's audit logs.
pub fn user_agent(sdk: Option<&str>) -> String {
    match sdk {
        Some(existing) if existing.ends_with(USER_AGENT) => existing.to_owned(),
        Some(existing) => format!("{existing} {USER_AGENT}"),
        None => USER_AGENT.to_owned(),
    }
}

/// One secret store. Implementations fetch only; they never write anything.
///
/// The contract every provider keeps:
/// - `connect` and `fetch` make **one attempt** each: the SDK's own retries are switched
///   off, because [`crate::retry::Policy`] retries for all providers alike;
/// - every error is tagged with a [`Class`] (`Transient` for connection errors,
///   timeouts, throttling and 5xx; `Auth`, `NotFound`, `Denied`, `BadData`, ... for the
///   rest), and carries a [`crate::retry::RetryAfter`] when the server sent one;
/// - error text comes from `Display` only (see [`error_chain`]), never `Debug`.
///
/// The futures need not be `Send`: a run drives them all on one current-thread runtime.
#[allow(async_fn_in_trait)]
pub trait Provider: Sized {
    /// The provider's parsed locator and parameters.
    type Target: std::fmt::Debug;

    /// Builds the clients for every target of this provider in the run, once.
    async fn connect(targets: &[&Self::Target], settings: &Settings) -> Result<Self>;

    /// Reads many secrets ahead of [`Provider::fetch`] where the store can do so in fewer
    /// calls. An error here fails the run; a secret prefetch could not read is simply
    /// left to `fetch`, which then asks for it alone.
    async fn prefetch(&self, targets: &[&Self::Target]) -> Result<()> {
        let _ = targets;
        Ok(())
    }

    /// Fetches one secret. Errors carry a [`Class`] tag.
    async fn fetch(&self, target: &Self::Target) -> Result<Fetched>;
}

/// The provider-specific part of a reference.
#[derive(Debug, PartialEq, Eq, Hash)]
pub enum Target {
    #[cfg(feature = "aws")]
    Aws(aws::AwsTarget),
    #[cfg(feature = "azure")]
    Azure(azure::AzureTarget),
    #[cfg(feature = "gcp")]
    Gcp(gcp::GcpTarget),
}

impl Target {
    /// Dispatches `SCHEME://LOCATOR?PARAMS` to the provider that owns the scheme.
    pub fn parse(scheme: &str, locator: &str, params: &mut Params) -> Result<Target> {
        match scheme {
            #[cfg(feature = "aws")]
            "aws" => Ok(Target::Aws(aws::AwsTarget::parse(locator, params)?)),
            #[cfg(feature = "azure")]
            "azure" => Ok(Target::Azure(azure::AzureTarget::parse(locator, params)?)),
            #[cfg(feature = "gcp")]
            "gcp" => Ok(Target::Gcp(gcp::GcpTarget::parse(locator, params)?)),
            #[allow(unreachable_patterns)]
            "aws" | "azure" | "gcp" => bail!(
                "this build of secret-sidecar has no '{scheme}' provider (cargo feature '{scheme}' was off)"
            ),
            other => bail!("unknown provider '{other}://' (expected aws://, azure:// or gcp://)"),
        }
    }

    /// The provider's short name for the secret, used to derive a file name.
    pub fn short_name(&self) -> String {
        match self {
            #[cfg(feature = "aws")]
            Target::Aws(target) => target.short_name(),
            #[cfg(feature = "azure")]
            Target::Azure(target) => target.short_name(),
            #[cfg(feature = "gcp")]
            Target::Gcp(target) => target.short_name(),
        }
    }
}

/// An SDK error as one line: each cause's `Display`, joined by `: `, with repeats
/// dropped. Never `Debug`: SDK errors keep the raw HTTP response, whose body may hold a
/// secret or credentials when a successful response fails to parse.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(err);
    while let Some(current) = cause {
        let text = current.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        cause = current.source();
    }
    parts.join(": ")
}

/// The connected clients for one run: one per provider that the run uses.
#[derive(Default)]
pub struct Providers {
    #[cfg(feature = "aws")]
    aws: Option<aws::Aws>,
    #[cfg(feature = "azure")]
    azure: Option<azure::Azure>,
    #[cfg(feature = "gcp")]
    gcp: Option<gcp::Gcp>,
}

impl Providers {
    pub async fn connect<'a>(
        targets: impl IntoIterator<Item = &'a Target>,
        settings: &Settings,
    ) -> Result<Providers> {
        #[cfg(feature = "aws")]
        let mut aws_targets = Vec::new();
        #[cfg(feature = "azure")]
        let mut azure_targets = Vec::new();
        #[cfg(feature = "gcp")]
        let mut gcp_targets = Vec::new();
        for target in targets {
            match target {
                #[cfg(feature = "aws")]
                Target::Aws(target) => aws_targets.push(target),
                #[cfg(feature = "azure")]
                Target::Azure(target) => azure_targets.push(target),
                #[cfg(feature = "gcp")]
                Target::Gcp(target) => gcp_targets.push(target),
            }
        }
        #[allow(unused_mut)]
        let mut providers = Providers::default();
        #[cfg(feature = "aws")]
        if !aws_targets.is_empty() {
            providers.aws = Some(aws::Aws::connect(&aws_targets, settings).await?);
        }
        #[cfg(feature = "azure")]
        if !azure_targets.is_empty() {
            providers.azure = Some(azure::Azure::connect(&azure_targets, settings).await?);
        }
        #[cfg(feature = "gcp")]
        if !gcp_targets.is_empty() {
            providers.gcp = Some(gcp::Gcp::connect(&gcp_targets, settings).await?);
        }
        let _ = settings;
        Ok(providers)
    }

    /// Lets each provider read ahead what it can batch; see [`Provider::prefetch`].
    pub async fn prefetch<'a>(&self, targets: impl IntoIterator<Item = &'a Target>) -> Result<()> {
        #[cfg(feature = "aws")]
        let mut aws_targets = Vec::new();
        for target in targets {
            match target {
                #[cfg(feature = "aws")]
                Target::Aws(target) => aws_targets.push(target),
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
        #[cfg(feature = "aws")]
        if let Some(aws) = &self.aws {
            aws.prefetch(&aws_targets).await?;
        }
        Ok(())
    }

    pub async fn fetch(&self, target: &Target) -> Result<Fetched> {
        match target {
            #[cfg(feature = "aws")]
            Target::Aws(target) => match &self.aws {
                Some(aws) => aws.fetch(target).await,
                None => Err(anyhow::anyhow!("AWS provider used before it was connected"))
                    .context(Class::Internal),
            },
            #[cfg(feature = "azure")]
            Target::Azure(target) => match &self.azure {
                Some(azure) => azure.fetch(target).await,
                None => Err(anyhow::anyhow!(
                    "Azure provider used before it was connected"
                ))
                .context(Class::Internal),
            },
            #[cfg(feature = "gcp")]
            Target::Gcp(target) => match &self.gcp {
                Some(gcp) => gcp.fetch(target).await,
                None => Err(anyhow::anyhow!("GCP provider used before it was connected"))
                    .context(Class::Internal),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn a_refused_certificate_is_found_inside_io_errors_and_nowhere_else() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, refused);
        let outer = Layer("connection failed", None);
        assert!(certificate_refused(&wrapped));
        assert!(!certificate_refused(&outer));
        let other =
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(!certificate_refused(&other));
        let err = certificate_error("invalid peer certificate: UnknownIssuer".to_owned());
        assert_eq!(Class::of(&err), Class::Auth);
        assert!(format!("{err:#}").starts_with("authentication failed: the server's TLS"));
    }

    #[test]
    fn the_user_agent_suffix_is_added_once() {
        let once = user_agent(Some("azsdk-rust/1.0"));
        assert_eq!(once, format!("azsdk-rust/1.0 {USER_AGENT}"));
        assert_eq!(user_agent(Some(&once)), once);
        assert_eq!(user_agent(None), USER_AGENT);
    }

    #[test]
    fn error_chain_uses_display_only_and_drops_repeats() {
        let err = Layer(
            "service error",
            Some(Box::new(Layer(
                "NotFound: gone",
                Some(Box::new(Layer("NotFound: gone", None))),
            ))),
        );
        assert_eq!(error_chain(&err), "service error: NotFound: gone");
    }
}
