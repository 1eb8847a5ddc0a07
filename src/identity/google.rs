//! Google's metadata server and Google credential errors, shared by the Secret Manager
//! provider and the gcp-metadata token source of `--aws-token-source`.
//!
//! The ID token is what a GKE pod (Workload Identity) or a GCE VM presents to AWS STS,
//! whose IAM role trusts `accounts.google.com` for that audience. google-cloud-auth's
//! metadata-server ID-token builder makes the request
//! (`/computeMetadata/v1/instance/service-accounts/default/identity?audience=...`) and
//! honours `GCE_METADATA_HOST`; its own retries are off, as for every provider.

#[cfg(feature = "aws")]
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use google_cloud_auth::errors::CredentialsError;

use crate::exit::Failure;
use crate::net::{certificate_error, certificate_refused, error_chain};
#[cfg(feature = "aws")]
use crate::secret::SecretValue;

pub const METADATA_HOST: &str = "metadata.google.internal";

/// One attempt at an ID token for `audience` from the metadata server.
#[cfg(feature = "aws")]
pub async fn id_token(audience: &str, attempt_timeout: Duration) -> Result<SecretValue> {
    use google_cloud_auth::credentials::idtoken;
    use google_cloud_gax::retry_policy::NeverRetry;

    if crate::env::var("GCE_METADATA_HOST").is_none() {
        // Off Google Cloud the name does not resolve: no identity, not a network blip.
        metadata_host_resolves(METADATA_HOST).await?;
    }
    let credentials = idtoken::mds::Builder::new(audience)
        .with_retry_policy(NeverRetry)
        .build()
        .map_err(|err| anyhow!(error_chain(&err)))
        .context("building the metadata-server ID token client")
        .context(Failure::Internal)?;
    let token = tokio::time::timeout(attempt_timeout, credentials.id_token())
        .await
        .map_err(|_| anyhow!("the metadata server did not answer within {attempt_timeout:?}"))
        .context(Failure::Transient)?
        .map_err(|err| credentials_error(&err))
        .with_context(|| format!("requesting an ID token for audience {audience}"))?;
    Ok(SecretValue::from_string(token))
}

/// Off Google Cloud, `metadata.google.internal` does not resolve: that is "no credentials"
/// (exit 3), not a network failure to retry.
pub async fn metadata_host_resolves(host: &str) -> Result<()> {
    let name = format!("{host}:80");
    let resolved = tokio::task::spawn_blocking(move || {
        std::net::ToSocketAddrs::to_socket_addrs(&name)
            .is_ok_and(|mut addrs| addrs.next().is_some())
    })
    .await
    .unwrap_or(false);
    if !resolved {
        return Err(anyhow!(
            "no Google credentials: GOOGLE_APPLICATION_CREDENTIALS is unset, there is no gcloud \
             application-default file, and {host} does not resolve (not on GKE or GCE)"
        ))
        .context(Failure::Auth);
    }
    Ok(())
}

/// A credential failure: transient ones (a metadata server or STS that is not answering,
/// 5xx) are retried by the core; everything else is an identity failure.
pub fn credentials_error(err: &CredentialsError) -> anyhow::Error {
    if certificate_refused(err) {
        return certificate_error(scrub(&error_chain(err)));
    }
    let class = match err.is_transient() {
        true => Failure::Transient,
        false => Failure::Auth,
    };
    anyhow!(scrub(&error_chain(err))).context(class)
}

/// Removes anything shaped like a Google access token (`ya29.…`) or a JWT (`eyJ…` with
/// three dot-separated parts) from text a server sent, in case an error body echoes one.
/// Long outputs are cut, since error bodies are not bounded.
pub fn scrub(text: &str) -> String {
    // google-cloud-auth quotes a whole subject-token document (`body=<{...}>`) when its
    // token field is not a string: the document is the credential, so none of it is shown.
    let quoted_document = text
        .find("subject token field")
        .and_then(|field| text[field..].find("body=<").map(|at| field + at));
    let text = match quoted_document {
        Some(at) => format!(
            "{}body=<not shown: it may hold the credential>",
            &text[..at]
        ),
        None => text.to_owned(),
    };
    let text = text.as_str();
    let is_word = |c: char| c.is_ascii_alphanumeric() || "-_.~".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let token = word.starts_with("ya29.")
            || (word.starts_with("eyJ") && word.matches('.').count() == 2);
        out.push_str(if token { "<redacted token>" } else { word });
        word.clear();
    };
    for c in text.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    const LIMIT: usize = 600;
    if out.len() > LIMIT {
        let mut cut = LIMIT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_never_shows_a_quoted_token_document() {
        // As google-cloud-auth words it for a JSON subject-token file whose field is not a
        // string (credentials/external_account_sources/file_sourced.rs).
        let text = "failed to read subject token field `id_token` as string, \
                    body=<{\"id_token\":{\"v\":\"opaque-sentinel-credential\"}}>: more";
        let clean = scrub(text);
        assert!(!clean.contains("opaque-sentinel"), "{clean}");
        assert!(clean.contains("subject token field `id_token`"), "{clean}");
    }

    #[test]
    fn scrub_removes_tokens_and_keeps_names() {
        let text = "failed to exchange token, body=<{\"error\":\"invalid_grant\",\
                    \"token\":\"eyJhbGciOi.eyJzdWIiOi.c2ln\"}> bearer ya29.a0AfB_xyz \
                    projects/my-project/secrets/db-password sa@p.iam.gserviceaccount.com";
        let clean = scrub(text);
        assert!(!clean.contains("eyJhbGciOi"), "{clean}");
        assert!(!clean.contains("ya29."), "{clean}");
        assert!(clean.contains("invalid_grant"), "{clean}");
        assert!(
            clean.contains("projects/my-project/secrets/db-password"),
            "{clean}"
        );
        assert!(clean.contains("sa@p.iam.gserviceaccount.com"), "{clean}");
        assert!(scrub(&"x ".repeat(1000)).chars().count() <= 601);
    }
}
