//! The init container's run: plan, check the output directory, fetch everything, shape,
//! publish, exit.
//!
//! Nothing touches the output directory until every secret has been fetched and shaped,
//! so any failure before the publish step leaves the previous set exactly as it was.

use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use tracing::{debug, info};

use crate::cli::Cli;
use crate::exit::Failure;
use crate::fetch::{self, Results};
use crate::plan::Plan;
use crate::providers::Providers;
use crate::publish::Publisher;
use crate::render::{self, Rendered};
use crate::signal::Stop;

/// Runs once, unless SIGTERM or SIGINT comes first. Publishing has no await point, so a
/// signal lands either before it (nothing new is published) or after it (the whole set
/// is); the run never stops half-way through a publish.
pub async fn run(cli: &Cli) -> Result<()> {
    let mut stop = Stop::listen();
    tokio::select! {
        result = run_once(cli) => result,
        signal = stop.recv() => Err(anyhow!("stopped by {signal} before publishing; nothing new was published"))
            .context(Failure::Interrupted),
    }
}

async fn run_once(cli: &Cli) -> Result<()> {
    let plan = Plan::build(cli)?;
    let publisher = open(&plan)?;
    publish_first(&plan, &publisher).await.map(drop)
}

/// The output directory of a checked plan, checked in turn before anything is fetched.
pub fn open(plan: &Plan) -> Result<Publisher> {
    debug!(
        secrets = plan.references().count(),
        files = plan.items.len() + plan.aggregates.len(),
        dir = %plan.output_dir.display(),
        "plan checked"
    );
    Publisher::open(&plan.output_dir, plan.allow_non_tmpfs)
}

/// What the first publish leaves to a mode that goes on (refresh): the connected
/// providers, what was fetched, and the set that was published.
pub struct Published<'p> {
    pub providers: Providers,
    pub fetched: Results<'p>,
    pub rendered: Rendered<'p>,
}

/// The init run proper: fetch everything within `--timeout`, shape, publish, log. Fails
/// closed: nothing is published unless every required secret was fetched and shaped.
pub async fn publish_first<'p>(plan: &'p Plan, publisher: &Publisher) -> Result<Published<'p>> {
    let started = Instant::now();
    let targets = fetch::targets(plan);
    let everything = async {
        let providers = fetch::connect(plan, &targets).await?;
        let outcomes = fetch::read(plan, &providers, &targets, None).await?;
        Ok::<_, anyhow::Error>((providers, fetch::settle(plan, outcomes)?))
    };
    let (providers, fetched) = tokio::time::timeout(plan.timeout, everything)
        .await
        .map_err(|_| {
            anyhow!(
                "the {:?} deadline (--timeout) passed before every secret was fetched",
                plan.timeout
            )
        })
        .context(Failure::Transient)??;

    let rendered = render::set(plan, &fetched)?;
    publisher.publish(&rendered.to_publish())?;

    for file in &rendered.files {
        for source in &file.sources {
            let received = fetched[&source.target].as_ref().ok();
            info!(
                reference = %source,
                version = %received.and_then(|r| r.fetched.version.as_deref()).unwrap_or("-"),
                file = %publisher.path().join(&file.path).display(),
                bytes = file.value.len(),
                ms = received.map_or(0, |r| r.took.as_millis() as u64),
                "published"
            );
        }
    }
    info!(
        dir = %publisher.path().display(),
        files = rendered.files.len(),
        ms = started.elapsed().as_millis() as u64,
        "all secrets published"
    );
    Ok(Published {
        providers,
        fetched,
        rendered,
    })
}
