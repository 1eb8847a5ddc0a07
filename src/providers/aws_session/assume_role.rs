//! AWS credentials from a web-identity token obtained in-process (`--aws-token-source`),
//! exchanged once with STS `AssumeRoleWithWebIdentity`; nothing is written to disk.
//!
//! The role comes from `AWS_ROLE_ARN` and the session name from `AWS_ROLE_SESSION_NAME`,
//! as for IRSA; only where the token comes from differs. The call is unsigned (the token
//! is the proof), so no other credentials are looked for.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow};
use aws_config::Region;
use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use tracing::info;

use super::errors::classify_with;
use super::http::UserAgentSuffix;
use crate::exit::Failure;
use crate::identity::web_token::TokenSource;
use crate::net::HttpConfig;

/// STS's global endpoint is in us-east-1; a configured region selects the regional one.
const DEFAULT_STS_REGION: &str = "us-east-1";

pub(super) async fn assume_role(
    shared: &SdkConfig,
    source: &TokenSource,
    http: &HttpConfig,
) -> Result<Credentials> {
    let role_arn = crate::env::var("AWS_ROLE_ARN")
        .ok_or_else(|| {
            anyhow!(
                "--aws-token-source {} needs AWS_ROLE_ARN: the IAM role whose trust policy \
                 accepts the token",
                source.kind()
            )
        })
        .context(Failure::Usage)?;
    let session_name = crate::env::var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("secret-sidecar-{}", now.as_secs())
    });

    let token = source
        .obtain(http)
        .await
        .with_context(|| format!("obtaining a web-identity token from {}", source.describe()))?;
    info!(
        source = %source.kind(),
        expires_in_s = token.lifetime().map(|left| left.as_secs()),
        "web-identity token obtained"
    );

    let region = shared
        .region()
        .cloned()
        .unwrap_or_else(|| Region::new(DEFAULT_STS_REGION));
    let config = aws_sdk_sts::config::Builder::from(shared)
        .region(region)
        .interceptor(UserAgentSuffix)
        .build();
    let sts = aws_sdk_sts::Client::from_conf(config);
    // The SDK takes a String; this copy lives until the request is sent.
    let text = std::str::from_utf8(token.value.expose())
        .map_err(|_| anyhow!("{} returned a token that is not text", source.describe()))
        .context(Failure::Auth)?;
    let answer = sts
        .assume_role_with_web_identity()
        .role_arn(&role_arn)
        .role_session_name(&session_name)
        .web_identity_token(text)
        .send()
        .await
        .map_err(|err| classify_with(err, sts_class))
        .with_context(|| {
            format!(
                "exchanging the token from {} with STS for role {role_arn}",
                source.kind()
            )
        })?;
    let issued = answer
        .credentials
        .ok_or_else(|| anyhow!("STS answered AssumeRoleWithWebIdentity without credentials"))
        .context(Failure::Internal)?;
    let expiry = SystemTime::try_from(issued.expiration).ok();
    Ok(Credentials::new(
        issued.access_key_id,
        issued.secret_access_key,
        Some(issued.session_token),
        expiry,
        "WebIdentityToken",
    ))
}

/// STS's error codes for AssumeRoleWithWebIdentity, then the HTTP status.
fn sts_class(code: Option<&str>, status: u16) -> Failure {
    match code {
        // STS could not reach the token's issuer to fetch its keys: worth another try.
        Some("IDPCommunicationError" | "Throttling" | "ThrottlingException") => Failure::Transient,
        // The token is not accepted, or the role does not trust it.
        Some(
            "InvalidIdentityToken"
            | "IDPRejectedClaim"
            | "ExpiredTokenException"
            | "AccessDenied"
            | "RegionDisabledException",
        ) => Failure::Auth,
        Some("ValidationError" | "MalformedPolicyDocument") => Failure::Usage,
        _ if status >= 500 || status == 429 => Failure::Transient,
        _ => Failure::Auth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_issuer_or_a_busy_sts_is_retried() {
        assert_eq!(
            sts_class(Some("IDPCommunicationError"), 400),
            Failure::Transient
        );
        assert_eq!(sts_class(None, 503), Failure::Transient);
        assert_eq!(sts_class(Some("InvalidIdentityToken"), 400), Failure::Auth);
        assert_eq!(sts_class(Some("AccessDenied"), 403), Failure::Auth);
        assert_eq!(sts_class(Some("ValidationError"), 400), Failure::Usage);
        assert_eq!(sts_class(Some("SomethingNew"), 400), Failure::Auth);
    }
}
