//! Store connections opened while the identity exchange is in flight.
//!
//! With IRSA (or any credential that needs a network exchange), no read can be signed
//! before STS has answered: three round trips on a new connection (TCP, TLS,
//! AssumeRoleWithWebIdentity). Opening the store's connections only then would put two
//! more (TCP, TLS) before the first read. So while STS answers, one `HEAD /` per
//! connection the reads will need goes to the store's endpoint through the same HTTP
//! client, and so the same connection pool, as the reads: unsigned, with no credentials,
//! body or name. The service's answer (an error) is ignored; what remains is an open,
//! kept-alive connection, which the reads then use.
//!
//! The SDKs offer no way to open a connection without a request, so the request is the
//! smallest one: the store's own read operation (so the region, FIPS, dual-stack and
//! `AWS_ENDPOINT_URL_*` resolve as for the reads, and no other operation's code is built
//! into the binary), for the name `-`, whose request is replaced, just before it is sent,
//! by a bare `HEAD /` to the endpoint the SDK resolved ([`BareHead`]). Each store says how
//! many connections: `aws::warm_up`, `ssm::warm_up`.

use std::collections::HashMap;
use std::future::Future;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::identity::web_token::TokenSource;

/// Whether the credentials take a network exchange, so that connections opened meanwhile
/// save round trips: always unless static keys are in the environment (then the reads
/// start at once, and a warm-up would only race them for a connection).
pub fn worthwhile(token: Option<&TokenSource>) -> bool {
    token.is_some() || crate::env::var("AWS_ACCESS_KEY_ID").is_none()
}

/// How many connections each region's reads will use at once: one per request in flight,
/// as HTTP/1.1 has it (the AWS endpoints speak HTTP/1.1). `targets` gives each target's
/// named region (or `None` for the default) and whether a batch call can read it;
/// `batched(n)` says whether `n` such targets of one region go in batch calls of
/// `per_call` each; the rest are read alone; at most `concurrency` per region.
pub fn connections<'t>(
    targets: impl IntoIterator<Item = (Option<&'t str>, bool)>,
    default_region: Option<&str>,
    batched: impl Fn(usize) -> bool,
    per_call: usize,
    concurrency: usize,
) -> HashMap<String, usize> {
    let mut by_region: HashMap<String, (usize, usize)> = HashMap::new();
    for (named, batchable) in targets {
        let Some(region) = named.or(default_region) else {
            continue;
        };
        let (in_batch, alone) = by_region.entry(region.to_owned()).or_default();
        match batchable {
            true => *in_batch += 1,
            false => *alone += 1,
        }
    }
    by_region
        .into_iter()
        .map(|(region, (in_batch, alone))| {
            let requests = match batched(in_batch) {
                true => in_batch.div_ceil(per_call) + alone,
                false => in_batch + alone,
            };
            (region, requests.min(concurrency))
        })
        .collect()
}

/// The configuration of a warm-up client for `region`: the run's, with credentials that
/// are never sent ([`BareHead`] drops the signature with the rest of the request).
fn config(shared: &SdkConfig, region: &str) -> SdkConfig {
    let unsent = Credentials::new("warm-up", "warm-up", None, None, "warm-up");
    super::regional(shared, region, unsent)
}

/// Starts the warm-ups: for each region of `needed`, a client from `build` (given
/// [`config`] for that region; the store adds [`BareHead`]) and `count` requests made by
/// `send` through it, each in its own task. Nothing here waits for them.
pub fn spawn<C, F>(
    shared: &SdkConfig,
    needed: HashMap<String, usize>,
    store: &str,
    build: impl Fn(&SdkConfig) -> C,
    send: impl Fn(C) -> F,
) -> Vec<JoinHandle<()>>
where
    C: Clone,
    F: Future<Output = ()> + Send + 'static,
{
    let mut warm_ups = Vec::new();
    for (region, count) in needed {
        debug!(region = %region, connections = count, "opening {store} connections");
        let client = build(&config(shared, &region));
        for _ in 0..count {
            warm_ups.push(tokio::spawn(send(client.clone())));
        }
    }
    warm_ups
}

/// Replaces the request about to be sent with `HEAD /` to the same endpoint, keeping only
/// the User-Agent.
#[derive(Debug)]
pub struct BareHead;

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
        let mut head = HttpRequest::empty();
        head.set_method("HEAD")?;
        head.set_uri(endpoint_root(request.uri()))?;
        let agent = request.headers().get("user-agent").map(str::to_owned);
        if let Some(agent) = agent {
            head.headers_mut().insert("user-agent", agent);
        }
        *request = head;
        Ok(())
    }
}

/// `scheme://authority/` of a request URI: no path or query of the operation survives.
fn endpoint_root(uri: &str) -> String {
    let after_scheme = uri.find("://").map_or(0, |at| at + 3);
    let end = uri[after_scheme..]
        .find(['/', '?'])
        .map_or(uri.len(), |at| after_scheme + at);
    format!("{}/", &uri[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_connection_per_request_in_flight() {
        let auto = |n: usize| n >= 2;
        let count = |n: usize, batched: &dyn Fn(usize) -> bool, concurrency| {
            let targets = (0..n).map(|_| (None, true));
            connections(targets, Some("eu-west-1"), batched, 20, concurrency)["eu-west-1"]
        };
        assert_eq!(count(50, &auto, 8), 3);
        assert_eq!(count(50, &|_| false, 8), 8);
        assert_eq!(count(50, &auto, 2), 2);
        assert_eq!(count(1, &auto, 8), 1);
        let mixed = [
            (Some("us-east-1"), true),
            (None, false),
            (None, true),
            (None, true),
        ];
        let by_region = connections(mixed, Some("eu-west-1"), auto, 20, 8);
        assert_eq!(by_region["us-east-1"], 1);
        assert_eq!(
            by_region["eu-west-1"], 2,
            "one batch call and one read alone"
        );
        assert!(connections([(None, true)], None, auto, 20, 8).is_empty());
    }

    #[test]
    fn the_bare_head_keeps_only_the_endpoint() {
        let root = endpoint_root;
        assert_eq!(
            root("https://secretsmanager.eu-west-1.amazonaws.com/"),
            "https://secretsmanager.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            root("https://127.0.0.1:4566/a/b?x=1"),
            "https://127.0.0.1:4566/"
        );
        assert_eq!(
            root("https://ssm.us-east-1.amazonaws.com?Action=x"),
            "https://ssm.us-east-1.amazonaws.com/"
        );
    }
}
