//! Secret stores behind one small, read-only interface.
//!
//! A provider knows three things: how to read its part of a reference (the locator and
//! the `?params` it owns, in its `target.rs`, without any SDK), how to build its clients
//! once for a whole run from its own options, and how to fetch one secret. The rest of the
//! program sees only [`Target`], [`Setup`], [`Providers`] and [`Fetched`]; adding a store is
//! a new module with its `Args`, a [`Target`] variant, and a field in [`Setup`] and
//! [`Providers`], each behind its cargo feature.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod aws_session;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod gcp;
mod params;
#[cfg(feature = "aws")]
pub mod ssm;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::exit::Failure;
use crate::net::HttpConfig;
use crate::secret::SecretValue;
pub use params::Params;

/// What a provider returns for one secret.
pub struct Fetched {
    pub value: SecretValue,
    /// The provider's version identifier, logged and recorded; never a value.
    pub version: Option<String>,
}

/// One secret store. Implementations fetch only; they never write anything.
///
/// The contract every provider keeps:
/// - `connect` and `fetch` make **one attempt** each: the SDK's own retries are switched
///   off, because [`crate::retry::Policy`] retries for all providers alike;
/// - every error is tagged with a [`Failure`] class (`Transient` for connection errors,
///   timeouts, throttling and 5xx; `Auth`, `NotFound`, `Denied`, `BadData`, ... for the
///   rest), and carries a [`crate::retry::RetryAfter`] when the server sent one;
/// - error text comes from `Display` only (see [`crate::net::error_chain`]), never `Debug`.
///
/// The futures need not be `Send`: a run drives them all on one current-thread runtime.
#[allow(async_fn_in_trait)]
pub trait Provider: Sized {
    /// The provider's parsed locator and parameters.
    type Target: std::fmt::Debug;
    /// The provider's own options, from its `Args`, handed over whole.
    type Config;

    /// Builds the clients for every target of this provider in the run, once.
    async fn connect(
        targets: &[&Self::Target],
        config: &Self::Config,
        http: &HttpConfig,
    ) -> Result<Self>;

    /// Reads many secrets ahead of [`Provider::fetch`] where the store can do so in fewer
    /// calls. An error here fails the run; a secret prefetch could not read is simply
    /// left to `fetch`, which then asks for it alone.
    async fn prefetch(&self, targets: &[&Self::Target]) -> Result<()> {
        let _ = targets;
        Ok(())
    }

    /// Fetches one secret. Errors carry a [`Failure`] tag.
    async fn fetch(&self, target: &Self::Target) -> Result<Fetched>;

    /// Reads one secret again, for refresh mode, knowing the version read last time
    /// (`None` if it was not read). `Ok(None)` means the store need not be asked: the target
    /// still names that version. The default fetches, which is right for a store that
    /// cannot say more cheaply whether a secret changed; a provider overrides it where it
    /// can (a pinned version's value never changes). Batched reads come from
    /// [`Provider::prefetch`] as for a first read.
    async fn refetch(
        &self,
        target: &Self::Target,
        last_version: Option<&str>,
    ) -> Result<Option<Fetched>> {
        let _ = last_version;
        self.fetch(target).await.map(Some)
    }

    /// When the identity this connection resolved stops working, for a provider whose
    /// clients do not renew it by themselves; a long-running mode reconnects before then.
    fn renew_by(&self) -> Option<std::time::SystemTime> {
        None
    }
}

/// Everything the providers take from the command line, checked once by the plan.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Every provider's attempt bound and extra roots.
    pub http: HttpConfig,
    #[cfg(feature = "aws")]
    pub aws: aws::AwsConfig,
    #[cfg(feature = "azure")]
    pub azure: azure::AzureArgs,
    #[cfg(feature = "gcp")]
    pub gcp: gcp::GcpArgs,
    #[cfg(feature = "aws")]
    pub ssm: ssm::SsmConfig,
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
    #[cfg(feature = "aws")]
    Ssm(ssm::SsmTarget),
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
            #[cfg(feature = "aws")]
            "ssm" => Ok(Target::Ssm(ssm::SsmTarget::parse(locator, params)?)),
            #[allow(unreachable_patterns)]
            "aws" | "azure" | "gcp" => bail!(
                "this build of secret-sidecar has no '{scheme}' provider (cargo feature '{scheme}' was off)"
            ),
            #[allow(unreachable_patterns)]
            "ssm" => bail!(
                "this build of secret-sidecar has no 'ssm' provider (cargo feature 'aws' was off)"
            ),
            other => {
                bail!("unknown provider '{other}://' (expected aws://, ssm://, azure:// or gcp://)")
            }
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
            #[cfg(feature = "aws")]
            Target::Ssm(target) => target.short_name(),
        }
    }

    /// Whether the reference stands for a set of files rather than one value (a
    /// Parameter Store path), which `shape::tree` publishes.
    pub fn is_tree(&self) -> bool {
        match self {
            #[cfg(feature = "aws")]
            Target::Ssm(target) => target.path,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// A run's targets sorted by provider.
#[derive(Default)]
struct ByProvider<'t> {
    #[cfg(feature = "aws")]
    aws: Vec<&'t aws::AwsTarget>,
    #[cfg(feature = "azure")]
    azure: Vec<&'t azure::AzureTarget>,
    #[cfg(feature = "gcp")]
    gcp: Vec<&'t gcp::GcpTarget>,
    #[cfg(feature = "aws")]
    ssm: Vec<&'t ssm::SsmTarget>,
}

impl<'t> ByProvider<'t> {
    fn sort(targets: impl IntoIterator<Item = &'t Target>) -> ByProvider<'t> {
        let mut sorted = ByProvider::default();
        for target in targets {
            match target {
                #[cfg(feature = "aws")]
                Target::Aws(target) => sorted.aws.push(target),
                #[cfg(feature = "azure")]
                Target::Azure(target) => sorted.azure.push(target),
                #[cfg(feature = "gcp")]
                Target::Gcp(target) => sorted.gcp.push(target),
                #[cfg(feature = "aws")]
                Target::Ssm(target) => sorted.ssm.push(target),
            }
        }
        sorted
    }

    /// The run's one AWS session, when it reads from Secrets Manager or Parameter Store.
    #[cfg(feature = "aws")]
    async fn aws_session(&self, setup: &Setup) -> Result<Option<aws_session::Session>> {
        let regions: Vec<Option<&str>> = (self.aws.iter().map(|t| t.region.as_deref()))
            .chain(self.ssm.iter().map(|t| t.region.as_deref()))
            .collect();
        if regions.is_empty() {
            return Ok(None);
        }
        let token = setup.aws.token.as_ref();
        let warm_up = |shared: &aws_config::SdkConfig| {
            let mut warm_ups = aws::warm_up(shared, &self.aws, &setup.aws);
            warm_ups.extend(ssm::warm_up(shared, &self.ssm, &setup.ssm));
            warm_ups
        };
        aws_session::Session::connect(&regions, token, &setup.http, warm_up)
            .await
            .map(Some)
    }
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
    #[cfg(feature = "aws")]
    ssm: Option<ssm::Ssm>,
}

/// Connects `P` when the run has targets for it.
#[cfg(any(feature = "azure", feature = "gcp"))]
async fn connect<P: Provider>(
    targets: &[&P::Target],
    config: &P::Config,
    http: &HttpConfig,
) -> Result<Option<P>> {
    match targets.is_empty() {
        true => Ok(None),
        false => P::connect(targets, config, http).await.map(Some),
    }
}

/// Connects the AWS store `P` on the run's session, when the run has targets for it.
#[cfg(feature = "aws")]
async fn connect_on<P, O>(
    targets: &[&P::Target],
    session: &Option<aws_session::Session>,
    options: &O,
    http: &HttpConfig,
) -> Result<Option<P>>
where
    P: Provider<Config = aws_session::OnSession<O>>,
    O: Clone,
{
    match session {
        Some(session) if !targets.is_empty() => {
            let config = aws_session::OnSession {
                session: session.clone(),
                options: options.clone(),
            };
            P::connect(targets, &config, http).await.map(Some)
        }
        _ => Ok(None),
    }
}

/// `provider`, or an internal error naming it when the run never connected it.
fn connected<'p, P>(provider: &'p Option<P>, name: &str) -> Result<&'p P> {
    provider
        .as_ref()
        .ok_or_else(|| anyhow!("the {name} provider was used before it was connected"))
        .context(Failure::Internal)
}

impl Providers {
    pub async fn connect<'a>(
        targets: impl IntoIterator<Item = &'a Target>,
        setup: &Setup,
    ) -> Result<Providers> {
        let sorted = ByProvider::sort(targets);
        #[cfg(feature = "aws")]
        let session = sorted.aws_session(setup).await?;
        Ok(Providers {
            #[cfg(feature = "aws")]
            aws: connect_on(&sorted.aws, &session, &setup.aws, &setup.http).await?,
            #[cfg(feature = "azure")]
            azure: connect(&sorted.azure, &setup.azure, &setup.http).await?,
            #[cfg(feature = "gcp")]
            gcp: connect(&sorted.gcp, &setup.gcp, &setup.http).await?,
            #[cfg(feature = "aws")]
            ssm: connect_on(&sorted.ssm, &session, &setup.ssm, &setup.http).await?,
        })
    }

    /// Lets each provider read ahead what it can batch; see [`Provider::prefetch`].
    pub async fn prefetch<'a>(&self, targets: impl IntoIterator<Item = &'a Target>) -> Result<()> {
        let sorted = ByProvider::sort(targets);
        #[cfg(feature = "aws")]
        if let Some(aws) = &self.aws {
            aws.prefetch(&sorted.aws).await?;
        }
        #[cfg(feature = "azure")]
        if let Some(azure) = &self.azure {
            azure.prefetch(&sorted.azure).await?;
        }
        #[cfg(feature = "gcp")]
        if let Some(gcp) = &self.gcp {
            gcp.prefetch(&sorted.gcp).await?;
        }
        #[cfg(feature = "aws")]
        if let Some(ssm) = &self.ssm {
            ssm.prefetch(&sorted.ssm).await?;
        }
        let _ = sorted;
        Ok(())
    }

    /// Reads `target` again for a refresh; see [`Provider::refetch`].
    pub async fn fetch_again(
        &self,
        target: &Target,
        last_version: Option<&str>,
    ) -> Result<Option<Fetched>> {
        match target {
            #[cfg(feature = "aws")]
            Target::Aws(target) => {
                connected(&self.aws, "AWS")?
                    .refetch(target, last_version)
                    .await
            }
            #[cfg(feature = "aws")]
            Target::Ssm(target) => {
                connected(&self.ssm, "Parameter Store")?
                    .refetch(target, last_version)
                    .await
            }
            #[cfg(feature = "azure")]
            Target::Azure(target) => {
                connected(&self.azure, "Azure")?
                    .refetch(target, last_version)
                    .await
            }
            #[cfg(feature = "gcp")]
            Target::Gcp(target) => {
                connected(&self.gcp, "GCP")?
                    .refetch(target, last_version)
                    .await
            }
        }
    }

    /// The earliest time a connected provider's identity must be renewed by reconnecting.
    pub fn renew_by(&self) -> Option<std::time::SystemTime> {
        let mut earliest: Option<std::time::SystemTime> = None;
        let mut consider = |at: Option<std::time::SystemTime>| {
            if let Some(at) = at {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        };
        #[cfg(feature = "aws")]
        consider(self.aws.as_ref().and_then(Provider::renew_by));
        #[cfg(feature = "aws")]
        consider(self.ssm.as_ref().and_then(Provider::renew_by));
        #[cfg(feature = "azure")]
        consider(self.azure.as_ref().and_then(Provider::renew_by));
        #[cfg(feature = "gcp")]
        consider(self.gcp.as_ref().and_then(Provider::renew_by));
        let _ = &mut consider;
        earliest
    }

    pub async fn fetch(&self, target: &Target) -> Result<Fetched> {
        match target {
            #[cfg(feature = "aws")]
            Target::Aws(target) => connected(&self.aws, "AWS")?.fetch(target).await,
            #[cfg(feature = "azure")]
            Target::Azure(target) => connected(&self.azure, "Azure")?.fetch(target).await,
            #[cfg(feature = "gcp")]
            Target::Gcp(target) => connected(&self.gcp, "GCP")?.fetch(target).await,
            #[cfg(feature = "aws")]
            Target::Ssm(target) => connected(&self.ssm, "Parameter Store")?.fetch(target).await,
        }
    }
}
