//! Turning a plan's fetched values into the complete set of files to publish: each item
//! shaped (raw, one key, exploded, base64), each aggregate rendered, the names checked
//! once more now that exploded members are known, and the manifest that describes it all
//! without a value.

use std::time::SystemTime;

use anyhow::{Context, Result, anyhow};
use serde_json::json;
use tracing::warn;

use crate::exit::Failure;
use crate::fetch::Results;
use crate::paths::{Owner, check_collisions};
use crate::plan::{Aggregate, Plan};
use crate::publish::NewFile;
use crate::reference::{Format, SecretRef};
use crate::secret::SecretValue;
use crate::shape;

/// The value-free description of the published set, beside the files.
pub const MANIFEST: &str = "..manifest.json";

/// One file about to be published, and the references its content came from.
pub struct Shaped<'p> {
    pub path: String,
    pub value: SecretValue,
    pub mode: u32,
    pub owner: Option<Owner>,
    pub sources: Vec<&'p SecretRef>,
}

/// The set to publish: the shaped files and the manifest.
pub struct Rendered<'p> {
    pub files: Vec<Shaped<'p>>,
    pub manifest: SecretValue,
}

impl Rendered<'_> {
    /// What the publisher writes: every file, then the manifest (read-only for all; it
    /// holds names, sizes and versions, never a value).
    pub fn to_publish(&self) -> Vec<NewFile<'_>> {
        let mut files: Vec<NewFile<'_>> = self
            .files
            .iter()
            .map(|file| NewFile {
                path: &file.path,
                value: &file.value,
                mode: file.mode,
                owner: file.owner,
            })
            .collect();
        files.push(NewFile {
            path: MANIFEST,
            value: &self.manifest,
            mode: 0o444,
            owner: None,
        });
        files
    }
}

/// Shapes every fetched value into its files and writes the manifest.
pub fn set<'p>(plan: &'p Plan, fetched: &Results<'p>) -> Result<Rendered<'p>> {
    let files = shape_all(plan, fetched)?;
    let paths: Vec<(&str, &str)> = files
        .iter()
        .map(|file| {
            (
                file.path.as_str(),
                file.sources.first().map_or("", |r| r.text.as_str()),
            )
        })
        .collect();
    // Exploded member names are only known now; they may clash with other files.
    check_collisions(&paths).context(Failure::BadData)?;
    let manifest = manifest(&files, plan, fetched)?;
    Ok(Rendered { files, manifest })
}

fn shape_all<'p>(plan: &'p Plan, fetched: &Results<'p>) -> Result<Vec<Shaped<'p>>> {
    let mut outputs = Vec::new();
    for item in &plan.items {
        let reference = &item.reference;
        let received = match &fetched[&reference.target] {
            Ok(received) => received,
            Err(err) if item.optional => {
                warn!(reference = %reference, file = %item.file, "optional secret skipped: {err:#}");
                continue;
            }
            // Only refresh mode leaves a required secret out (--on-revoked remove).
            Err(err) => {
                warn!(reference = %reference, file = %item.file, "secret left out of the set: {err:#}");
                continue;
            }
        };
        let context = || format!("{reference} for {}", item.file);
        let files = match (reference.target.is_tree(), item.format) {
            (true, _) => Some(shape::tree(&received.fetched.value).with_context(context)?),
            (false, Format::Explode) => {
                Some(shape::explode(reference, &received.fetched.value).with_context(context)?)
            }
            (false, _) => None,
        };
        if let Some(files) = files {
            for (name, value) in files {
                outputs.push(Shaped {
                    path: format!("{}/{name}", item.file),
                    value,
                    mode: item.mode,
                    owner: item.owner,
                    sources: vec![reference],
                });
            }
        } else {
            outputs.push(Shaped {
                path: item.file.clone(),
                value: shape::value(reference, &received.fetched.value).with_context(context)?,
                mode: item.mode,
                owner: item.owner,
                sources: vec![reference],
            });
        }
    }
    for aggregate in &plan.aggregates {
        // A first read never leaves an aggregate's secret out; refresh mode may
        // (--on-revoked remove), and then the file goes with it.
        if let Some(err) = missing_source(aggregate, fetched) {
            warn!(file = %aggregate.file, "aggregate file left out of the set: {err:#}");
            continue;
        }
        let mut values = Vec::with_capacity(aggregate.values.len());
        for (name, reference) in &aggregate.values {
            let received = fetched[&reference.target]
                .as_ref()
                .map_err(|err| anyhow!("{err:#}"))
                .context(Failure::Internal)?;
            let value = shape::value(reference, &received.fetched.value)
                .with_context(|| format!("{reference} for {name} in {}", aggregate.file))?;
            values.push((name.as_str(), value));
        }
        outputs.push(Shaped {
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
fn manifest(outputs: &[Shaped<'_>], plan: &Plan, fetched: &Results<'_>) -> Result<SecretValue> {
    let files: Vec<_> = outputs
        .iter()
        .map(|out| {
            let sources: Vec<_> = out
                .sources
                .iter()
                .map(|source| {
                    let received = fetched[&source.target].as_ref().ok();
                    json!({
                        "reference": source.text,
                        "version": received.and_then(|g| g.fetched.version.clone()),
                        "fetched_at": received.map(|g| rfc3339(g.at)),
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
    let mut skipped: Vec<_> = Vec::new();
    for item in &plan.items {
        if let Err(err) = &fetched[&item.reference.target] {
            let reason = match item.optional {
                true => "not found (optional)",
                false => Failure::of(err).label(),
            };
            skipped.push(
                json!({"reference": item.reference.text, "file": item.file, "reason": reason}),
            );
        }
    }
    for aggregate in &plan.aggregates {
        if let Some(err) = missing_source(aggregate, fetched) {
            skipped.push(json!({"file": aggregate.file, "reason": Failure::of(err).label()}));
        }
    }
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

/// The error of the first secret `aggregate` needs that is not in `fetched`.
fn missing_source<'f>(
    aggregate: &Aggregate,
    fetched: &'f Results<'_>,
) -> Option<&'f anyhow::Error> {
    aggregate
        .values
        .iter()
        .find_map(|(_, reference)| fetched[&reference.target].as_ref().err())
}

/// Whether two rendered sets publish the same files: names, bytes, modes and owners, in
/// the same order (rendering is deterministic). The manifest is left out: it records
/// versions and times, which change when nothing an application reads does.
pub fn same_files(a: &Rendered<'_>, b: &Rendered<'_>) -> bool {
    a.files.len() == b.files.len()
        && a.files.iter().zip(&b.files).all(|(a, b)| {
            a.path == b.path
                && a.mode == b.mode
                && a.owner == b.owner
                && a.value.expose() == b.value.expose()
        })
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
