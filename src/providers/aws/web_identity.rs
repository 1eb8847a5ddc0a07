//! AWS credentials from a web-identity token obtained in-process (`--aws-token-source`),
//! exchanged once with STS `AssumeRoleWithWebIdentity`; nothing is written to disk.
//!
//! The role comes from `AWS_ROLE_ARN` and the session name from `AWS_ROLE_SESSION_NAME`,
//! as for IRSA; only where the token comes from differs. The call is unsigned (the token
//! is the proof), so no other credentials are looked for.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow};
use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_secretsmanager::config::Region;
use tracing::info;

use super::{UserAgentSuffix, classify_with};
use crate::exit::Class;
use crate::identity::{self, Source};
use crate::providers::Settings;

/// STS's global endpoint is in us-east-1; a configured region selects the regional one.
const DEFAULT_STS_REGION: &str = "us-east-1";

pub(super) async fn assume_role(
    shared: &SdkConfig,
    source: &Source,
    settings: &Settings,
) -> Result<Credentials> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let role_arn = var("AWS_ROLE_ARN")
        .ok_or_else(|| {
            anyhow!(
                "--aws-token-source {} needs AWS_ROLE_ARN: the IAM role whose trust policy \
                 accepts the token",
                source.kind()
            )
        })
        .context(Class::Usage)?;
    let session_name = var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("secret-sidecar-{}", now.as_secs())
    });

    let token = source
        .obtain(&identity::Settings {
            attempt_timeout: settings.attempt_timeout,
            ca_file: settings.ca_file.clone(),
        })
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
        .context(Class::Auth)?;
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
        .context(Class::Internal)?;
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
fn sts_class(code: Option<&str>, status: u16) -> Class {
    match code {
        // STS could not reach the token's issuer to fetch its keys: worth another try.
        Some("IDPCommunicationError" | "Throttling" | "ThrottlingException") => Class::Transient,
        // The token is not accepted, or the role does not trust it.
        Some(
            "InvalidIdentityToken"
            | "IDPRejectedClaim"
            | "ExpiredTokenException"
            | "AccessDenied"
            | "RegionDisabledException",
        ) => Class::Auth,
        Some("ValidationError" | "MalformedPolicyDocument") => Class::Usage,
        _ if status >= 500 || status == 429 => Class::Transient,
        _ => Class::Auth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_issuer_or_a_busy_sts_is_retried() {
        assert_eq!(
            sts_class(Some("IDPCommunicationError"), 400),
            Class::Transient
        );
        assert_eq!(sts_class(None, 503), Class::Transient);
        assert_eq!(sts_class(Some("InvalidIdentityToken"), 400), Class::Auth);
        assert_eq!(sts_class(Some("AccessDenied"), 403), Class::Auth);
        assert_eq!(sts_class(Some("ValidationError"), 400), Class::Usage);
        assert_eq!(sts_class(Some("SomethingNew"), 400), Class::Auth);
    }
}
