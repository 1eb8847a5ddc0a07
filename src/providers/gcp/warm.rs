//! Secret Manager connections opened while the access token is obtained.
//!
//! With workload identity federation the token comes from a Google STS exchange on a new
//! connection (TCP, TLS, the exchange: three round trips), and the client would open its
//! connections to Secret Manager only with its first reads, after the token: two more
//! round trips (TCP, TLS) before any read. The client has no way to open a connection
//! without a request, so while the token is obtained, one request per connection the run
//! will use goes out through the same clients with no credentials at all, for a resource
//! that cannot exist ([`PLACEHOLDER`]). The service refuses it (401) and the connection
//! stays open in the client's pool for the reads. No token and no real secret name is
//! in those requests.
//!
//! The clients are built with [`Anonymous`] credentials for this: the first header
//! requests (as many as warm-up requests were started) get no headers, until
//! [`Anonymous::stop`], which the provider calls the moment the real token arrives and so
//! before any read; from then on every request gets the real credentials' headers.
//!
//! Building a client waits for the credentials' universe domain, which the metadata
//! server's credentials ask the metadata server for: the warm-up would start only with the
//! token. So [`Anonymous`] answers at once with the universe domain the client expects
//! (`GOOGLE_CLOUD_UNIVERSE_DOMAIN`, else `googleapis.com`), and the provider compares the
//! credentials' own, looked up beside the token, before any read ([`Anonymous::check_universe`]):
//! the same refusal the client would have made, before any request carries a token.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use google_cloud_auth::credentials::{
    AccessTokenCredentials, CacheableResource, CredentialsProvider, EntityTag,
};
use google_cloud_auth::errors::CredentialsError;
use google_cloud_gax::options::RequestOptionsBuilder as _;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use http::{Extensions, HeaderMap};
use tracing::debug;

use crate::net::USER_AGENT;

/// What the warm-up requests name: no project or secret can have this name.
pub(super) const PLACEHOLDER: &str = "projects/-/secrets/-/versions/-";

/// The universe domain of clients that name none: the one Google's clients assume.
const DEFAULT_UNIVERSE_DOMAIN: &str = "googleapis.com";

/// The credentials the clients are built with: none for the warm-up requests, the real
/// ones for everything else.
#[derive(Debug, Clone)]
pub(super) struct Anonymous {
    inner: AccessTokenCredentials,
    /// How many header requests may still be answered with no headers.
    left: Arc<AtomicUsize>,
    /// The universe domain the clients expect, given to them without a lookup.
    universe: String,
}

impl Anonymous {
    pub(super) fn new(inner: AccessTokenCredentials) -> Anonymous {
        Anonymous {
            inner,
            left: Arc::new(AtomicUsize::new(0)),
            universe: expected_universe(),
        }
    }

    /// From now on, every request carries the real credentials.
    pub(super) fn stop(&self) {
        self.left.store(0, Ordering::SeqCst);
    }

    fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl CredentialsProvider for Anonymous {
    async fn headers(
        &self,
        extensions: Extensions,
    ) -> Result<CacheableResource<HeaderMap>, CredentialsError> {
        if self.take() {
            return Ok(CacheableResource::New {
                entity_tag: EntityTag::new(),
                data: HeaderMap::new(),
            });
        }
        self.inner.headers(extensions).await
    }

    /// What the client expects, without asking the metadata server: the credentials' own
    /// is compared by [`Anonymous::check_universe`] before any read.
    async fn universe_domain(&self) -> Option<String> {
        Some(self.universe.clone())
    }
}

/// The universe domain a client built without one expects, as google-cloud-gax works it
/// out.
fn expected_universe() -> String {
    crate::env::var("GOOGLE_CLOUD_UNIVERSE_DOMAIN")
        .unwrap_or_else(|| DEFAULT_UNIVERSE_DOMAIN.to_owned())
}

impl Anonymous {
    /// Refuses credentials of another universe domain than the one the clients were given,
    /// which the client's builder would have refused had [`Anonymous`] not answered for
    /// them. `found` is the credentials' own (`None`: the default).
    pub(super) fn check_universe(&self, found: Option<String>) -> anyhow::Result<()> {
        let expected = &self.universe;
        let found = found.unwrap_or_else(|| DEFAULT_UNIVERSE_DOMAIN.to_owned());
        match found == *expected {
            true => Ok(()),
            false => Err(anyhow::anyhow!(
                "the Google credentials are for universe domain '{found}' but the client \
                 expects '{expected}' (GOOGLE_CLOUD_UNIVERSE_DOMAIN, else googleapis.com)"
            )),
        }
    }
}

/// Starts `count` warm-up requests through `client` in the background; the provider lets
/// them finish before its reads, for a while ([`crate::net::settle`]).
pub(super) fn spawn(
    client: &SecretManagerService,
    anonymous: &Anonymous,
    count: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    debug!(connections = count, "opening Secret Manager connections");
    anonymous.left.fetch_add(count, Ordering::SeqCst);
    let mut warm_ups = Vec::new();
    for _ in 0..count {
        let client = client.clone();
        warm_ups.push(tokio::spawn(async move {
            let _ = client
                .access_secret_version()
                .set_name(PLACEHOLDER)
                .with_user_agent(USER_AGENT)
                .send()
                .await;
        }));
    }
    warm_ups
}
