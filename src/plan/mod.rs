//! The validated plan: every secret to fetch, the exact file it becomes, and the
//! providers' settings.
//!
//! The command line, the config file and the legacy environment variables of the original
//! init container (`legacy.rs`) all end up here. Everything that can be checked without
//! the network is checked here (references, file names, collisions, modes, owners, the
//! providers' options), so a usage error never costs a round trip and never leaves
//! anything behind.

mod entries;
mod legacy;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::Cli;
use crate::config::ConfigFile;
use crate::exit::Failure;
use crate::net::{CaBundle, HttpConfig};
use crate::paths::{Owner, check_collisions, parse_mode, parse_owner, validate_file};
use crate::providers::Setup;
use crate::reference::{Format, SecretRef};
use crate::retry::Policy;
use crate::shape::AggregateKind;

/// One secret published as one file (or, exploded, as a folder of files).
#[derive(Debug)]
pub struct Item {
    pub reference: SecretRef,
    /// A validated relative path inside the output directory; the folder for `explode`.
    pub file: String,
    pub format: Format,
    /// A missing secret is skipped with a warning instead of failing the run.
    pub optional: bool,
    pub mode: u32,
    pub owner: Option<Owner>,
}

/// One file assembled from several secrets.
#[derive(Debug)]
pub struct Aggregate {
    pub file: String,
    pub kind: AggregateKind,
    /// Variable name and the secret (a string) it takes its value from.
    pub values: Vec<(String, SecretRef)>,
    pub mode: u32,
    pub owner: Option<Owner>,
}

#[derive(Debug)]
pub struct Plan {
    pub output_dir: PathBuf,
    pub allow_non_tmpfs: bool,
    pub items: Vec<Item>,
    pub aggregates: Vec<Aggregate>,
    /// The deadline for fetching everything (`--timeout`).
    pub timeout: Duration,
    /// The retry policy, its attempts no longer than the deadline.
    pub policy: Policy,
    pub concurrency: usize,
    /// What the providers are given, each provider's options whole.
    pub providers: Setup,
}

impl Plan {
    /// Every reference the run must fetch, items first.
    pub fn references(&self) -> impl Iterator<Item = &SecretRef> {
        self.items.iter().map(|item| &item.reference).chain(
            self.aggregates
                .iter()
                .flat_map(|a| a.values.iter().map(|(_, r)| r)),
        )
    }
}

impl Plan {
    pub fn build(cli: &Cli) -> Result<Plan> {
        Plan::build_inner(cli, &crate::env::var).context(Failure::Usage)
    }

    /// The plan of a command line whose config file is given already read (`place` names
    /// it in messages), ignoring the legacy variables: how the admission webhook checks the
    /// init container it injects, before that container (and its file) exists.
    pub fn with_config(cli: &Cli, config: Option<(&str, ConfigFile)>) -> Result<Plan> {
        Plan::assemble(cli, config, &|_| None)
    }

    fn build_inner(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan> {
        let place = cli.config.as_ref().map(|path| path.display().to_string());
        let config = match &cli.config {
            Some(path) => Some(ConfigFile::load(path)?),
            None => None,
        };
        Plan::assemble(cli, place.as_deref().zip(config), env)
    }

    fn assemble(
        cli: &Cli,
        config: Option<(&str, ConfigFile)>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Plan> {
        let mode = parse_mode(&cli.mode).context("--mode")?;
        let owner = cli.owner.as_deref().map(parse_owner).transpose()?;

        let mut items = Vec::new();
        let mut aggregates = Vec::new();
        for arg in &cli.secrets {
            let (file, reference) = split_file(arg);
            let reference =
                SecretRef::parse(reference).with_context(|| format!("--secret {arg}"))?;
            items.push(
                item(reference, file.map(str::to_owned), mode, owner)
                    .with_context(|| format!("--secret {arg}"))?,
            );
        }
        if let Some((place, config)) = config {
            for (index, entry) in config.secrets.into_iter().enumerate() {
                let place = format!("{place} secrets[{index}]");
                items.push(entries::item(entry, mode, owner).with_context(|| place)?);
            }
            for (index, entry) in config.files.into_iter().enumerate() {
                let place = format!("{place} files[{index}]");
                aggregates.push(entries::aggregate(entry, mode, owner).with_context(|| place)?);
            }
        }

        let mut output_dir = cli.output_dir.clone();
        if items.is_empty()
            && aggregates.is_empty()
            && let Some(drop_in) = legacy::from_env(env)?
        {
            items.push(
                item(drop_in.reference, Some(drop_in.file), mode, owner).context("MOUNT_NAME")?,
            );
            output_dir.get_or_insert(drop_in.output_dir);
        }
        if items.is_empty() && aggregates.is_empty() {
            bail!(
                "no secret to fetch: give --secret, --config, SECRET_NAME, or AZURE_VAULT_NAME \
                 and AZURE_SECRET_NAME"
            );
        }
        let Some(output_dir) = output_dir else {
            bail!("--output-dir is required (the shared in-memory volume)");
        };
        let mut outputs: Vec<(&str, &str)> = items
            .iter()
            .map(|i| (i.file.as_str(), i.reference.text.as_str()))
            .collect();
        outputs.extend(
            aggregates
                .iter()
                .map(|a| (a.file.as_str(), "an aggregate file")),
        );
        check_collisions(&outputs)?;
        if cli.refresh.refresh.is_none() && cli.refresh.refresh_options_given() {
            bail!(
                "--max-stale, --on-revoked, --metrics-addr and --notify-* work with --refresh only"
            );
        }
        if cli.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        let policy = Policy::within(cli.timeout.0);
        let http = HttpConfig {
            attempt_timeout: policy.attempt_timeout,
            ca: cli.ca_file.as_deref().map(CaBundle::read).transpose()?,
            concurrency: cli.concurrency,
        };
        Ok(Plan {
            output_dir,
            allow_non_tmpfs: cli.allow_non_tmpfs,
            items,
            aggregates,
            timeout: cli.timeout.0,
            policy,
            concurrency: cli.concurrency,
            providers: Setup {
                http,
                #[cfg(feature = "aws")]
                aws: crate::providers::aws::AwsConfig::new(
                    &cli.aws,
                    &cli.aws_token,
                    cli.concurrency,
                )?,
                #[cfg(feature = "azure")]
                azure: cli.azure.clone(),
                #[cfg(feature = "gcp")]
                gcp: cli.gcp.clone(),
                #[cfg(feature = "aws")]
                ssm: crate::providers::ssm::SsmConfig {
                    args: cli.ssm.clone(),
                    concurrency: cli.concurrency,
                },
            },
        })
    }
}

/// `FILE=SCHEME://…` → (`FILE`, `SCHEME://…`). The file part is everything before the
/// last `=` that precedes the scheme's `://`, so a file name may itself contain `=`.
pub fn split_file(arg: &str) -> (Option<&str>, &str) {
    let scheme_end = arg.find("://").unwrap_or(0);
    match arg[..scheme_end].rfind('=') {
        Some(at) => (Some(&arg[..at]), &arg[at + 1..]),
        None => (None, arg),
    }
}

/// An item for `reference`, its file named by the user or derived from the reference.
fn item(
    reference: SecretRef,
    file: Option<String>,
    mode: u32,
    owner: Option<Owner>,
) -> Result<Item> {
    let file = file.unwrap_or_else(|| reference.default_file_name());
    validate_file(&file).with_context(|| format!("file name '{}'", file.escape_debug()))?;
    let options = &reference.options;
    Ok(Item {
        file,
        format: options.format.unwrap_or_default(),
        optional: options.optional.unwrap_or(false),
        mode: options.mode.unwrap_or(mode),
        owner: options.owner.or(owner),
        reference,
    })
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    fn cli(args: &[&str]) -> Cli {
        let mut full = vec!["secret-sidecar"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).unwrap()
    }

    pub(super) fn build(args: &[&str], env: &[(&str, &str)]) -> Result<Plan> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Plan::build_inner(&cli(args), &|name| env.get(name).cloned())
    }

    #[test]
    fn splits_file_from_reference() {
        assert_eq!(
            split_file("db=aws://prod/db"),
            (Some("db"), "aws://prod/db")
        );
        assert_eq!(split_file("a=b=aws://x"), (Some("a=b"), "aws://x"));
        assert_eq!(
            split_file("aws://x?version-id=1"),
            (None, "aws://x?version-id=1")
        );
        assert_eq!(split_file("noscheme"), (None, "noscheme"));
    }

    #[test]
    fn collisions_are_usage_errors() {
        assert!(
            build(
                &[
                    "--output-dir=/o",
                    "--secret=a=aws://x",
                    "--secret=A=aws://y"
                ],
                &[]
            )
            .is_err()
        );
        assert!(
            build(
                &[
                    "--output-dir=/o",
                    "--secret=a=aws://x",
                    "--secret=a/b=aws://y"
                ],
                &[]
            )
            .is_err()
        );
        assert!(
            build(
                &[
                    "--output-dir=/o",
                    "--secret=aws://p/x",
                    "--secret=p_x=aws://y"
                ],
                &[]
            )
            .is_err()
        );
        assert!(
            build(
                &[
                    "--output-dir=/o",
                    "--secret=a=aws://x",
                    "--secret=ab=aws://y"
                ],
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn nothing_to_do_or_nowhere_to_write_is_an_error() {
        assert!(build(&["--output-dir=/o"], &[]).is_err());
        assert!(build(&["--secret=aws://x"], &[]).is_err());
    }

    #[test]
    fn global_mode_and_owner_apply_to_every_item() {
        let plan = build(
            &[
                "--output-dir=/o",
                "--mode=0400",
                "--owner=7:8",
                "--secret=aws://x",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(plan.items[0].mode, 0o400);
        assert_eq!(
            plan.items[0].owner,
            Some(Owner {
                uid: 7,
                gid: Some(8)
            })
        );
    }
}
