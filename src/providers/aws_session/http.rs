//! How every AWS call reaches the network: one HTTP client (with `--ca-file`, or plain
//! http when every endpoint is a local emulator) whose responses are all capped as they
//! stream in, and the User-Agent suffix every Secrets Manager, Parameter Store and STS
//! request carries.
//!
//! The cap is on the client, not on one SDK client's interceptors, because the client is
//! shared: aws-config's own credential providers (the IRSA exchange with STS, EKS Pod
//! Identity and ECS container credentials, instance metadata) use it too.

use anyhow::{Context as _, Result, anyhow};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

use crate::exit::Failure;
use crate::net::{CaBundle, Lookups, MAX_RESPONSE_BYTES, error_chain, user_agent};

/// The client every AWS call of the run goes through, responses capped.
pub(super) fn client(ca: Option<&CaBundle>, plain_http: bool) -> Result<SharedHttpClient> {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    let inner = match (ca, plain_http) {
        (Some(ca), _) => http_client_trusting(ca)?,
        // LocalStack and other local endpoints: skip loading and parsing the system's CA
        // store for a TLS connection that will never be made.
        (None, true) => aws_smithy_http_client::Builder::new().build_http(),
        (None, false) => aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .build_with_resolver(Resolver),
    };
    Ok(SharedHttpClient::new(Capped(inner)))
}

/// Whether every AWS endpoint this run can reach is plain `http://`: `AWS_ENDPOINT_URL`
/// is set to one, and no per-service override or container-credential URI says otherwise.
pub(super) fn plain_http_only(var: &dyn Fn(&str) -> Option<String>) -> bool {
    let http = |name: &str| var(name).is_none_or(|url| url.starts_with("http://"));
    var("AWS_ENDPOINT_URL").is_some_and(|url| url.starts_with("http://"))
        && [
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            "AWS_ENDPOINT_URL_SSM",
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
fn http_client_trusting(ca: &CaBundle) -> Result<SharedHttpClient> {
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
        .build_with_resolver(Resolver))
}

/// Host names looked up once for the run's burst of connections, STS's and the stores'
/// alike ([`Lookups`]), instead of once per connection. (The plain-http client is only for
/// local emulators, and keeps the connector's own resolver.)
#[derive(Debug, Clone, Copy)]
struct Resolver;

impl ResolveDns for Resolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move { Lookups::resolve(name).await.map_err(ResolveDnsError::new) })
    }
}

/// An HTTP client whose every response body is cut off past [`MAX_RESPONSE_BYTES`] as it
/// streams in, before any SDK reads it whole.
#[derive(Debug)]
struct Capped(SharedHttpClient);

impl HttpClient for Capped {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(CappedConnector(self.0.http_connector(settings, components)))
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.validate_base_client_config(components, cfg)
    }

    fn validate_final_config(
        &self,
        components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.validate_final_config(components, cfg)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[derive(Debug)]
struct CappedConnector(SharedHttpConnector);

impl HttpConnector for CappedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let response = self.0.call(request);
        HttpConnectorFuture::new(async move {
            let mut response = response.await?;
            let body = std::mem::replace(response.body_mut(), SdkBody::taken());
            *response.body_mut() =
                SdkBody::from_body_1_x(http_body_util::Limited::new(body, MAX_RESPONSE_BYTES));
            Ok(response)
        })
    }
}

/// Appends `secret-sidecar/<version>` to the User-Agent after signing (the header is not
/// signed), so the calls are attributable in CloudTrail.
#[derive(Debug)]
pub(crate) struct UserAgentSuffix;

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
