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

/// The credentials the clients are built with: none for the warm-up requests, the real
/// ones for everything else.
#[derive(Debug, Clone)]
pub(super) struct Anonymous {
    inner: AccessTokenCredentials,
    /// How many header requests may still be answered with no headers.
    left: Arc<AtomicUsize>,
}

impl Anonymous {
    pub(super) fn new(inner: AccessTokenCredentials) -> Anonymous {
        Anonymous {
            inner,
            left: Arc::new(AtomicUsize::new(0)),
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

    async fn universe_domain(&self) -> Option<String> {
        self.inner.universe_domain().await
    }
}

/// Starts `count` warm-up requests through `client` in the background; nothing waits for
/// them.
pub(super) fn spawn(client: &SecretManagerService, anonymous: &Anonymous, count: usize) {
    debug!(connections = count, "opening Secret Manager connections");
    anonymous.left.fetch_add(count, Ordering::SeqCst);
    for _ in 0..count {
        let client = client.clone();
        tokio::spawn(async move {
            let _ = client
                .access_secret_version()
                .set_name(PLACEHOLDER)
                .with_user_agent(USER_AGENT)
                .send()
                .await;
        });
    }
}
