//! One run: plan, check the output directory, fetch everything, shape, publish.
//!
//! Nothing touches the output directory until every secret has been fetched and shaped,
//! so any failure before the publish step leaves the previous set exactly as it was.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use tracing::{debug, error, info, warn};

use crate::cli::Cli;
use crate::exit::Class;
use crate::plan::{Owner, Plan, check_collisions};
use crate::providers::{Fetched, Providers, Settings, Target};
use crate::publish::{OutputDir, OutputFile};
use crate::reference::{Format, SecretRef};
use crate::retry::Policy;
use crate::secret::SecretValue;
use crate::shape;

/// The value-free description of the published set, beside the files.
pub const MANIFEST: &str = "..manifest.json";

/// A fetched secret with when and how fast it came.
struct Got {
    fetched: Fetched,
    at: SystemTime,
    took: Duration,
}

/// One file about to be published, and where its content came from.
struct Output<'p> {
    path: String,
    value: SecretValue,
    mode: u32,
    owner: Option<Owner>,
    sources: Vec<&'p SecretRef>,
}

/// Runs once, unless SIGTERM or SIGINT comes first. Publishing has no await point, so a
/// signal lands either before it (nothing new is published) or after it (the whole set
/// is); the run never stops half-way through a publish.
pub async fn run(cli: &Cli) -> Result<()> {
    let mut stop = Stop::listen();
    tokio::select! {
        result = run_once(cli) => result,
        signal = stop.recv() => Err(anyhow!("stopped by {signal} before publishing; nothing new was published"))
            .context(Class::Interrupted),
    }
}

/// SIGTERM and SIGINT. Listened for from `listen` on, so a process that waits more than
/// once (`token` mode) does not lose a signal that arrives between two waits.
pub(crate) struct Stop {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Stop {
    pub(crate) fn listen() -> Stop {
        use tokio::signal::unix::{SignalKind, signal};
        Stop {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// The next signal's name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        match (&mut self.term, &mut self.int) {
            (Some(term), Some(int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            // Without handlers the default action (terminate) still applies.
            _ => std::future::pending().await,
        }
    }
}

async fn run_once(cli: &Cli) -> Result<()> {
    let plan = Plan::build(cli)?;
    let output = OutputDir::open(&plan.output_dir, plan.allow_non_tmpfs)?;
    let mut policy = Policy::default();
    policy.attempt_timeout = policy.attempt_timeout.min(plan.timeout);
    let settings = Settings {
        attempt_timeout: policy.attempt_timeout,
        ca_file: plan.ca_file.clone(),
        aws_batch: plan.aws_batch,
        gcp_endpoint: plan.gcp_endpoint.clone(),
        azure: plan.azure.clone(),
        #[cfg(feature = "aws")]
        aws_token: plan.aws_token.clone(),
    };

    let started = Instant::now();
    let fetched = tokio::time::timeout(plan.timeout, fetch_all(&plan, &settings, &policy))
        .await
        .map_err(|_| {
            anyhow!(
                "the {:?} deadline (--timeout) passed before every secret was fetched",
                plan.timeout
            )
        })
        .context(Class::Transient)??;

    let outputs = shape_all(&plan, &fetched)?;
    let paths: Vec<(&str, &str)> = outputs
        .iter()
        .map(|o| {
            (
                o.path.as_str(),
                o.sources.first().map_or("", |r| r.text.as_str()),
            )
        })
        .collect();
    // Exploded member names are only known now; they may clash with other files.
    check_collisions(&paths).context(Class::BadData)?;

    let manifest = manifest(&outputs, &plan, &fetched)?;
    let mut files: Vec<OutputFile<'_>> = outputs
        .iter()
        .map(|o| OutputFile {
            path: &o.path,
            value: &o.value,
            mode: o.mode,
            owner: o.owner,
        })
        .collect();
    files.push(OutputFile {
        path: MANIFEST,
        value: &manifest,
        mode: 0o444,
        owner: None,
    });
    output.publish(&files)?;

    for out in &outputs {
        for source in &out.sources {
            let got = &fetched[&source.target].as_ref().ok();
            info!(
                reference = %source,
                version = %got.and_then(|g| g.fetched.version.as_deref()).unwrap_or("-"),
                file = %output.path().join(&out.path).display(),
                bytes = out.value.len(),
                ms = got.map_or(0, |g| g.took.as_millis() as u64),
                "published"
            );
        }
    }
    info!(
        dir = %output.path().display(),
        files = outputs.len(),
        ms = started.elapsed().as_millis() as u64,
        "all secrets published"
    );
    Ok(())
}

type Results<'p> = HashMap<&'p Target, Result<Got>>;

/// Fetches each distinct secret once (two keys of one JSON secret cost one call), a
/// bounded number at a time. Then decides: every failure fails the run, except a secret
/// that does not exist and that only optional items use, which is skipped with a warning.
async fn fetch_all<'p>(
    plan: &'p Plan,
    settings: &Settings,
    policy: &Policy,
) -> Result<Results<'p>> {
    let mut targets: Vec<&Target> = Vec::new();
    for reference in plan.references() {
        if !targets.contains(&&reference.target) {
            targets.push(&reference.target);
        }
    }
    let providers = policy
        .run(|| Providers::connect(targets.iter().copied(), settings))
        .await?;
    providers.prefetch(targets.iter().copied()).await?;

    let results: Results<'p> = stream::iter(&targets)
        .map(|target| {
            let providers = &providers;
            async move {
                let started = Instant::now();
                let result = policy
                    .run(|| providers.fetch(target))
                    .await
                    .map(|fetched| Got {
                        fetched,
                        at: SystemTime::now(),
                        took: started.elapsed(),
                    });
                if let Ok(got) = &result {
                    debug!(
                        target = ?target,
                        version = %got.fetched.version.as_deref().unwrap_or("-"),
                        ms = got.took.as_millis() as u64,
                        "fetched"
                    );
                }
                (*target, result)
            }
        })
        .buffered(plan.concurrency)
        .collect()
        .await;

    // One line per failed secret, in plan order; the first decides the exit code. A
    // failure that ends the run is taken out of the results whole, so its chain (and its
    // class tag) is reported once, as the provider wrote it.
    let mut results = results;
    let mut first_error = None;
    for reference in plan.references() {
        let failed = matches!(&results.get(&reference.target), Some(Err(err)) if !skippable(plan, reference, err));
        if !failed {
            continue;
        }
        let Some(Err(err)) = results.remove(&reference.target) else {
            continue;
        };
        let err = err.context(format!("fetching {reference}"));
        match first_error {
            None => first_error = Some(err),
            Some(_) => error!(exit_code = Class::of(&err).code(), "{err:#}"),
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(results),
    }
}

/// Only "does not exist" is skippable, and only when nothing required uses the secret.
fn skippable(plan: &Plan, reference: &SecretRef, err: &anyhow::Error) -> bool {
    Class::of(err) == Class::NotFound
        && plan
            .items
            .iter()
            .filter(|item| item.reference.target == reference.target)
            .all(|item| item.optional)
        && !plan
            .aggregates
            .iter()
            .any(|a| a.values.iter().any(|(_, r)| r.target == reference.target))
}

fn shape_all<'p>(plan: &'p Plan, fetched: &Results<'p>) -> Result<Vec<Output<'p>>> {
    let mut outputs = Vec::new();
    for item in &plan.items {
        let reference = &item.reference;
        let got = match &fetched[&reference.target] {
            Ok(got) => got,
            Err(err) => {
                warn!(reference = %reference, file = %item.file, "optional secret skipped: {err:#}");
                continue;
            }
        };
        let context = || format!("{reference} for {}", item.file);
        if item.format == Format::Explode {
            for (name, value) in
                shape::explode(reference, &got.fetched.value).with_context(context)?
            {
                outputs.push(Output {
                    path: format!("{}/{name}", item.file),
                    value,
                    mode: item.mode,
                    owner: item.owner,
                    sources: vec![reference],
                });
            }
        } else {
            outputs.push(Output {
                path: item.file.clone(),
                value: shape::value(reference, &got.fetched.value).with_context(context)?,
                mode: item.mode,
                owner: item.owner,
                sources: vec![reference],
            });
        }
    }
    for aggregate in &plan.aggregates {
        let mut values = Vec::with_capacity(aggregate.values.len());
        for (name, reference) in &aggregate.values {
            let got = fetched[&reference.target]
                .as_ref()
                .map_err(|err| anyhow!("{err:#}"))
                .context(Class::Internal)?;
            let value = shape::value(reference, &got.fetched.value)
                .with_context(|| format!("{reference} for {name} in {}", aggregate.file))?;
            values.push((name.as_str(), value));
        }
        outputs.push(Output {
            path: aggregate.file.clone(),
            value: shape::aggregate(&aggregate.kind, &values)
                .with_context(|| format!("rendering {}", aggregate.file))?,
            mode: aggregate.mode,
            owner: aggregate.owner,
            sources: aggregate.values.iter().map(|(_, r)| r).collect(),
        });
    }
    Ok(outputs)
}

/// What was published, for apps, health checks and people: for each file its sources,
/// their provider versions and fetch times, its size, mode and owner. Never a value or a
/// hash of one.
fn manifest(outputs: &[Output<'_>], plan: &Plan, fetched: &Results<'_>) -> Result<SecretValue> {
    let files: Vec<_> = outputs
        .iter()
        .map(|out| {
            let sources: Vec<_> = out
                .sources
                .iter()
                .map(|source| {
                    let got = fetched[&source.target].as_ref().ok();
                    json!({
                        "reference": source.text,
                        "version": got.and_then(|g| g.fetched.version.clone()),
                        "fetched_at": got.map(|g| rfc3339(g.at)),
                    })
                })
                .collect();
            json!({
                "path": out.path,
                "bytes": out.value.len(),
                "mode": format!("{:04o}", out.mode),
                "owner": out.owner.map(|o| match o.gid {
                    Some(gid) => format!("{}:{gid}", o.uid),
                    None => o.uid.to_string(),
                }),
                "sources": sources,
            })
        })
        .collect();
    let skipped: Vec<_> = plan
        .items
        .iter()
        .filter(|item| fetched[&item.reference.target].is_err())
        .map(|item| json!({"reference": item.reference.text, "file": item.file, "reason": "not found (optional)"}))
        .collect();
    let document = json!({
        "version": 1,
        "published_at": rfc3339(SystemTime::now()),
        "files": files,
        "skipped": skipped,
    });
    let mut text = serde_json::to_vec_pretty(&document).context("writing the manifest")?;
    text.push(b'\n');
    Ok(SecretValue::new(text))
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
