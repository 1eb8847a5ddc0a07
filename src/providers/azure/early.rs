//! The token each vault will want, asked for before its 401 challenge has come back.
//!
//! Key Vault names the token's resource only in its challenge, and the SDK asks for a
//! token only once the challenge has come back: challenge, token exchange and read, one
//! after another. A vault's resource is known in advance (its cloud's
//! `https://vault.azure.net` or the like, [`AzureTarget::token_scope`]), so [`AskedEarly`]
//! starts the exchange when the provider connects, beside the challenge, and hands its
//! outcome, token or error, to the first caller that asks for that scope: the SDK's
//! challenge handler. An error is handed over, not asked for again, so a refused identity
//! still costs one exchange. Nothing is asked for a vault whose challenge the SDK would
//! refuse (a host outside the cloud's vault domain, without
//! `--azure-skip-challenge-resource-check`), and a challenge that names another resource
//! than expected costs one unused token, never a token sent anywhere.
//!
//! [`AzureTarget::token_scope`]: super::AzureTarget::token_scope

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use tokio::task::JoinHandle;

#[derive(Debug)]
pub(super) struct AskedEarly {
    inner: Arc<dyn TokenCredential>,
    /// The exchanges started early, by scope; each outcome is taken once.
    pending: Mutex<HashMap<String, JoinHandle<azure_core::Result<AccessToken>>>>,
}

impl AskedEarly {
    /// Starts one exchange per scope in the background and returns the credential that
    /// hands their outcomes out.
    pub(super) fn start(
        inner: Arc<dyn TokenCredential>,
        scopes: impl IntoIterator<Item = String>,
    ) -> Arc<AskedEarly> {
        let mut pending = HashMap::new();
        for scope in scopes {
            if pending.contains_key(&scope) {
                continue;
            }
            let credential = inner.clone();
            let exchange = scope.clone();
            let task =
                tokio::spawn(async move { credential.get_token(&[exchange.as_str()], None).await });
            pending.insert(scope, task);
        }
        Arc::new(AskedEarly {
            inner,
            pending: Mutex::new(pending),
        })
    }
}

#[async_trait::async_trait]
impl TokenCredential for AskedEarly {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let early = match scopes {
            [scope] => self.pending.lock().unwrap().remove(*scope),
            _ => None,
        };
        if let Some(early) = early
            && let Ok(outcome) = early.await
        {
            return outcome;
        }
        self.inner.get_token(scopes, options).await
    }
}
