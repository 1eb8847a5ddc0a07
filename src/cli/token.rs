//! The `token` subcommand's options (the mode is `crate::token`).

use std::path::PathBuf;

use crate::identity::options::TokenSourceKind;

/// The `token` subcommand's options; the --oauth2-*, --ca-file, --timeout and
/// --log-format options apply too.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Where the token comes from: gcp-metadata (needs --audience) or
    /// oauth2-client-credentials (needs the --oauth2-* options).
    ///
    /// Example: --source oauth2-client-credentials
    #[arg(
        long = "source",
        value_enum,
        value_name = "SOURCE",
        env = "SECRET_SIDECAR_TOKEN_SOURCE",
        required_unless_present = "token_probe"
    )]
    pub token_source: Option<TokenSourceKind>,

    /// With --source gcp-metadata: the audience of the Google ID token.
    ///
    /// Example: --audience sts.amazonaws.com
    #[arg(
        long = "audience",
        value_name = "AUDIENCE",
        env = "SECRET_SIDECAR_TOKEN_AUDIENCE"
    )]
    pub token_audience: Option<String>,

    /// The token file. Its directory must be an in-memory volume that holds nothing else:
    /// the token is published there like a secret set (through a ..data link), so a reader
    /// never sees a partial token.
    ///
    /// Example: --out /var/run/secrets/aws-token/token
    #[arg(long = "out", value_name = "FILE", env = "SECRET_SIDECAR_TOKEN_FILE")]
    pub token_file: PathBuf,

    /// The token file's mode (octal).
    ///
    /// Example: --mode 0400
    #[arg(
        long = "mode",
        value_name = "MODE",
        env = "SECRET_SIDECAR_TOKEN_MODE",
        default_value = "0440"
    )]
    pub token_mode: String,

    /// The token file's owner, as numeric UID or UID:GID (needs CAP_CHOWN).
    ///
    /// Example: --owner 1000:1000
    #[arg(
        long = "owner",
        value_name = "UID[:GID]",
        env = "SECRET_SIDECAR_TOKEN_OWNER"
    )]
    pub token_owner: Option<String>,

    /// Publish the token into a directory that is not tmpfs.
    ///
    /// Example: --allow-non-tmpfs
    #[arg(long = "allow-non-tmpfs", env = "SECRET_SIDECAR_TOKEN_ALLOW_NON_TMPFS")]
    pub token_allow_non_tmpfs: bool,

    /// Check instead of run: exit 0 if --out holds a token that has not expired, 1
    /// otherwise. For the startup (and liveness) probe of the container running `token`,
    /// since a minimal image has no shell to test the file with. No environment variable:
    /// it would turn the container itself into a probe.
    ///
    /// Example: --probe
    #[arg(long = "probe")]
    pub token_probe: bool,
}
