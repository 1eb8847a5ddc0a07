//! Tokens per resource: cached until five minutes before they expire, and obtained by one
//! exchange at Entra ID however many callers ask at once.
//!
//! azure_identity's credential caches too, but behind one lock for all resources that it
//! holds across the exchange, and it shares no failure: a hundred callers during an Entra
//! outage would make a hundred exchanges, one after the other. Here each resource has its
//! own slot; the first caller that finds no fresh token starts the exchange and everyone
//! who comes while it runs awaits the same one, success or refusal. A refusal is not
//! cached: the next caller after it tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_core::error::{Error as AzureError, ErrorKind};
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use hyper::StatusCode;
use tracing::{info, warn};

use crate::exit::Failure;
use crate::identity::azure::Identity;
use crate::net::{certificate_refused, error_chain};
use crate::secret::SecretValue;

/// A token is handed out only while it has more than this left, the margin azure_identity
/// refreshes at, so that a caller never gets one about to expire.
const MARGIN: Duration = Duration::from_secs(300);
/// Slots kept at most; a caller asking for ever new resources cannot grow memory.
const MAX_RESOURCES: usize = 64;

/// A token and when it expires.
#[derive(Clone)]
pub struct Token {
    pub value: Arc<SecretValue>,
    pub expires_on: SystemTime,
}

impl Token {
    fn fresh(&self) -> bool {
        self.expires_on
            .duration_since(SystemTime::now())
            .is_ok_and(|left| left > MARGIN)
    }
}

/// Why there is no token, in the words the caller gets (IMDS's error and description)
/// and the HTTP status that carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: String,
    pub description: String,
    /// How a run that needs this token fails: an identity failure (Entra refused, the
    /// assertion could not be made, Entra's certificate was refused) is not retried.
    pub class: Failure,
}

type Flight = Shared<BoxFuture<'static, Result<Token, Refusal>>>;

#[derive(Default)]
struct Slot {
    cached: Option<Token>,
    flight: Option<Flight>,
}

/// The tokens of one workload identity.
pub struct Tokens {
    credential: Arc<dyn TokenCredential>,
    identity: Arc<Identity>,
    slots: Mutex<HashMap<String, Slot>>,
}

impl Tokens {
    pub fn new(credential: Arc<dyn TokenCredential>, identity: Arc<Identity>) -> Tokens {
        Tokens {
            credential,
            identity,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh token for `resource` (IMDS's word: the scope is `RESOURCE/.default`).
    pub async fn get(&self, resource: &str) -> Result<Token, Refusal> {
        let flight = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            if !slots.contains_key(resource) && slots.len() >= MAX_RESOURCES {
                slots.retain(|_, slot| {
                    slot.flight.is_some() || slot.cached.as_ref().is_some_and(Token::fresh)
                });
            }
            if slots.len() >= MAX_RESOURCES && !slots.contains_key(resource) {
                // Full of live tokens: serve this one without keeping it.
                self.exchange(resource)
            } else {
                let slot = slots.entry(resource.to_owned()).or_default();
                if let Some(token) = slot.cached.as_ref().filter(|t| t.fresh()) {
                    return Ok(token.clone());
                }
                slot.flight
                    .get_or_insert_with(|| self.exchange(resource))
                    .clone()
            }
        };
        let outcome = flight.clone().await;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(resource)
            && slot
                .flight
                .as_ref()
                .is_some_and(|current| current.ptr_eq(&flight))
        {
            slot.flight = None;
            if let Ok(token) = &outcome {
                slot.cached = Some(token.clone());
            }
        }
        outcome
    }

    /// One exchange at Entra ID, shareable among the callers who wait for it.
    fn exchange(&self, resource: &str) -> Flight {
        let credential = Arc::clone(&self.credential);
        let identity = Arc::clone(&self.identity);
        // IMDS's resource becomes Entra's scope unchanged, trailing slash included, so
        // the token's audience is the resource as the caller wrote it.
        let scope = format!("{resource}/.default");
        let resource = resource.to_owned();
        async move {
            let started = std::time::Instant::now();
            match credential.get_token(&[scope.as_str()], None).await {
                Ok(token) => {
                    let expires_on = SystemTime::from(token.expires_on);
                    let left = expires_on
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    info!(
                        resource = %resource,
                        expires_in_s = left.as_secs(),
                        ms = started.elapsed().as_millis() as u64,
                        "token obtained"
                    );
                    Ok(Token {
                        value: Arc::new(SecretValue::from_string(token.token.secret().to_owned())),
                        expires_on,
                    })
                }
                Err(err) => {
                    let refusal = refusal(&err);
                    let code = entra_code(&err);
                    let mut text = error_chain(&err);
                    text.push_str(&identity.explain(code.as_deref()));
                    warn!(
                        resource = %resource,
                        status = refusal.status.as_u16(),
                        "no token from Entra ID: {}",
                        text.replace(['\r', '\n'], " ")
                    );
                    Err(refusal)
                }
            }
        }
        .boxed()
        .shared()
    }
}

/// Whether the projected token could not be read: no Entra answer anywhere in the chain
/// (the caller checked), and at its root a credential error, which only our assertion
/// raises (a transport failure is a connection or I/O error).
fn assertion_failed(err: &AzureError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut last = None;
    while let Some(current) = cause {
        last = current.downcast_ref::<AzureError>().or(last);
        cause = current.source();
    }
    last.is_some_and(|root| matches!(root.kind(), ErrorKind::Credential))
}

/// Entra's AADSTS code(s), when it refused.
fn entra_code(err: &AzureError) -> Option<String> {
    http_error(err).and_then(|answer| answer.code)
}

/// An HTTP answer found in an SDK error chain.
struct HttpAnswer<'e> {
    status: u16,
    /// Entra's AADSTS code(s).
    code: Option<String>,
    body: Option<&'e [u8]>,
}

/// The first HTTP answer in an SDK error chain.
fn http_error(err: &AzureError) -> Option<HttpAnswer<'_>> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = cause {
        if let Some(azure) = current.downcast_ref::<AzureError>()
            && let ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } = azure.kind()
        {
            return Some(HttpAnswer {
                status: u16::from(*status),
                code: error_code.clone(),
                body: raw_response.as_deref().map(|raw| raw.body().as_ref()),
            });
        }
        cause = current.source();
    }
    None
}

/// What the caller is told, as IMDS tells it: Entra's own refusal (400 with its `error`
/// and `error_description`, AADSTS code included) when Entra refused the assertion or
/// the resource; 429 when it throttled; otherwise IMDS's 500 for a token it could not
/// retrieve, which every client retries.
fn refusal(err: &AzureError) -> Refusal {
    let unavailable = |class: Failure, why: &str| Refusal {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        error: "unknown".to_owned(),
        description: format!("Failed to retrieve token from the Active directory: {why}"),
        class,
    };
    if certificate_refused(err) {
        return unavailable(
            Failure::Auth,
            "Entra ID's TLS certificate was refused (see the proxy's log)",
        );
    }
    match http_error(err).map(|answer| (answer.status, answer.body)) {
        Some((429, _)) => Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "temporarily_unavailable".to_owned(),
            description: "Entra ID throttled the token request; retry later".to_owned(),
            class: Failure::Transient,
        },
        Some((status @ 400..=499, body)) => {
            #[derive(serde::Deserialize)]
            struct Entra {
                error: String,
                error_description: Option<String>,
            }
            match body.and_then(|b| serde_json::from_slice::<Entra>(b).ok()) {
                Some(entra) => Refusal {
                    status: StatusCode::BAD_REQUEST,
                    error: entra.error,
                    description: entra.error_description.unwrap_or_default(),
                    class: Failure::Auth,
                },
                None => unavailable(
                    Failure::Auth,
                    &format!(
                        "Entra ID answered HTTP {status} with a body that is not an OAuth error"
                    ),
                ),
            }
        }
        Some((status, _)) => unavailable(
            Failure::Transient,
            &format!("Entra ID answered HTTP {status}"),
        ),
        None if assertion_failed(err) => unavailable(
            Failure::Auth,
            &format!(
                "the workload identity's assertion could not be made: {}",
                error_chain(err)
            ),
        ),
        None => unavailable(
            Failure::Transient,
            "Entra ID could not be reached, or its answer was not understood (see the \
             proxy's log)",
        ),
    }
}
