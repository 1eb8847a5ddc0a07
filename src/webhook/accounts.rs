//! Reading a pod's ServiceAccount from the API server, for `--inject-irsa`.
//!
//! kube-rs's client finds the API server as client-go does: the in-cluster service
//! account (its token re-read as the kubelet rotates it) or else `KUBECONFIG`. The
//! webhook's role needs `get` on `serviceaccounts` and nothing else; there is no cache
//! (that would need `list` and `watch` on every account in the cluster), so each injected
//! pod costs one GET, within [`LOOKUP_TIMEOUT`].

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;

use crate::exit::Failure;

/// Well inside the webhook's own `timeoutSeconds`, so that a slow API server becomes a
/// clear denial rather than the API server's timeout.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);

/// A client for ServiceAccounts.
#[derive(Clone)]
pub struct Accounts {
    client: kube::Client,
}

impl Accounts {
    /// The in-cluster configuration, else `KUBECONFIG`'s current context.
    pub async fn connect() -> Result<Accounts> {
        let config = kube::Config::infer()
            .await
            .context(
                "--inject-irsa reads ServiceAccounts, but no API server was found (neither the \
                 in-cluster service account nor KUBECONFIG)",
            )
            .context(Failure::Usage)?;
        let client = kube::Client::try_from(config)
            .context("setting up the Kubernetes client")
            .context(Failure::Usage)?;
        Ok(Accounts { client })
    }

    /// The ServiceAccount `name` in `namespace`.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<ServiceAccount> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        tokio::time::timeout(LOOKUP_TIMEOUT, api.get(name))
            .await
            .map_err(|_| anyhow!("the API server did not answer within {LOOKUP_TIMEOUT:?}"))?
            .map_err(|err| anyhow!(crate::net::error_chain(&err)))
            .with_context(|| format!("reading ServiceAccount {namespace}/{name}"))
    }
}
