//! The validated plan: every secret to fetch and the exact file it becomes.
//!
//! The command line, the config file and the legacy environment variables of the original
//! init container all end up here. Everything that can be checked without the network is
//! checked here (references, file names, collisions, modes, owners), so a usage error
//! never costs a round trip and never leaves anything behind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::cli::Cli;
use crate::config::{AggregateFormat, ConfigFile, FileEntry, SecretEntry};
use crate::exit::Class;
use crate::reference::{Format, JsonKey, SecretRef};

/// Linux's NAME_MAX.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Linux's PATH_MAX less the terminating NUL.
pub const MAX_PATH_BYTES: usize = 4095;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: Option<u32>,
}

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
pub enum AggregateKind {
    /// `NAME='value'` lines that `sh` and dotenv parsers read back alike.
    Env,
    /// One JSON object of strings.
    Json,
    /// A minijinja template, checked when the plan is built.
    Template(String),
}

#[derive(Debug)]
pub struct Plan {
    pub output_dir: PathBuf,
    /// Extra CA certificates (PEM) every provider trusts.
    pub ca_file: Option<PathBuf>,
    pub aws_batch: crate::cli::AwsBatch,
    /// `--gcp-endpoint`, checked by the GCP provider.
    pub gcp_endpoint: Option<String>,
    /// The Azure options, read by the Azure provider.
    pub azure: crate::cli::AzureArgs,
    /// `--aws-token-source` other than `file`, checked.
    #[cfg(feature = "aws")]
    pub aws_token: Option<crate::identity::Source>,
    pub allow_non_tmpfs: bool,
    pub items: Vec<Item>,
    pub aggregates: Vec<Aggregate>,
    pub timeout: Duration,
    pub concurrency: usize,
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

/// Where the original init container (see the README) put its file, and what it was called.
const LEGACY_DIR: &str = "/tmp";
const LEGACY_FILE: &str = "secret";

impl Plan {
    pub fn build(cli: &Cli) -> Result<Plan> {
        Plan::build_inner(cli, &|name| std::env::var(name).ok()).context(Class::Usage)
    }

    fn build_inner(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan> {
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
        if let Some(path) = &cli.config {
            let config = ConfigFile::load(path)?;
            for (index, entry) in config.secrets.into_iter().enumerate() {
                let place = format!("{} secrets[{index}]", path.display());
                items.push(config_item(entry, mode, owner).with_context(|| place)?);
            }
            for (index, entry) in config.files.into_iter().enumerate() {
                let place = format!("{} files[{index}]", path.display());
                aggregates.push(aggregate(entry, mode, owner).with_context(|| place)?);
            }
        }

        let mut output_dir = cli.output_dir.clone();
        if items.is_empty() && aggregates.is_empty() {
            // Drop-in mode for the original init container: SECRET_NAME, or AZURE_VAULT_NAME
            // and AZURE_SECRET_NAME (+ MOUNT_NAME).
            if let Some(reference) = legacy_reference(env)? {
                let file = env("MOUNT_NAME")
                    .filter(|name| !name.is_empty())
                    .unwrap_or_else(|| LEGACY_FILE.to_owned());
                items.push(item(reference, Some(file), mode, owner).context("MOUNT_NAME")?);
                output_dir.get_or_insert_with(|| PathBuf::from(LEGACY_DIR));
            }
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
        if cli.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if let Some(path) = &cli.ca_file {
            let pem =
                std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                bail!("--ca-file {} holds no PEM certificate", path.display());
            }
        }
        Ok(Plan {
            output_dir,
            ca_file: cli.ca_file.clone(),
            aws_batch: cli.aws_batch,
            gcp_endpoint: cli.gcp_endpoint.clone(),
            azure: cli.azure.clone(),
            #[cfg(feature = "aws")]
            aws_token: aws_token(cli)?,
            allow_non_tmpfs: cli.allow_non_tmpfs,
            items,
            aggregates,
            timeout: cli.timeout.0,
            concurrency: cli.concurrency,
        })
    }
}

/// `--aws-token-source` and the options it needs, checked together.
#[cfg(feature = "aws")]
fn aws_token(cli: &Cli) -> Result<Option<crate::identity::Source>> {
    use crate::cli::{AwsTokenSource, TokenSourceKind};
    let kind = match cli.aws_token_source {
        AwsTokenSource::File => {
            if cli.aws_token_audience.is_some() {
                bail!("--aws-token-audience is for --aws-token-source gcp-metadata");
            }
            return Ok(None);
        }
        AwsTokenSource::GcpMetadata => TokenSourceKind::GcpMetadata,
        AwsTokenSource::Oauth2ClientCredentials => TokenSourceKind::Oauth2ClientCredentials,
    };
    crate::identity::Source::from_args(
        kind,
        cli.aws_token_audience.as_deref(),
        &cli.oauth2,
        "--aws-token-audience",
    )
    .map(Some)
}

/// The original init container's variables: `SECRET_NAME` (AWS, stage `AWSCURRENT`) or
/// `AZURE_VAULT_NAME` + `AZURE_SECRET_NAME` (the latest version in
/// `https://VAULT.vault.azure.net`, or the `--azure-cloud` suffix). Both sets at once, or
/// half of the Azure one, is a usage error rather than a guess.
fn legacy_reference(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<SecretRef>> {
    let var = |name: &str| env(name).filter(|value| !value.is_empty());
    let aws = var("SECRET_NAME");
    let azure = match (var("AZURE_VAULT_NAME"), var("AZURE_SECRET_NAME")) {
        (Some(vault), Some(name)) => Some((vault, name)),
        (None, None) => None,
        (Some(_), None) => bail!("AZURE_VAULT_NAME is set but AZURE_SECRET_NAME is not"),
        (None, Some(_)) => bail!("AZURE_SECRET_NAME is set but AZURE_VAULT_NAME is not"),
    };
    match (aws, azure) {
        (Some(_), Some(_)) => bail!(
            "both SECRET_NAME (AWS) and AZURE_VAULT_NAME/AZURE_SECRET_NAME (Azure) are set; \
             unset one, or name the secret with --secret"
        ),
        (Some(name), None) => SecretRef::parse(&format!("aws://{name}?version-stage=AWSCURRENT"))
            .context("SECRET_NAME")
            .map(Some),
        (None, Some((vault, name))) => SecretRef::parse(&format!("azure://{vault}/{name}"))
            .context("AZURE_VAULT_NAME/AZURE_SECRET_NAME")
            .map(Some),
        (None, None) => Ok(None),
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

/// A config entry: its fields and the reference's own `?options` may not both set a thing.
fn config_item(entry: SecretEntry, mode: u32, owner: Option<Owner>) -> Result<Item> {
    let mut reference = SecretRef::parse(&entry.reference)?;
    let twice = |what: &str| {
        anyhow!(
            "'{}' sets {what} in the reference and in the entry; give one",
            entry.reference
        )
    };
    if let Some(key) = &entry.key {
        if reference.key.is_some() {
            return Err(twice("a key"));
        }
        reference.key = Some(JsonKey::parse(key)?);
    }
    let options = &mut reference.options;
    if entry
        .format
        .is_some_and(|f| options.format.replace(f).is_some())
    {
        return Err(twice("format"));
    }
    if entry
        .optional
        .is_some_and(|o| options.optional.replace(o).is_some())
    {
        return Err(twice("optional"));
    }
    if let Some(text) = &entry.mode
        && options.mode.replace(parse_mode(text)?).is_some()
    {
        return Err(twice("mode"));
    }
    if let Some(text) = &entry.owner
        && options.owner.replace(parse_owner(text)?).is_some()
    {
        return Err(twice("owner"));
    }
    item(reference, entry.file, mode, owner)
}

fn aggregate(entry: FileEntry, mode: u32, owner: Option<Owner>) -> Result<Aggregate> {
    validate_file(&entry.file)
        .with_context(|| format!("file name '{}'", entry.file.escape_debug()))?;
    let kind = match (entry.format, entry.template, entry.template_file) {
        (AggregateFormat::Template, Some(text), None) => AggregateKind::Template(text),
        (AggregateFormat::Template, None, Some(path)) => AggregateKind::Template(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read template_file {}", path.display()))?,
        ),
        (AggregateFormat::Template, _, _) => {
            bail!("format: template needs exactly one of template or template_file")
        }
        (AggregateFormat::Env, None, None) => AggregateKind::Env,
        (AggregateFormat::Json, None, None) => AggregateKind::Json,
        _ => bail!("template and template_file belong to format: template only"),
    };
    if entry.values.is_empty() && !matches!(kind, AggregateKind::Template(_)) {
        bail!("'{}' has no values", entry.file);
    }
    let mut values = Vec::new();
    for (name, text) in entry.values {
        let identifier = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier && !matches!(kind, AggregateKind::Json) {
            bail!("'{name}' is not a variable name ([A-Za-z_][A-Za-z0-9_]*)");
        }
        let reference = SecretRef::parse(&text).with_context(|| format!("value {name}"))?;
        let options = &reference.options;
        if options.optional.is_some() || options.mode.is_some() || options.owner.is_some() {
            bail!("value {name}: optional, mode and owner apply to files, not to values");
        }
        if options.format == Some(Format::Explode) {
            bail!("value {name}: format=explode makes files, not a value");
        }
        values.push((name, reference));
    }
    if let AggregateKind::Template(source) = &kind {
        crate::shape::check_template(source)?;
    }
    Ok(Aggregate {
        file: entry.file,
        kind,
        values,
        mode: entry
            .mode
            .as_deref()
            .map(parse_mode)
            .transpose()?
            .unwrap_or(mode),
        owner: entry
            .owner
            .as_deref()
            .map(parse_owner)
            .transpose()?
            .or(owner),
    })
}

/// A file name must be a relative path of plain components, each short enough for the
/// filesystem, none of them `.`, `..` or starting with `..` (names the publisher keeps for
/// itself), and no NUL anywhere.
pub fn validate_file(path: &str) -> Result<()> {
    if path.is_empty() {
        bail!("is empty");
    }
    if path.contains('\0') {
        bail!("contains a NUL byte");
    }
    if path.starts_with('/') {
        bail!("is absolute; give a path relative to --output-dir");
    }
    if path.len() > MAX_PATH_BYTES {
        bail!("is {} bytes; the limit is {MAX_PATH_BYTES}", path.len());
    }
    for component in path.split('/') {
        if component.is_empty() {
            bail!("has an empty component (a doubled or trailing '/')");
        }
        if component == "." || component == ".." {
            bail!("has a '{component}' component");
        }
        if component.starts_with("..") {
            bail!("has a component starting with '..', which is reserved for the publisher");
        }
        if component.len() > MAX_COMPONENT_BYTES {
            bail!(
                "has a component of {} bytes; the limit is {MAX_COMPONENT_BYTES}",
                component.len()
            );
        }
    }
    Ok(())
}

/// Two outputs collide when they name the same file (ignoring case, since the app may
/// run on a case-insensitive view of the files) or when one is a directory of the other.
/// Each output is `(path, what it comes from)`.
pub fn check_collisions(outputs: &[(&str, &str)]) -> Result<()> {
    let mut seen: HashMap<String, (&str, &str)> = HashMap::new();
    for &(path, source) in outputs {
        let folded = path.to_lowercase();
        if let Some((other_path, other)) = seen.get(&folded) {
            bail!("{other} ('{other_path}') and {source} ('{path}') name the same file");
        }
        seen.insert(folded, (path, source));
    }
    for &(path, source) in outputs {
        let folded = path.to_lowercase();
        let mut prefix = folded.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if let Some((other_path, other)) = seen.get(parent) {
                bail!(
                    "'{other_path}' (from {other}) is a file, but {source} needs it to be a directory for '{path}'"
                );
            }
            prefix = parent;
        }
    }
    Ok(())
}

/// An octal mode such as `0440`, `440` or `0o440`, at most `0777`.
pub fn parse_mode(text: &str) -> Result<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| anyhow!("mode '{text}' is not an octal number like 0440"))?;
    if mode > 0o777 {
        bail!("mode '{text}' is wider than 0777; setuid, setgid and sticky bits are not allowed");
    }
    Ok(mode)
}

/// `UID` or `UID:GID`, numeric, since minimal images have no user database.
pub fn parse_owner(text: &str) -> Result<Owner> {
    let number = |part: &str| {
        part.parse::<u32>()
            .map_err(|_| anyhow!("owner '{text}' is not UID or UID:GID (numbers)"))
    };
    match text.split_once(':') {
        Some((uid, gid)) => Ok(Owner {
            uid: number(uid)?,
            gid: Some(number(gid)?),
        }),
        None => Ok(Owner {
            uid: number(text)?,
            gid: None,
        }),
    }
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut full = vec!["secret-sidecar"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).unwrap()
    }

    fn build(args: &[&str], env: &[(&str, &str)]) -> Result<Plan> {
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
    fn path_validation_table() {
        for ok in [
            "db",
            "tls/cert.pem",
            ".env",
            "a..b",
            "x".repeat(255).as_str(),
        ] {
            assert!(validate_file(ok).is_ok(), "{ok} should be accepted");
        }
        let long_path = vec!["x"; 2049].join("/");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/..",
            "..data",
            "..x",
            "a/..b",
            ".",
            "a/./b",
            "a//b",
            "a/",
            "nul\0byte",
            "x".repeat(256).as_str(),
            long_path.as_str(),
        ] {
            assert!(validate_file(bad).is_err(), "{bad:?} should be rejected");
        }
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
    fn legacy_environment_is_a_drop_in() {
        let plan = build(&[], &[("SECRET_NAME", "prod/db"), ("MOUNT_NAME", "creds")]).unwrap();
        assert_eq!(plan.output_dir, PathBuf::from("/tmp"));
        assert_eq!(plan.items[0].file, "creds");
        assert_eq!(
            plan.items[0].reference.text,
            "aws://prod/db?version-stage=AWSCURRENT"
        );

        let plan = build(&["--output-dir=/shm"], &[("SECRET_NAME", "db")]).unwrap();
        assert_eq!(plan.output_dir, PathBuf::from("/shm"));
        assert_eq!(plan.items[0].file, "secret");

        // Explicit secrets win over the legacy variables.
        let plan = build(
            &["--output-dir=/o", "--secret=aws://x"],
            &[("SECRET_NAME", "db")],
        )
        .unwrap();
        assert_eq!(plan.items.len(), 1);
        assert_eq!(plan.items[0].file, "x");
    }

    #[test]
    fn nothing_to_do_or_nowhere_to_write_is_an_error() {
        assert!(build(&["--output-dir=/o"], &[]).is_err());
        assert!(build(&["--secret=aws://x"], &[]).is_err());
    }

    #[test]
    fn modes_and_owners() {
        assert_eq!(parse_mode("0440").unwrap(), 0o440);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert_eq!(parse_mode("400").unwrap(), 0o400);
        assert!(parse_mode("4755").is_err());
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("rw").is_err());
        assert_eq!(
            parse_owner("1000").unwrap(),
            Owner {
                uid: 1000,
                gid: None
            }
        );
        assert_eq!(
            parse_owner("1:2").unwrap(),
            Owner {
                uid: 1,
                gid: Some(2)
            }
        );
        assert!(parse_owner("app").is_err());
        assert!(parse_owner("1:").is_err());

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

#[cfg(all(test, feature = "azure"))]
mod azure_legacy_tests {
    use super::*;
    use clap::Parser;

    fn build(args: &[&str], env: &[(&str, &str)]) -> Result<Plan> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut full = vec!["secret-sidecar"];
        full.extend_from_slice(args);
        Plan::build_inner(&Cli::try_parse_from(full).unwrap(), &|name| {
            env.get(name).cloned()
        })
    }

    #[test]
    fn azure_vault_and_secret_name_are_a_drop_in() {
        let plan = build(
            &[],
            &[
                ("AZURE_VAULT_NAME", "my-vault"),
                ("AZURE_SECRET_NAME", "db-password"),
            ],
        )
        .unwrap();
        assert_eq!(plan.output_dir, PathBuf::from("/tmp"));
        assert_eq!(plan.items[0].file, "secret");
        assert_eq!(plan.items[0].reference.text, "azure://my-vault/db-password");

        let plan = build(
            &["--output-dir=/shm"],
            &[
                ("AZURE_VAULT_NAME", "my-vault"),
                ("AZURE_SECRET_NAME", "db"),
                ("MOUNT_NAME", "creds"),
            ],
        )
        .unwrap();
        assert_eq!(plan.output_dir, PathBuf::from("/shm"));
        assert_eq!(plan.items[0].file, "creds");
    }

    #[test]
    fn ambiguous_or_half_legacy_environments_are_usage_errors() {
        for env in [
            &[("AZURE_VAULT_NAME", "my-vault")][..],
            &[("AZURE_SECRET_NAME", "db")][..],
            &[
                ("SECRET_NAME", "prod/db"),
                ("AZURE_VAULT_NAME", "my-vault"),
                ("AZURE_SECRET_NAME", "db"),
            ][..],
            &[("AZURE_VAULT_NAME", "x"), ("AZURE_SECRET_NAME", "db")][..],
        ] {
            assert!(build(&[], env).is_err(), "{env:?} should be rejected");
        }
        // Explicit secrets win, and then the legacy variables are not even read.
        let plan = build(
            &["--output-dir=/o", "--secret=azure://other-vault/x"],
            &[("AZURE_VAULT_NAME", "my-vault")],
        )
        .unwrap();
        assert_eq!(plan.items[0].file, "x");
    }
}
