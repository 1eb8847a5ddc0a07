//! How Key Vault, Entra ID and the managed identity endpoints are reached (by the Key
//! Vault provider and the IMDS proxy alike): one rustls `reqwest::Client` (the platform's
//! roots, which `SSL_CERT_FILE` replaces, plus `--ca-file`; `HTTPS_PROXY`/`NO_PROXY`
//! honoured) as the SDK's transport, with every response capped as it streams in, the
//! SDK's retries off, and the User-Agent suffix on every attempt.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use azure_core::error::{Error as AzureError, ErrorKind};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    AsyncRawResponse, ClientOptions, Context, HttpClient, Request, RetryOptions, Transport, headers,
};
use futures_util::StreamExt as _;

use crate::net::{HttpConfig, MAX_RESPONSE_BYTES, ResponseTooLarge, user_agent};

/// The reqwest client every Azure request goes through, Entra ID's included.
pub fn client_options(http: &HttpConfig) -> Result<ClientOptions> {
    let http = http.client().context("for Azure")?;
    Ok(ClientOptions {
        transport: Some(Transport::new(Arc::new(Limited(http)))),
        // One attempt per call: the core's retry policy repeats transient failures.
        retry: RetryOptions::none(),
        per_try_policies: vec![Arc::new(UserAgentSuffix)],
        ..Default::default()
    })
}

/// Appends `secret-sidecar/<version>` to the SDK's User-Agent, on every attempt.
#[derive(Debug)]
struct UserAgentSuffix;

#[async_trait::async_trait]
impl Policy for UserAgentSuffix {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        // Key Vault's challenge policy sends the same request again once it has a token;
        // `user_agent` does not append the suffix twice.
        let agent = user_agent(request.headers().get_optional_str(&headers::USER_AGENT));
        request.insert_header(headers::USER_AGENT, agent);
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The transport: reqwest, with every response body (Key Vault's, Entra ID's, a managed
/// identity endpoint's) capped at [`MAX_RESPONSE_BYTES`] while it streams in.
///
/// It has to be the transport, not a policy: the SDK's pipeline reads each response whole
/// in its last step, the transport policy, so a policy would see a body only once it had
/// been read to its end, however long that is (tests/faults.rs streams one without end).
#[derive(Debug)]
struct Limited(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for Limited {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let (status, headers, body) = self.0.execute_request(request).await?.deconstruct();
        let mut total = 0usize;
        let limited = body.map(move |chunk| {
            let chunk = chunk?;
            total = total.saturating_add(chunk.len());
            match total > MAX_RESPONSE_BYTES {
                true => Err(AzureError::new(ErrorKind::DataConversion, ResponseTooLarge)),
                false => Ok(chunk),
            }
        });
        Ok(AsyncRawResponse::new(status, headers, Box::pin(limited)))
    }
}
