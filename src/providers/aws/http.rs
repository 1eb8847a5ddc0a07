//! How the Secrets Manager and STS clients reach the network: the HTTP client (with
//! `--ca-file`, or plain http when every endpoint is a local emulator), and two
//! interceptors every request passes, a response cap and the User-Agent suffix.

use anyhow::{Context as _, Result, anyhow};
use aws_sdk_secretsmanager::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents, SharedHttpClient};
use aws_sdk_secretsmanager::error::BoxError;
use aws_smithy_types::body::SdkBody;

use crate::exit::Failure;
use crate::net::{CaBundle, MAX_RESPONSE_BYTES, error_chain, user_agent};

/// Whether every AWS endpoint this run can reach is plain `http://`: `AWS_ENDPOINT_URL`
/// is set to one, and no per-service override or container-credential URI says otherwise.
pub(super) fn plain_http_only(var: &dyn Fn(&str) -> Option<String>) -> bool {
    let http = |name: &str| var(name).is_none_or(|url| url.starts_with("http://"));
    var("AWS_ENDPOINT_URL").is_some_and(|url| url.starts_with("http://"))
        && [
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            "AWS_ENDPOINT_URL_STS",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ]
        .iter()
        .all(|name| http(name))
        && var("AWS_PROFILE").is_none()
}

/// The SDK's own HTTPS client (rustls with aws-lc, the platform's roots, which
/// `SSL_CERT_FILE` replaces), trusting `ca` as well. It serves STS and the container
/// credential endpoints too, since it is set on the shared config.
pub(super) fn http_client_trusting(ca: &CaBundle) -> Result<SharedHttpClient> {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::default().with_pem_certificate(ca.pem()))
        .build()
        .map_err(|err| anyhow!(error_chain(&err)))
        .with_context(|| format!("--ca-file {}", ca.path().display()))
        .context(Failure::Usage)?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

/// Caps every response body at [`MAX_RESPONSE_BYTES`] before the SDK reads it whole.
#[derive(Debug)]
pub(super) struct ResponseLimit;

impl Intercept for ResponseLimit {
    fn name(&self) -> &'static str {
        "SecretSidecarResponseLimit"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.response_mut().body_mut();
        let whole = std::mem::replace(body, SdkBody::taken());
        *body = SdkBody::from_body_1_x(http_body_util::Limited::new(whole, MAX_RESPONSE_BYTES));
        Ok(())
    }
}

/// Appends `secret-sidecar/<version>` to the User-Agent after signing (the header is not
/// signed), so the calls are attributable in CloudTrail.
#[derive(Debug)]
pub(super) struct UserAgentSuffix;

impl Intercept for UserAgentSuffix {
    fn name(&self) -> &'static str {
        "SecretSidecarUserAgent"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = context.request_mut().headers_mut();
        let agent = user_agent(headers.get("user-agent"));
        headers.insert("user-agent", agent);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_client_only_when_no_endpoint_can_be_https() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(plain_http_only(&env(&[(
            "AWS_ENDPOINT_URL",
            "http://127.0.0.1:4566"
        )])));
        assert!(!plain_http_only(&env(&[])));
        assert!(!plain_http_only(&env(&[(
            "AWS_ENDPOINT_URL",
            "https://vpce.example"
        )])));
        assert!(!plain_http_only(&env(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_ENDPOINT_URL_STS", "https://sts.amazonaws.com"),
        ])));
        assert!(!plain_http_only(&env(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_PROFILE", "sso"),
        ])));
    }
}
