//! `secret-sidecar token`: keep a web-identity token fresh in a file.
//!
//! For an application whose own AWS SDK reads `AWS_WEB_IDENTITY_TOKEN_FILE` and assumes
//! `AWS_ROLE_ARN` itself, off EKS: a GKE pod (Google ID token) or any workload with an
//! OAuth2 client (an external identity provider). It replaces the sidecar-plus-webhook
//! arrangement those set-ups use, as one process in a Kubernetes native sidecar
//! (`initContainers` entry with `restartPolicy: Always`).
//!
//! The token is published with the same atomic writer as secrets (a `..data` link swap), so
//! a reader sees the old token or the new one, never part of one. It is replaced at 80% of
//! its lifetime; a failed refresh is retried with jittered, growing delays while the last
//! good token stays in place. The first token must come within `--timeout`, else the run
//! fails like a fetch run (the kubelet restarts the container with its own back-off).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use tracing::{info, warn};

use crate::cli::{Cli, TokenArgs};
use crate::exit::Failure;
use crate::identity::web_token::{TokenSource, WebToken, jwt_expiry};
use crate::net::{CaBundle, HttpConfig};
use crate::paths::{Owner, parse_mode, parse_owner, validate_file};
use crate::publish::{NewFile, Publisher};
use crate::retry::{Backoff, Policy};
use crate::signal::Stop;

/// The share of a token's lifetime after which it is replaced.
const REFRESH_AT: f64 = 0.8;
/// The lifetime assumed for a token that states none (an opaque OAuth2 token without
/// `expires_in`), so that it is still replaced regularly.
const ASSUMED_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The shortest wait between two refreshes, whatever the token says.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Back-off after a failed refresh: from the first bound, doubling, up to the last.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What `token` needs, checked before anything is requested.
struct TokenPlan {
    source: TokenSource,
    dir: PathBuf,
    name: String,
    mode: u32,
    owner: Option<Owner>,
    allow_non_tmpfs: bool,
    http: HttpConfig,
    timeout: Duration,
}

impl TokenPlan {
    fn build(args: &TokenArgs, cli: &Cli) -> Result<TokenPlan> {
        let kind = args
            .token_source
            .ok_or_else(|| anyhow!("--source is required"))?;
        let source = TokenSource::from_args(
            kind,
            args.token_audience.as_deref(),
            &cli.aws_token.oauth2,
            "--audience",
        )?;
        let (dir, name) = split_out(&args.token_file)?;
        let mode = parse_mode(&args.token_mode).context("--mode")?;
        let owner = args
            .token_owner
            .as_deref()
            .map(parse_owner)
            .transpose()
            .context("--owner")?;
        Ok(TokenPlan {
            source,
            dir,
            name,
            mode,
            owner,
            allow_non_tmpfs: args.token_allow_non_tmpfs,
            http: HttpConfig {
                attempt_timeout: Policy::within(cli.timeout.0).attempt_timeout,
                ca: cli.ca_file.as_deref().map(CaBundle::read).transpose()?,
                concurrency: 1,
            },
            timeout: cli.timeout.0,
        })
    }
}

/// `--out DIR/NAME` → (`DIR`, `NAME`), with `NAME` one safe file name.
fn split_out(path: &Path) -> Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("--out {} does not end in a file name", path.display()))?;
    // One safe component; `..`-prefixed names are the publisher's own.
    validate_file(name).with_context(|| format!("--out {}", path.display()))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_owned()))
}

/// Runs until SIGTERM or SIGINT; `Ok` then, since stopping is how a sidecar ends.
pub async fn run(args: &TokenArgs, cli: &Cli) -> Result<()> {
    let plan = TokenPlan::build(args, cli).context(Failure::Usage)?;
    let output = Publisher::open(&plan.dir, plan.allow_non_tmpfs)?;
    check_own_directory(&plan.dir, &plan.name).context(Failure::Output)?;

    let mut stop = Stop::listen();
    let first = match stop.or_stop(first_token(&plan)).await {
        Ok(first) => first?,
        Err(signal) => {
            return Err(anyhow!(
                "stopped by {signal} before the first token was published"
            ))
            .context(Failure::Interrupted);
        }
    };
    let mut expires = publish(&plan, &output, &first)?;
    drop(first);

    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut wait = refresh_delay(expires);
    loop {
        let attempt = stop.or_stop(async {
            tokio::time::sleep(wait).await;
            tokio::time::timeout(plan.http.attempt_timeout, plan.source.obtain(&plan.http)).await
        });
        let attempt = match attempt.await {
            Ok(attempt) => attempt,
            Err(signal) => {
                info!("stopped by {signal}; the last token stays in place");
                return Ok(());
            }
        };
        let result = attempt
            .map_err(|_| anyhow!("no answer within {:?}", plan.http.attempt_timeout))
            .and_then(|token| token)
            .and_then(|token| publish(&plan, &output, &token));
        match result {
            Ok(next) => {
                expires = next;
                backoff.succeeded();
                wait = refresh_delay(expires);
            }
            Err(err) => {
                wait = backoff.failed();
                let left = expires.checked_duration_since(Instant::now());
                warn!(
                    failures = backoff.failures(),
                    class = Failure::of(&err).label(),
                    token_left_s = left.map(|d| d.as_secs()),
                    "refreshing the token failed; keeping the last good one: {err:#}"
                );
            }
        }
    }
}

/// The first token, with the same retries and deadline as a fetch run.
async fn first_token(plan: &TokenPlan) -> Result<WebToken> {
    let policy = Policy {
        attempt_timeout: plan.http.attempt_timeout,
        ..Policy::default()
    };
    tokio::time::timeout(plan.timeout, policy.run(|| plan.source.obtain(&plan.http)))
        .await
        .map_err(|_| {
            anyhow!(
                "the {:?} deadline (--timeout) passed before a token was obtained",
                plan.timeout
            )
        })
        .context(Failure::Transient)?
        .with_context(|| format!("obtaining a token from {}", plan.source.describe()))
}

/// Publishes `token`; returns when it should be considered expired.
fn publish(plan: &TokenPlan, output: &Publisher, token: &WebToken) -> Result<Instant> {
    let lifetime = token.lifetime();
    output.publish(&[NewFile {
        path: &plan.name,
        value: &token.value,
        mode: plan.mode,
        owner: plan.owner,
    }])?;
    info!(
        source = plan.source.kind(),
        file = %plan.dir.join(&plan.name).display(),
        bytes = token.value.len(),
        expires_in_s = lifetime.map(|d| d.as_secs()),
        "token published"
    );
    let now = Instant::now();
    Ok(now
        .checked_add(lifetime.unwrap_or(ASSUMED_LIFETIME))
        .unwrap_or(now))
}

fn refresh_delay(expires: Instant) -> Duration {
    let left = expires.saturating_duration_since(Instant::now());
    left.mul_f64(REFRESH_AT).max(MIN_REFRESH)
}

/// Publishing replaces the whole set in the directory, so a token sharing it with other
/// files would remove them: refuse such a directory.
fn check_own_directory(dir: &Path, name: &str) -> Result<()> {
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let file_name = entry?.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name != name && !file_name.starts_with("..") {
            others.push(file_name.into_owned());
        }
    }
    if !others.is_empty() {
        others.sort();
        bail!(
            "{} also holds {}; the token needs a directory of its own (an emptyDir just for \
             it), because publishing replaces the directory's whole set",
            dir.display(),
            others.join(", ")
        );
    }
    Ok(())
}

/// `token --probe`: whether `path` holds a token that is not empty and not expired.
pub fn probe(path: &Path) -> Result<()> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).with_context(|| format!("no token at {}", path.display()))?,
    );
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("the token at {} is empty", path.display());
    }
    if let Some(expiry) = jwt_expiry(&bytes)
        && expiry <= std::time::SystemTime::now()
    {
        bail!("the token at {} has expired", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_is_a_directory_and_one_safe_name() {
        let (dir, name) = split_out(Path::new("/var/run/aws-token/token")).unwrap();
        assert_eq!(
            (dir.as_path(), name.as_str()),
            (Path::new("/var/run/aws-token"), "token")
        );
        let (dir, _) = split_out(Path::new("token")).unwrap();
        assert_eq!(dir, Path::new("."));
        assert!(split_out(Path::new("/var/run/..data")).is_err());
        assert!(split_out(Path::new("/")).is_err());
    }

    #[test]
    fn refreshes_at_four_fifths_of_the_lifetime_and_never_spins() {
        let in_ten = Instant::now() + Duration::from_secs(10);
        let wait = refresh_delay(in_ten);
        assert!(wait <= Duration::from_secs(8) && wait > Duration::from_millis(7_900));
        assert_eq!(refresh_delay(Instant::now()), MIN_REFRESH);
    }
}
