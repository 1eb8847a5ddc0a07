//! The command line, mirrored one to one by `SECRET_SIDECAR_*` environment variables.
//!
//! This struct only describes what the user typed; [`crate::plan::Plan`] turns it into
//! something checked and typed. Options that belong to one part of the program are that
//! part's own clap `Args` struct, flattened in here and handed to it whole: each provider's
//! (`AwsArgs`, `AzureArgs`, `GcpArgs`) and the AWS identity's (`AwsTokenArgs`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

mod refresh;

pub use refresh::{OnRevoked, RefreshArgs};

use crate::exit::HELP_TABLE;
#[cfg(feature = "azure")]
mod imds_proxy;
#[cfg(feature = "aws")]
use crate::identity::options::AwsTokenArgs;
use crate::logging::LogArgs;
#[cfg(feature = "aws")]
use crate::providers::aws::AwsArgs;
#[cfg(feature = "azure")]
use crate::providers::azure::AzureArgs;
#[cfg(feature = "gcp")]
use crate::providers::gcp::GcpArgs;
#[cfg(feature = "aws")]
use crate::providers::ssm::SsmArgs;
#[cfg(feature = "azure")]
pub use imds_proxy::ImdsProxyArgs;
#[cfg(feature = "aws")]
mod token;
#[cfg(feature = "aws")]
pub use token::TokenArgs;
#[cfg(feature = "webhook")]
mod webhook;
#[cfg(feature = "webhook")]
pub use webhook::WebhookArgs;

/// Fetch secrets with the workload's own identity, publish them atomically as files in an
/// in-memory directory, and exit.
///
/// Runs before the application: as a Kubernetes init container, an ECS container the app
/// depends on, or locally. On any failure it exits non-zero and publishes nothing, so the
/// application never starts on a partial set.
#[derive(Debug, Parser)]
#[command(name = "secret-sidecar", version, after_help = HELP_TABLE, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// A secret to publish, as [FILE=]REF; repeat for more.
    ///
    /// REF is aws://NAME_OR_ARN[?version-stage=STAGE|version-id=ID][#KEY],
    /// ssm://NAME, ssm:///PATH/NAME or ssm://arn:aws:ssm:REGION:ACCOUNT:parameter/NAME
    /// [?version=N|label=L][#KEY] (Parameter Store; SecureString decrypted), ssm:///PATH/
    /// (every parameter under the path, recursively, as files in a folder named FILE),
    /// azure://VAULT/NAME[?version=VERSION][#KEY],
    /// azure://https://HOST[:PORT]/secrets/NAME[/VERSION][#KEY],
    /// gcp://PROJECT/NAME[?version=N|ALIAS][&location=REGION][#KEY] or
    /// gcp://projects/P/[locations/L/]secrets/S[/versions/V][#KEY]. #KEY publishes one
    /// field of a JSON secret (#password, or a JSON Pointer like #/db/password): a string
    /// as it is, a number, boolean or null as its JSON text (#port -> 5432), an object or
    /// array as compact JSON.
    /// Per-secret parameters: format=raw|explode|base64|pem-key|pem-cert|pem-chain|pem-bundle
    /// (explode: one file per JSON member, in a folder named FILE; pem-*: a certificate
    /// stored as PKCS#12, raw or base64, or PEM, as its PEM private key, leaf, chain, or key
    /// and chain), optional (skip it if it does not exist), mode=0400, owner=UID[:GID].
    /// Without FILE= the file is named after the secret: its name (for an ARN, without the
    /// random suffix), then the key, joined by '_', with characters outside [A-Za-z0-9._-]
    /// turned into '_' (aws://prod/db#password -> prod_db_password).
    /// In the environment variable, separate secrets with commas.
    ///
    /// Example: --secret db=aws://prod/db#password --secret 'tls=aws://prod/tls?format=explode&mode=0400'
    #[arg(
        long = "secret",
        value_name = "[FILE=]REF",
        env = "SECRET_SIDECAR_SECRET",
        value_delimiter = ','
    )]
    pub secrets: Vec<String>,

    /// A YAML file listing secrets (ref, and optionally file, key, format, optional, mode,
    /// owner) and aggregate files (env, json or template files built from several secrets).
    ///
    /// Example: --config /etc/secret-sidecar/secrets.yaml
    #[arg(long, value_name = "FILE", env = "SECRET_SIDECAR_CONFIG")]
    pub config: Option<PathBuf>,

    /// The directory to publish into: the in-memory volume shared with the application.
    ///
    /// It must exist, must not be a symbolic link, and must be tmpfs unless
    /// --allow-non-tmpfs. Files appear all at once through a `..data` link.
    ///
    /// Example: --output-dir /run/secrets
    #[arg(long, value_name = "DIR", env = "SECRET_SIDECAR_OUTPUT_DIR")]
    pub output_dir: Option<PathBuf>,

    /// File mode (octal) for every published file, whatever the umask.
    ///
    /// Example: --mode 0400
    #[arg(
        long,
        value_name = "MODE",
        env = "SECRET_SIDECAR_MODE",
        default_value = "0440"
    )]
    pub mode: String,

    /// Owner of every published file, as numeric UID or UID:GID (needs CAP_CHOWN).
    ///
    /// Example: --owner 1000:1000
    #[arg(long, value_name = "UID[:GID]", env = "SECRET_SIDECAR_OWNER")]
    pub owner: Option<String>,

    /// Publish into a directory that is not tmpfs (for platforms without one, such as ECS
    /// Fargate): secrets may then reach a disk.
    ///
    /// Example: --allow-non-tmpfs
    #[arg(long, env = "SECRET_SIDECAR_ALLOW_NON_TMPFS")]
    pub allow_non_tmpfs: bool,

    /// A PEM file of CA certificates to trust in addition to the system's, for AWS, Azure
    /// and the token sources: private endpoints, TLS-inspecting proxies, tests.
    /// SSL_CERT_FILE, when set, replaces the system's roots as usual. The Google clients
    /// take no extra roots: for gcp:// point SSL_CERT_FILE at a bundle that holds this CA.
    ///
    /// Example: --ca-file /etc/ssl/certs/corporate-ca.pem
    #[arg(
        long,
        value_name = "FILE",
        env = "SECRET_SIDECAR_CA_FILE",
        global = true
    )]
    pub ca_file: Option<PathBuf>,

    #[cfg(feature = "aws")]
    #[command(flatten)]
    pub aws: AwsArgs,

    #[cfg(feature = "aws")]
    #[command(flatten)]
    pub ssm: SsmArgs,

    #[cfg(feature = "gcp")]
    #[command(flatten)]
    pub gcp: GcpArgs,

    /// Deadline for fetching every secret, including retries: 60, 60s, 1500ms or 2m.
    ///
    /// Example: --timeout 30s
    #[arg(
        long,
        value_name = "DURATION",
        env = "SECRET_SIDECAR_TIMEOUT",
        default_value = "60s",
        global = true
    )]
    pub timeout: Seconds,

    /// How many secrets to fetch at the same time.
    ///
    /// Example: --concurrency 4
    #[arg(
        long,
        value_name = "N",
        env = "SECRET_SIDECAR_CONCURRENCY",
        default_value_t = 8
    )]
    pub concurrency: usize,

    #[command(flatten)]
    pub log: LogArgs,

    #[cfg(feature = "aws")]
    #[command(flatten)]
    pub aws_token: AwsTokenArgs,

    #[cfg(feature = "azure")]
    #[command(flatten)]
    pub azure: AzureArgs,

    #[command(flatten)]
    pub refresh: RefreshArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    #[cfg(feature = "aws")]
    /// Keep a web-identity token fresh in a file, for an application whose own AWS SDK
    /// reads AWS_WEB_IDENTITY_TOKEN_FILE.
    ///
    /// Obtains a token (a Google ID token from the metadata server, or an OAuth2 access
    /// token), publishes it atomically as --out, and keeps running: it replaces the token
    /// at 80% of its lifetime, retries failures with jittered backoff while keeping the
    /// last good token, and stops cleanly (exit 0) on SIGTERM or SIGINT. If the first
    /// token cannot be obtained within --timeout it exits non-zero like a fetch run. Meant
    /// for a Kubernetes native sidecar (an init container with restartPolicy: Always)
    /// whose startup probe runs `secret-sidecar token --probe`.
    Token(TokenArgs),

    #[cfg(feature = "azure")]
    /// Answer the pod's Azure instance metadata (IMDS) token requests with its workload
    /// identity, for applications written for VM managed identity or AAD Pod Identity.
    ///
    /// Serves GET /metadata/identity/oauth2/token as IMDS does (Metadata: true required,
    /// X-Forwarded-For refused, IMDS's fields and errors) and the App Service contract
    /// (IDENTITY_ENDPOINT=http://ADDR:PORT/msi/token, IDENTITY_HEADER) for SDKs, on a
    /// loopback address only. Each token comes from Entra ID through the workload identity
    /// client assertion (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE,
    /// AZURE_AUTHORITY_HOST), is cached per resource until five minutes before it
    /// expires, and many callers at once share one exchange. The token for --resource must
    /// be obtained within --timeout at start, else it exits like a fetch run; SIGTERM or
    /// SIGINT stop it cleanly (exit 0). --install-redirect (an init container with
    /// NET_ADMIN) sends the pod's traffic to 169.254.169.254:80 here; --probe is the
    /// startup probe. See docs/azure.md.
    ImdsProxy(ImdsProxyArgs),

    #[cfg(feature = "webhook")]
    /// Serve the Kubernetes mutating admission webhook that injects secret-sidecar into
    /// pods labelled secret-sidecar.io/inject: "true", from their secret-sidecar.io/*
    /// annotations.
    ///
    /// Answers AdmissionReview v1 requests on POST /mutate over HTTPS (the certificate and
    /// key files are re-read when they change), with /healthz and /readyz for probes. A pod
    /// whose annotations the init container would refuse is denied with a message naming
    /// the annotation. Stops on SIGTERM or SIGINT after the requests in flight.
    Webhook(WebhookArgs),
}

/// `SECRET_SIDECAR_*` variables in `environment` that no option reads: most likely a
/// misspelling, which would otherwise be ignored without a word.
pub fn unknown_env_vars(environment: impl IntoIterator<Item = String>) -> Vec<String> {
    use clap::CommandFactory;
    let command = Cli::command();
    let known: Vec<String> = command
        .get_arguments()
        .chain(
            command
                .get_subcommands()
                .flat_map(|sub| sub.get_arguments()),
        )
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    let mut unknown: Vec<String> = environment
        .into_iter()
        .filter(|name| name.starts_with("SECRET_SIDECAR_") && !known.contains(name))
        .collect();
    unknown.sort();
    unknown
}

/// Parses `argv` (the program name first) exactly as the binary parses its command line,
/// but without reading any `SECRET_SIDECAR_*` variable: how the admission webhook checks
/// the command line it gives an injected container, whatever its own environment holds.
pub fn parse_without_env<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let no_env = |arg: clap::Arg| arg.env(None);
    let command = Cli::command()
        .mut_args(no_env)
        .mut_subcommands(|sub| sub.mut_args(no_env));
    Cli::from_arg_matches(&command.try_get_matches_from(argv)?)
}

/// A duration written as `60`, `60s`, `1500ms`, `2m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Seconds, String> {
        let (number, scale_ms) = if let Some(n) = text.strip_suffix("ms") {
            (n, 1)
        } else if let Some(n) = text.strip_suffix('s') {
            (n, 1_000)
        } else if let Some(n) = text.strip_suffix('m') {
            (n, 60_000)
        } else if let Some(n) = text.strip_suffix('h') {
            (n, 3_600_000)
        } else {
            (text, 1_000)
        };
        let value: u64 = number
            .parse()
            .map_err(|_| format!("'{text}' is not a duration like 60s, 1500ms, 2m or 1h"))?;
        let millis = value
            .checked_mul(scale_ms)
            .filter(|ms| *ms > 0)
            .ok_or_else(|| format!("'{text}' must be more than zero and at most a few days"))?;
        Ok(Seconds(Duration::from_millis(millis)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_has_an_environment_variable_and_an_example() {
        let command = Cli::command();
        let subcommands = command
            .get_subcommands()
            .flat_map(|sub| sub.get_arguments());
        for arg in command.get_arguments().chain(subcommands) {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let help = arg
                .get_long_help()
                .unwrap_or_else(|| panic!("--{id} has no help"));
            assert!(
                help.to_string().contains("Example: --"),
                "--{id} help lacks an example"
            );
            // A probe flag in the environment would make the sidecar itself a probe.
            if id.ends_with("_probe") || id == "probe" {
                assert!(arg.get_env().is_none());
                continue;
            }
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{id} has no env var"));
            let expected = format!("SECRET_SIDECAR_{}", id.to_uppercase().trim_end_matches('S'));
            assert!(
                env.to_str().unwrap().starts_with(&expected),
                "--{id} reads {env:?}, expected {expected}"
            );
        }
    }

    #[test]
    fn misspelt_environment_variables_are_found() {
        let names = [
            "SECRET_SIDECAR_OUTPUT_DIR",
            "SECRET_SIDECAR_OUTPUTDIR",
            "SECRET_SIDECAR_SECRETS",
            "PATH",
        ];
        assert_eq!(
            unknown_env_vars(names.iter().map(|n| n.to_string())),
            ["SECRET_SIDECAR_OUTPUTDIR", "SECRET_SIDECAR_SECRETS"]
        );
    }

    #[test]
    fn durations() {
        assert_eq!("60".parse::<Seconds>().unwrap().0, Duration::from_secs(60));
        assert_eq!("2m".parse::<Seconds>().unwrap().0, Duration::from_secs(120));
        assert_eq!(
            "1h".parse::<Seconds>().unwrap().0,
            Duration::from_secs(3600)
        );
        assert_eq!(
            "1500ms".parse::<Seconds>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert!("0s".parse::<Seconds>().is_err());
        assert!("soon".parse::<Seconds>().is_err());
        assert!("-1".parse::<Seconds>().is_err());
    }

    #[test]
    fn help_lists_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"));
        assert!(help.contains("7  bad secret data"));
    }
}
