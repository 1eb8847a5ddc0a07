//! The reqwest client for requests this crate makes itself (Azure's SDK transport, the
//! OAuth2 token request): one attempt bounded in time, no redirects (a token or a secret
//! must not follow a `Location` to another host), and `--ca-file` trusted beside the
//! platform's roots.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};

use crate::exit::Class;
use crate::providers::error_chain;

pub fn client(attempt_timeout: Duration, ca_file: Option<&Path>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(attempt_timeout)
        .timeout(attempt_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading --ca-file {}", path.display()))
            .context(Class::Usage)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| anyhow!(error_chain(&err)))
            .with_context(|| format!("--ca-file {}", path.display()))
            .context(Class::Usage)?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|err| anyhow!(error_chain(&err)))
        .context("building the HTTPS client")
        .context(Class::Usage)
}
