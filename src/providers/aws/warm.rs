//! Secrets Manager connections opened while the identity exchange is in flight.
//!
//! With IRSA (or any credential that needs a network exchange), no read can be signed
//! before STS has answered: three round trips on a new connection (TCP, TLS,
//! AssumeRoleWithWebIdentity). Opening Secrets Manager's connections only then would put
//! two more (TCP, TLS) before the first read. So while STS answers, one `HEAD /` per
//! connection the reads will need goes to the Secrets Manager endpoint through the same
//! HTTP client, and so the same connection pool, as the reads: unsigned, with no
//! credentials, body or secret id. The service's answer (an error) is ignored; what
//! remains is an open, kept-alive connection, which the reads then use.
//!
//! The SDK offers no way to open a connection without a request, so the request is the
//! smallest one: a `ListSecrets` operation whose signed request is replaced, just before it
//! is sent, by a bare `HEAD /` to the endpoint the SDK resolved (the region, FIPS,
//! dual-stack and `AWS_ENDPOINT_URL_SECRETS_MANAGER` all apply as for the reads).

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_secretsmanager::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use tracing::debug;

use super::target::{AwsTarget, Version};
use super::{AwsBatch, AwsConfig};

/// Whether the credentials take a network exchange, so that connections opened meanwhile
/// save round trips: always unless static keys are in the environment (then the reads
/// start at once, and a warm-up would only race them for a connection).
pub(super) fn worthwhile(config: &AwsConfig) -> bool {
    config.token.is_some() || crate::env::var("AWS_ACCESS_KEY_ID").is_none()
}

/// How many connections each region's reads will use at once: one per request in flight,
/// as HTTP/1.1 has it (an HTTP/2 endpoint shares one connection among them): the
/// BatchGetSecretValue calls (20 secrets each) plus the secrets read alone, at most
/// `concurrency`.
pub(super) fn connections(
    targets: &[&AwsTarget],
    default_region: Option<&str>,
    batch: AwsBatch,
    concurrency: usize,
) -> HashMap<String, usize> {
    let mut by_region: HashMap<String, (usize, usize)> = HashMap::new();
    for target in targets {
        let Some(region) = target.region.as_deref().or(default_region) else {
            continue;
        };
        let (current, other) = by_region.entry(region.to_owned()).or_default();
        match target.version {
            Version::Current => *current += 1,
            _ => *other += 1,
        }
    }
    by_region
        .into_iter()
        .map(|(region, (current, other))| {
            let batched = match batch {
                AwsBatch::Never => false,
                AwsBatch::Auto => current >= 2,
                AwsBatch::Always => true,
            };
            let requests = match batched {
                true => current.div_ceil(20) + other,
                false => current + other,
            };
            (region, requests.min(concurrency))
        })
        .collect()
}

/// Starts `count` warm-up requests per region in the background; nothing waits for them.
pub(super) fn spawn(shared: &SdkConfig, connections: HashMap<String, usize>) {
    for (region, count) in connections {
        debug!(region = %region, connections = count, "opening Secrets Manager connections");
        let config = aws_sdk_secretsmanager::config::Builder::from(shared)
            .region(Region::new(region))
            // Never sent: the interceptor drops the signature with the rest of the request.
            .credentials_provider(Credentials::new(
                "warm-up", "warm-up", None, None, "warm-up",
            ))
            .interceptor(BareHead)
            .build();
        let client = Client::from_conf(config);
        for _ in 0..count {
            let client = client.clone();
            tokio::spawn(async move {
                let _ = client.list_secrets().send().await;
            });
        }
    }
}

/// Replaces the request about to be sent with `HEAD /` to the same endpoint, keeping only
/// the User-Agent.
#[derive(Debug)]
struct BareHead;

impl Intercept for BareHead {
    fn name(&self) -> &'static str {
        "SecretSidecarWarmUp"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let root = {
            let uri = request.uri();
            let after_scheme = uri.find("://").map_or(0, |at| at + 3);
            let end = uri[after_scheme..]
                .find('/')
                .map_or(uri.len(), |at| after_scheme + at);
            format!("{}/", &uri[..end])
        };
        let mut head = HttpRequest::empty();
        head.set_method("HEAD")?;
        head.set_uri(root)?;
        let agent = request.headers().get("user-agent").map(str::to_owned);
        if let Some(agent) = agent {
            head.headers_mut().insert("user-agent", agent);
        }
        *request = head;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Params;

    fn target(reference: &str) -> AwsTarget {
        AwsTarget::parse(reference, &mut Params::default()).unwrap()
    }

    #[test]
    fn one_connection_per_request_in_flight() {
        let names: Vec<AwsTarget> = (0..50).map(|i| target(&format!("bench/{i}"))).collect();
        let all: Vec<&AwsTarget> = names.iter().collect();
        let count = |batch, concurrency| connections(&all, Some("eu-west-1"), batch, concurrency)["eu-west-1"];
        assert_eq!(count(AwsBatch::Auto, 8), 3);
        assert_eq!(count(AwsBatch::Never, 8), 8);
        assert_eq!(count(AwsBatch::Auto, 2), 2);
        let one = [&names[0]];
        assert_eq!(
            connections(&one, Some("eu-west-1"), AwsBatch::Auto, 8)["eu-west-1"],
            1
        );
        assert!(connections(&one, None, AwsBatch::Auto, 8).is_empty());
    }
}
