//! Host names looked up once for a burst of connections, by every client of the process.
//!
//! The HTTP clients look a host up for each connection they open, and a run opens several
//! to one host at once (the reads in flight together, and the connections opened while the
//! identity is resolved). In a pod each lookup is a round trip to the cluster's DNS, or
//! several with Kubernetes' `ndots:5` search list. Here the first caller's lookup
//! (`getaddrinfo`, as the clients' own resolvers do it, so `/etc/hosts`, the search list
//! and `nsswitch.conf` apply as before) is shared by every caller for that host while it
//! is in flight and for [`REUSE`] after it answered; a failed lookup is not kept, so the
//! next attempt asks again. The AWS client (`aws_session`) and this crate's reqwest client
//! (Azure, OAuth2, notifications) resolve through [`Lookups`]; Google's client builds its
//! own reqwest client and is not reached.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use tracing::debug;

/// How long an answer is reused: long enough for one run's connections, short enough that
/// a long-running mode follows an endpoint whose addresses change (its reconnections are
/// minutes apart).
pub const REUSE: Duration = Duration::from_secs(30);

type Answer = Result<Arc<[IpAddr]>, Arc<io::Error>>;
type Lookup = Shared<BoxFuture<'static, Answer>>;

/// Lookups by host name, in flight or answered within [`REUSE`].
static LOOKUPS: LazyLock<Mutex<HashMap<String, (Instant, Lookup)>>> = LazyLock::new(Mutex::default);

/// The process's shared resolver, as each HTTP client's resolver trait wants it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lookups;

impl Lookups {
    /// The addresses of `host`, looked up at most once per [`REUSE`] by the whole process.
    pub async fn resolve(host: &str) -> io::Result<Vec<IpAddr>> {
        let lookup = {
            let mut lookups = LOOKUPS.lock().unwrap_or_else(|e| e.into_inner());
            lookups.retain(|_, (started, _)| started.elapsed() < REUSE);
            let (_, lookup) = lookups
                .entry(host.to_owned())
                .or_insert_with(|| (Instant::now(), start(host.to_owned())));
            lookup.clone()
        };
        match lookup.clone().await {
            Ok(addresses) => Ok(addresses.to_vec()),
            Err(err) => {
                let mut lookups = LOOKUPS.lock().unwrap_or_else(|e| e.into_inner());
                if lookups
                    .get(host)
                    .is_some_and(|(_, kept)| kept.ptr_eq(&lookup))
                {
                    lookups.remove(host);
                }
                Err(io::Error::new(err.kind(), err.to_string()))
            }
        }
    }
}

fn start(host: String) -> Lookup {
    async move {
        debug!(host = %host, "looking up host");
        let found = tokio::net::lookup_host((host.as_str(), 0)).await;
        let addresses: Vec<IpAddr> = found.map_err(Arc::new)?.map(|a| a.ip()).collect();
        debug!(host = %host, addresses = addresses.len(), "host looked up");
        Ok(addresses.into())
    }
    .boxed()
    .shared()
}

impl reqwest::dns::Resolve for Lookups {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addresses = Lookups::resolve(name.as_str()).await?;
            let addresses: reqwest::dns::Addrs =
                Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_lookup_and_failures_are_not_kept() {
        let (a, b) = tokio::join!(Lookups::resolve("localhost"), Lookups::resolve("localhost"));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b);
        assert!(a.iter().all(IpAddr::is_loopback), "{a:?}");
        let kept = LOOKUPS
            .lock()
            .unwrap()
            .get("localhost")
            .map(|(_, l)| l.clone());
        Lookups::resolve("localhost").await.unwrap();
        let again = LOOKUPS
            .lock()
            .unwrap()
            .get("localhost")
            .map(|(_, l)| l.clone());
        assert!(kept.unwrap().ptr_eq(&again.unwrap()), "looked up again");

        let missing = "no-such-host.invalid";
        assert!(Lookups::resolve(missing).await.is_err());
        assert!(
            !LOOKUPS.lock().unwrap().contains_key(missing),
            "a failure was kept"
        );
    }
}
