//! The annotation contract: what a pod asks for with its `secret-sidecar.io/*` annotations,
//! read and checked the way the injected init container will check it.
//!
//! Each annotation is checked on its own first, so that a denial names it; then the
//! command line the init container will be given is parsed by the binary's own parser and
//! planned by its own planner ([`crate::cli::parse_without_env`], [`Plan::with_config`]),
//! so that nothing the init container would refuse at start-up gets past admission. The
//! README's "Inject with annotations" table lists every name here (a unit test holds it
//! to that).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cli::Seconds;
use crate::config::ConfigFile;
use crate::paths::{Owner, parse_owner, validate_file};
use crate::plan::Plan;
use crate::reference::SecretRef;

/// The user the injected containers run as unless `owner` says otherwise: the image's
/// (distroless `nonroot`).
pub const USER: i64 = 65532;

/// Every annotation of the contract starts with this.
pub const PREFIX: &str = "secret-sidecar.io/";
/// The pod label that opts a pod in (the webhook's objectSelector matches it).
pub const INJECT_LABEL: &str = "secret-sidecar.io/inject";
/// Set by the webhook on a pod it has injected; such a pod is returned unchanged.
pub const STATUS: &str = "secret-sidecar.io/status";
pub const STATUS_INJECTED: &str = "injected";

/// Where the secrets are mounted when `mount-path` does not say.
pub const DEFAULT_MOUNT_PATH: &str = "/run/secrets";
/// Where the init container reads the `config` annotation, projected by the downward API.
pub const CONFIG_DIR: &str = "/etc/secret-sidecar";
pub const CONFIG_FILE: &str = "config.yaml";
/// Where the OAuth2 client secret (`oauth2-client-secret-from`) is mounted.
pub const OAUTH2_DIR: &str = "/var/run/secrets/secret-sidecar/oauth2";
pub const OAUTH2_FILE: &str = "client-secret";
/// The key of the Secret that `oauth2-client-secret-from: NAME` reads.
pub const OAUTH2_DEFAULT_KEY: &str = "client-secret";

/// Annotations that become one option of the init container, as `--FLAG=VALUE`: the
/// annotation's name is the flag's.
const FLAGS: &[&str] = &[
    "mode",
    "timeout",
    "aws-token-source",
    "aws-token-audience",
    "oauth2-token-url",
    "oauth2-client-id",
    "oauth2-scope",
    "oauth2-audience",
    "oauth2-client-auth",
    "refresh",
];

/// The other annotations (besides `secret-NAME`), each read below.
const OTHERS: &[&str] = &[
    "config",
    "mount-path",
    "containers",
    "owner",
    "init-first",
    "aws-region",
    "aws-role-arn",
    "aws-token-sidecar",
    "oauth2-client-secret-from",
    "refresh-max-stale",
    "status",
];

/// Names kept for the coming long-running modes; refused until this webhook injects them.
pub const PLANNED: &[&str] = &[
    "refresh-notify-signal",
    "refresh-notify-pid-file",
    "refresh-notify-url",
    "imds-proxy",
];

/// Every annotation name of the contract but `secret-NAME`, for the documentation test.
pub fn names() -> impl Iterator<Item = &'static str> {
    FLAGS.iter().chain(OTHERS).copied()
}

/// A Kubernetes Secret and the key in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKey {
    pub name: String,
    pub key: String,
}

/// What a pod asks for, each annotation checked.
#[derive(Debug, Default)]
pub struct Asked {
    /// `secret-NAME: REF`, by file name.
    pub secrets: BTreeMap<String, String>,
    /// The `config` annotation's YAML.
    pub config: Option<String>,
    pub mount_path: String,
    /// The containers to mount the secrets into; `None` for every app container.
    pub containers: Option<Vec<String>>,
    /// Whether the init container goes before the pod's own init containers.
    pub init_first: bool,
    /// The user (and group) the init container runs as, so that the files are theirs.
    pub owner: Option<Owner>,
    /// `annotation → value` of the [`FLAGS`] annotations given.
    pub flags: BTreeMap<&'static str, String>,
    pub aws_region: Option<String>,
    pub aws_role_arn: Option<String>,
    /// Whether the app containers get a token kept fresh by a native sidecar.
    pub aws_token_sidecar: bool,
    pub oauth2_secret: Option<SecretKey>,
    /// `refresh-max-stale`: the init container's `--max-stale`, with `refresh`.
    pub max_stale: Option<String>,
}

/// A denial: the message names the annotation and what is wrong with it.
#[derive(Debug)]
pub struct Denied(pub String);

fn deny(annotation: &str, err: anyhow::Error) -> Denied {
    Denied(format!("annotation {PREFIX}{annotation}: {err:#}"))
}

impl Asked {
    /// Reads the contract's annotations (others are ignored and never looked at).
    pub fn read(annotations: &BTreeMap<String, String>) -> Result<Asked, Denied> {
        let mut asked = Asked {
            mount_path: DEFAULT_MOUNT_PATH.to_owned(),
            init_first: true,
            ..Asked::default()
        };
        for (key, value) in annotations {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            asked.take(name, value).map_err(|err| deny(name, err))?;
        }
        if asked.secrets.is_empty() && asked.config.is_none() && !asked.aws_token_sidecar {
            return Err(Denied(format!(
                "the pod is labelled {INJECT_LABEL}: \"true\" but asks for nothing: add \
                 {PREFIX}secret-NAME: REF annotations or {PREFIX}config"
            )));
        }
        asked.check_together()?;
        Ok(asked)
    }

    fn take(&mut self, name: &str, value: &str) -> Result<()> {
        if let Some(file) = name.strip_prefix("secret-") {
            validate_file(file).with_context(|| format!("file name '{file}'"))?;
            if value.contains(',') {
                bail!(
                    "a reference cannot hold ',' (the init container's --secret splits at commas)"
                );
            }
            SecretRef::parse(value)?;
            self.secrets.insert(file.to_owned(), value.to_owned());
            return Ok(());
        }
        if let Some(flag) = FLAGS.iter().find(|f| **f == name) {
            check_flag(flag, value)?;
            self.flags.insert(flag, value.to_owned());
            return Ok(());
        }
        match name {
            "config" => {
                let config = ConfigFile::parse(value)?;
                if config.files.iter().any(|f| f.template_file.is_some()) {
                    bail!(
                        "template_file names a file in the init container, which has none; \
                         give the template inline with template:"
                    );
                }
                self.config = Some(value.to_owned());
            }
            "mount-path" => {
                check_mount_path(value)?;
                self.mount_path = value.trim_end_matches('/').to_owned();
            }
            "containers" => {
                let mut names: Vec<String> = Vec::new();
                for part in value.split(',').map(str::trim) {
                    if part.is_empty() {
                        bail!("'{value}' is not a comma-separated list of container names");
                    }
                    if !names.iter().any(|n| n == part) {
                        names.push(part.to_owned());
                    }
                }
                self.containers = Some(names);
            }
            "owner" => {
                let owner = parse_owner(value)?;
                if owner.uid == 0 {
                    bail!("would run the injected container as root; name another user");
                }
                self.owner = Some(owner);
            }
            "init-first" => self.init_first = boolean(value)?,
            "aws-token-sidecar" => self.aws_token_sidecar = boolean(value)?,
            "aws-region" => {
                let valid = !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !valid {
                    bail!("'{value}' is not an AWS region name like eu-west-1");
                }
                self.aws_region = Some(value.to_owned());
            }
            "aws-role-arn" => {
                let valid = value.starts_with("arn:aws")
                    && value.contains(":iam::")
                    && value.contains(":role/")
                    && !value.chars().any(char::is_whitespace);
                if !valid {
                    bail!(
                        "'{value}' is not an IAM role ARN like arn:aws:iam::111122223333:role/app"
                    );
                }
                self.aws_role_arn = Some(value.to_owned());
            }
            "oauth2-client-secret-from" => self.oauth2_secret = Some(secret_key(value)?),
            "refresh-max-stale" => {
                value.parse::<Seconds>().map_err(|e| anyhow!(e))?;
                self.max_stale = Some(value.to_owned());
            }
            "status" => bail!(
                "is set by the webhook on a pod it injected; a pod without the injection must \
                 not carry it"
            ),
            planned if PLANNED.contains(&planned) => bail!(
                "is planned for a coming mode of secret-sidecar and not injected by this version \
                 of the webhook yet; remove it"
            ),
            other => bail!(
                "is not an annotation of secret-sidecar (misspelt?); the names are secret-NAME, \
                 {}",
                names()
                    .filter(|n| *n != "status" && *n != other)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        Ok(())
    }

    /// What only the annotations together can say.
    fn check_together(&self) -> Result<(), Denied> {
        let source = self.flags.get("aws-token-source").map(String::as_str);
        let exchanges = matches!(source, Some(s) if s != "file");
        if exchanges && self.aws_role_arn.is_none() {
            return Err(deny(
                "aws-token-source",
                anyhow!("needs {PREFIX}aws-role-arn: the IAM role the token is exchanged for"),
            ));
        }
        if !exchanges && self.aws_role_arn.is_some() {
            return Err(deny(
                "aws-role-arn",
                anyhow!(
                    "is for {PREFIX}aws-token-source gcp-metadata or oauth2-client-credentials; \
                     with IRSA the role comes from the ServiceAccount"
                ),
            ));
        }
        if self.aws_token_sidecar && !exchanges {
            return Err(deny(
                "aws-token-sidecar",
                anyhow!(
                    "needs {PREFIX}aws-token-source gcp-metadata or oauth2-client-credentials: \
                     the token the sidecar keeps fresh"
                ),
            ));
        }
        if self.refreshes() && !self.publishes() {
            return Err(deny(
                "refresh",
                anyhow!(
                    "keeps published secrets current: add {PREFIX}secret-NAME or {PREFIX}config"
                ),
            ));
        }
        if self.max_stale.is_some() && !self.refreshes() {
            return Err(deny(
                "refresh-max-stale",
                anyhow!("is for {PREFIX}refresh: only a refreshing container can go stale"),
            ));
        }
        if self.oauth2_secret.is_some() && source != Some("oauth2-client-credentials") {
            return Err(deny(
                "oauth2-client-secret-from",
                anyhow!("is for {PREFIX}aws-token-source oauth2-client-credentials"),
            ));
        }
        Ok(())
    }

    /// Whether an init container that publishes secrets is asked for.
    pub fn publishes(&self) -> bool {
        !self.secrets.is_empty() || self.config.is_some()
    }

    /// Whether the init container keeps running as a native sidecar with `--refresh`.
    pub fn refreshes(&self) -> bool {
        self.flags.contains_key("refresh")
    }

    /// The init container's arguments (after the program name).
    pub fn init_args(&self) -> Vec<String> {
        let mut args = vec![format!("--output-dir={}", self.mount_path)];
        for (file, reference) in &self.secrets {
            args.push(format!("--secret={file}={reference}"));
        }
        if self.config.is_some() {
            args.push(format!("--config={CONFIG_DIR}/{CONFIG_FILE}"));
        }
        for (flag, value) in &self.flags {
            args.push(format!("--{flag}={value}"));
        }
        if let Some(max_stale) = &self.max_stale {
            args.push(format!("--max-stale={max_stale}"));
        }
        if self.oauth2_secret.is_some() {
            args.push(format!(
                "--oauth2-client-secret-file={OAUTH2_DIR}/{OAUTH2_FILE}"
            ));
        }
        args
    }

    /// The token sidecar's arguments, writing the token to `out`.
    pub fn token_args(&self, out: &str) -> Vec<String> {
        let mut args = vec!["token".to_owned()];
        for (flag, value) in &self.flags {
            let renamed = match *flag {
                "aws-token-source" => "source",
                "aws-token-audience" => "audience",
                other if other.starts_with("oauth2-") => other,
                _ => continue,
            };
            args.push(format!("--{renamed}={value}"));
        }
        args.push(format!("--out={out}"));
        if self.oauth2_secret.is_some() {
            args.push(format!(
                "--oauth2-client-secret-file={OAUTH2_DIR}/{OAUTH2_FILE}"
            ));
        }
        args
    }

    /// Parses and plans the init container's command line as the binary will (and the
    /// token sidecar's, when there is one): whatever it would refuse is denied here.
    pub fn check_command_lines(&self, token_out: &str) -> Result<(), Denied> {
        let program = std::iter::once("secret-sidecar".to_owned());
        if self.publishes() {
            let cli = crate::cli::parse_without_env(program.clone().chain(self.init_args()))
                .map_err(|err| self.denied_by_binary(&clap_message(&err)))?;
            let config = match &self.config {
                Some(text) => Some(ConfigFile::parse(text).map_err(|err| deny("config", err))?),
                None => None,
            };
            if self.refreshes() {
                crate::refresh::timing(&cli.refresh)
                    .map_err(|err| self.denied_by_binary(&format!("{err:#}")))?;
            }
            let place = format!("annotation {PREFIX}config");
            let plan = Plan::with_config(&cli, config.map(|c| (place.as_str(), c)))
                .map_err(|err| self.denied_by_binary(&format!("{err:#}")))?;
            // The injected container drops every capability: it cannot chown to another
            // user, so a file is owned by the user it runs as (the owner annotation).
            let user = self.owner.map_or(USER as u32, |o| o.uid);
            let owners = plan
                .items
                .iter()
                .map(|i| (i.owner, i.file.as_str()))
                .chain(plan.aggregates.iter().map(|a| (a.owner, a.file.as_str())));
            for (owner, file) in owners {
                if let Some(owner) = owner.filter(|o| o.uid != user) {
                    return Err(Denied(format!(
                        "the file {file} is to be owned by uid {}, but the injected container \
                         runs as uid {user} without the capability to give files away; set \
                         {PREFIX}owner instead (the container then runs as that user)",
                        owner.uid
                    )));
                }
            }
        }
        if self.aws_token_sidecar {
            crate::cli::parse_without_env(program.chain(self.token_args(token_out)))
                .map_err(|err| self.denied_by_binary(&clap_message(&err)))?;
        }
        Ok(())
    }

    /// A message of the binary's, its options named as the annotations that set them.
    fn denied_by_binary(&self, message: &str) -> Denied {
        let mut text = message.to_owned();
        for flag in FLAGS {
            text = text.replace(&format!("--{flag}"), &format!("{PREFIX}{flag}"));
        }
        text = text.replace(
            "--oauth2-client-secret-file",
            &format!("{PREFIX}oauth2-client-secret-from"),
        );
        text = text.replace("--config", &format!("{PREFIX}config"));
        text = text.replace("--max-stale", &format!("{PREFIX}refresh-max-stale"));
        for (file, reference) in &self.secrets {
            text = text.replace(
                &format!("--secret {file}={reference}"),
                &format!("{PREFIX}secret-{file}"),
            );
        }
        Denied(format!("the annotations together: {text}"))
    }
}

#[cfg(test)]
mod tests;
mod values;

use values::{boolean, check_flag, check_mount_path, clap_message, secret_key};
