//! The command-line options that choose a web-identity token source: `--aws-token-source`
//! and `--aws-token-audience` for the AWS provider, the `--oauth2-*` options that both it
//! and `token --source` read.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::ValueEnum;

use super::web_token::TokenSource;

/// `--aws-token-source` and `--aws-token-audience`, with the `--oauth2-*` options they use
/// (also read by `token` mode).
#[derive(Debug, Clone, clap::Args)]
pub struct AwsTokenArgs {
    /// AWS only: where the web-identity token for AWS_ROLE_ARN comes from. file is the
    /// SDK's default chain (IRSA's AWS_WEB_IDENTITY_TOKEN_FILE, static keys, EKS Pod
    /// Identity, ECS, ...). gcp-metadata asks the Google metadata server for an ID token
    /// (a GKE or GCE workload reaching AWS; needs --aws-token-audience);
    /// oauth2-client-credentials asks an OAuth2 server (Entra ID, Okta, Keycloak, ...) for
    /// an access token (needs the --oauth2-* options). Either token is exchanged once with
    /// STS AssumeRoleWithWebIdentity (session name: AWS_ROLE_SESSION_NAME) and never
    /// written to disk.
    ///
    /// Example: --aws-token-source gcp-metadata --aws-token-audience sts.amazonaws.com
    #[arg(
        long,
        value_enum,
        value_name = "SOURCE",
        env = "SECRET_SIDECAR_AWS_TOKEN_SOURCE",
        default_value = "file"
    )]
    pub aws_token_source: AwsTokenSource,

    /// AWS with --aws-token-source gcp-metadata: the audience of the Google ID token, as
    /// the IAM role's trust policy expects it (accounts.google.com:aud).
    ///
    /// Example: --aws-token-audience sts.amazonaws.com
    #[arg(
        long,
        value_name = "AUDIENCE",
        env = "SECRET_SIDECAR_AWS_TOKEN_AUDIENCE"
    )]
    pub aws_token_audience: Option<String>,

    #[command(flatten)]
    pub oauth2: OAuth2Args,
}

/// The OAuth2 client-credentials options, for --aws-token-source and `token --source`
/// oauth2-client-credentials.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OAuth2Args {
    /// OAuth2: the identity provider's token endpoint (https, or http to loopback).
    ///
    /// Example: --oauth2-token-url https://login.microsoftonline.com/TENANT/oauth2/v2.0/token
    #[arg(
        long,
        value_name = "URL",
        env = "SECRET_SIDECAR_OAUTH2_TOKEN_URL",
        global = true
    )]
    pub oauth2_token_url: Option<String>,

    /// OAuth2: the client (application) ID.
    ///
    /// Example: --oauth2-client-id 00000000-0000-0000-0000-000000000000
    #[arg(
        long,
        value_name = "ID",
        env = "SECRET_SIDECAR_OAUTH2_CLIENT_ID",
        global = true
    )]
    pub oauth2_client_id: Option<String>,

    /// OAuth2: a file holding the client secret (a mounted Secret), read for every request
    /// so a rotated secret is used at once. There is no option for the secret itself: it
    /// would show in the process list.
    ///
    /// Example: --oauth2-client-secret-file /var/run/secrets/idp/client-secret
    #[arg(
        long,
        value_name = "FILE",
        env = "SECRET_SIDECAR_OAUTH2_CLIENT_SECRET_FILE",
        global = true
    )]
    pub oauth2_client_secret_file: Option<PathBuf>,

    /// OAuth2: the scope to request (space-separated for several), e.g. Entra ID's
    /// api://APP/.default.
    ///
    /// Example: --oauth2-scope api://secret-sidecar-aws/.default
    #[arg(
        long,
        value_name = "SCOPE",
        env = "SECRET_SIDECAR_OAUTH2_SCOPE",
        global = true
    )]
    pub oauth2_scope: Option<String>,

    /// OAuth2: an audience parameter, for servers that want one (Auth0, some Okta set-ups).
    ///
    /// Example: --oauth2-audience sts.amazonaws.com
    #[arg(
        long,
        value_name = "AUDIENCE",
        env = "SECRET_SIDECAR_OAUTH2_AUDIENCE",
        global = true
    )]
    pub oauth2_audience: Option<String>,

    /// OAuth2: how the client authenticates: basic (HTTP Basic, client_secret_basic, which
    /// every server must support) or body (client_id and client_secret in the form,
    /// client_secret_post).
    ///
    /// Example: --oauth2-client-auth body
    #[arg(
        long,
        value_enum,
        value_name = "METHOD",
        env = "SECRET_SIDECAR_OAUTH2_CLIENT_AUTH",
        default_value = "basic",
        global = true
    )]
    pub oauth2_client_auth: ClientAuth,
}

/// `--aws-token-source`: `file` is aws-config's own chain, the others a [`TokenSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AwsTokenSource {
    File,
    GcpMetadata,
    Oauth2ClientCredentials,
}

/// The token sources this module implements (`token --source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenSourceKind {
    GcpMetadata,
    Oauth2ClientCredentials,
}

/// How an OAuth2 client proves itself to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ClientAuth {
    #[default]
    Basic,
    Body,
}

impl AwsTokenArgs {
    /// The token source `--aws-token-source` asks for, checked with the options it needs;
    /// `None` for `file`, aws-config's default chain.
    pub fn source(&self) -> Result<Option<TokenSource>> {
        let kind = match self.aws_token_source {
            AwsTokenSource::File => {
                if self.aws_token_audience.is_some() {
                    bail!("--aws-token-audience is for --aws-token-source gcp-metadata");
                }
                return Ok(None);
            }
            AwsTokenSource::GcpMetadata => TokenSourceKind::GcpMetadata,
            AwsTokenSource::Oauth2ClientCredentials => TokenSourceKind::Oauth2ClientCredentials,
        };
        TokenSource::from_args(
            kind,
            self.aws_token_audience.as_deref(),
            &self.oauth2,
            "--aws-token-audience",
        )
        .map(Some)
    }
}
