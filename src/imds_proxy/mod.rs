//! `secret-sidecar imds-proxy`: the pod's instance metadata service, for its identity only.
//!
//! An application written for a VM's managed identity or for AAD Pod Identity asks
//! `http://169.254.169.254/metadata/identity/oauth2/token` for its tokens. On AKS with
//! Workload Identity nothing answers there for the pod (or, worse, the node's own IMDS
//! does, with the node's identity). This mode answers instead, on a loopback address,
//! with tokens for the pod's workload identity: the projected service account token is
//! exchanged at Entra ID by azure_identity's client assertion credential, exactly as the
//! Key Vault provider does it (`crate::identity::azure`).
//!
//! ```text
//! imds-proxy --install-redirect        init container, NET_ADMIN: 169.254.169.254:80 → --listen
//! imds-proxy [--listen 127.0.0.1:8000] native sidecar: serve until SIGTERM
//! imds-proxy --probe                   its startup probe: a token for --resource can be had
//! ```
//!
//! - `protocol.rs`: the IMDS and App Service contracts (what is asked, what is answered);
//! - `tokens.rs`: the per-resource cache and the single exchange many callers share;
//! - `redirect.rs`: the nftables rule, written over netlink (the image has no `nft`).
//!
//! It fails closed: identity variables missing, the token file absent, or Entra refusing
//! the first exchange end the process with the identity exit code before the app starts
//! (the startup probe never passes); a token for `--resource` must come within
//! `--timeout`. Once running, a failed exchange is answered with IMDS's error and tried
//! again by the next caller, while tokens still fresh keep being served. No token is
//! ever logged: one line per exchange (resource, lifetime) and the server's per-request
//! debug line (method, path, status).

mod protocol;
mod redirect;
mod tokens;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use hyper::{Request, StatusCode};
use tracing::{debug, info, warn};

use crate::cli::{Cli, ImdsProxyArgs};
use crate::exit::Failure;
use crate::identity::azure::{AzureCredential, credential};
use crate::identity::azure_transport::client_options;
use crate::net::{CaBundle, HttpConfig};
use crate::retry::Policy;
use crate::secret::SecretValue;
use crate::serve::{Limits, Listener, Reply};
use crate::signal::Stop;
use protocol::{Named, Route};
use tokens::{Refusal, Tokens};

pub use protocol::APP_SERVICE_PATH;

/// The shortest App Service header secret accepted: it stands between a request forgery
/// in the app and the identity's tokens.
const MIN_HEADER_SECRET: usize = 32;

/// Runs the mode `args` asks for: install the redirect, or serve until SIGTERM/SIGINT.
pub async fn run(args: &ImdsProxyArgs, cli: &Cli) -> Result<()> {
    let listen = loopback(args.imds_listen).context(Failure::Usage)?;
    if args.imds_install_redirect {
        return redirect::install(listen);
    }
    serve(args, cli, listen).await
}

/// `--listen` must be a loopback address: the proxy hands a token to anyone who asks.
fn loopback(listen: SocketAddr) -> Result<SocketAddr> {
    if !listen.ip().is_loopback() {
        bail!(
            "--listen {listen} is not a loopback address; the proxy answers token requests \
             without authentication (as IMDS does), so it must be reachable from the pod \
             only (use 127.0.0.1:PORT)"
        );
    }
    Ok(listen)
}

/// What every request needs, built once.
struct State {
    tokens: Tokens,
    client_id: String,
    object_id: Option<String>,
    resource_id: Option<String>,
    identity_header: Option<SecretValue>,
    /// Paths already answered 404, logged once each.
    unserved: Mutex<HashSet<String>>,
}

impl State {
    /// Whether the identity a request names is this workload's (GUIDs and Azure
    /// resource ids compare without regard to case, as Azure compares them).
    fn is_ours(&self, named: &Named) -> bool {
        let same = |ours: Option<&str>, theirs: &str| {
            ours.is_some_and(|ours| ours.eq_ignore_ascii_case(theirs.trim()))
        };
        match named {
            Named::Default => true,
            Named::ClientId(id) => same(Some(&self.client_id), id),
            Named::ObjectId(id) => same(self.object_id.as_deref(), id),
            Named::ResourceId(id) => same(self.resource_id.as_deref(), id),
        }
    }
}

async fn serve(args: &ImdsProxyArgs, cli: &Cli, listen: SocketAddr) -> Result<()> {
    let attempt_timeout = Policy::within(cli.timeout.0).attempt_timeout;
    let http = HttpConfig {
        attempt_timeout,
        ca: cli
            .ca_file
            .as_deref()
            .map(CaBundle::read)
            .transpose()
            .context(Failure::Usage)?,
        // Token requests only; no provider reads ahead here.
        concurrency: 1,
    };
    let identity_header = args
        .imds_identity_header_file
        .as_deref()
        .map(read_header_secret)
        .transpose()
        .context(Failure::Usage)?;
    let cloud = cli.azure.azure_cloud.unwrap_or_default();
    // Workload identity and nothing else: a managed identity would ask IMDS, which is
    // this proxy.
    let (credential, identity) =
        credential(AzureCredential::Workload, cloud, &client_options(&http)?)?;
    info!(
        credential = %identity.kind,
        using = %identity.inputs,
        "Azure credential selected"
    );
    let state = State {
        tokens: Tokens::new(credential, Arc::new(identity)),
        client_id: crate::env::var("AZURE_CLIENT_ID").unwrap_or_default(),
        object_id: args.imds_object_id.clone(),
        resource_id: args.imds_resource_id.clone(),
        identity_header,
        unserved: Mutex::new(HashSet::new()),
    };

    let listener = Listener::bind(listen, None).await?;
    info!(
        listen = %listener.local_addr()?,
        app_service = state.identity_header.is_some(),
        "serving IMDS token requests"
    );
    let limits = Limits {
        max_body: 1024,
        // Longer than one exchange at Entra, so that a slow one is answered in IMDS's
        // shape (500) rather than the server's.
        handler_timeout: attempt_timeout + Duration::from_secs(5),
        ..Limits::default()
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = listener.serve(&limits, |request| handle(&state, request), async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    tokio::pin!(server);
    let ready = first_token(&state, &args.imds_resource, cli.timeout.0, attempt_timeout);
    tokio::pin!(ready);
    let mut stop = Stop::listen();
    let mut is_ready = false;
    loop {
        tokio::select! {
            served = &mut server => return served,
            outcome = &mut ready, if !is_ready => match outcome {
                Ok(()) => {
                    is_ready = true;
                    info!(resource = %args.imds_resource, "ready");
                }
                Err(err) => {
                    let _ = stop_tx.send(true);
                    server.await?;
                    return Err(err);
                }
            },
            signal = stop.recv() => {
                let _ = stop_tx.send(true);
                server.await?;
                if !is_ready {
                    return Err(anyhow!("stopped by {signal} before the first token"))
                        .context(Failure::Interrupted);
                }
                info!("stopped by {signal}");
                return Ok(());
            }
        }
    }
}

/// The token for `--resource`, with the retries and deadline of a fetch run: Entra
/// refusing is an identity failure at once, Entra unreachable is retried until
/// `--timeout`.
async fn first_token(
    state: &State,
    resource: &str,
    deadline: Duration,
    attempt_timeout: Duration,
) -> Result<()> {
    let policy = Policy {
        attempt_timeout,
        ..Policy::default()
    };
    let attempt = || async {
        match state.tokens.get(resource).await {
            Ok(_) => Ok(()),
            Err(Refusal {
                error,
                description,
                class,
                ..
            }) => Err(anyhow!("{error}: {description}")).context(class),
        }
    };
    tokio::time::timeout(deadline, policy.run(attempt))
        .await
        .map_err(|_| {
            anyhow!("the {deadline:?} deadline (--timeout) passed before a token was obtained")
        })
        .context(Failure::Transient)?
        .with_context(|| format!("obtaining a token for {resource} from Entra ID"))
}

async fn handle(state: &State, request: Request<Bytes>) -> Reply {
    let uri = request.uri();
    let route = protocol::route(
        request.method(),
        uri.path(),
        uri.query(),
        request.headers(),
        state.identity_header.as_ref(),
    );
    match route {
        Route::Answer(answer) => answer,
        Route::NotServed(answer) => {
            let path = uri.path().chars().take(200).collect::<String>();
            let mut unserved = state.unserved.lock().unwrap_or_else(|p| p.into_inner());
            if unserved.len() < 100 && unserved.insert(path.clone()) {
                info!(path = %path, "answered 404: the proxy serves identity tokens only");
            }
            answer
        }
        Route::Token(asked) => {
            if !state.is_ours(&asked.named) {
                debug!(named = ?asked.named, "a request named another identity");
                return protocol::error(
                    asked.contract,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Identity not found",
                );
            }
            match state.tokens.get(&asked.resource).await {
                Ok(token) => {
                    protocol::token(&asked, &state.client_id, &token.value, token.expires_on)
                }
                Err(refusal) => protocol::error(
                    asked.contract,
                    refusal.status,
                    &refusal.error,
                    &refusal.description,
                ),
            }
        }
    }
}

/// The App Service header secret: the file's content without the whitespace around it.
fn read_header_secret(path: &std::path::Path) -> Result<SecretValue> {
    let raw = zeroize::Zeroizing::new(
        std::fs::read(path)
            .with_context(|| format!("--identity-header-file {}", path.display()))?,
    );
    let start = raw.iter().position(|b| !b.is_ascii_whitespace());
    let end = raw.iter().rposition(|b| !b.is_ascii_whitespace());
    let value = match (start, end) {
        (Some(start), Some(end)) => raw[start..=end].to_vec(),
        _ => Vec::new(),
    };
    let secret = SecretValue::new(value);
    // Its length and character class only: the value is never shown.
    if secret.len() < MIN_HEADER_SECRET || !secret.expose().iter().all(u8::is_ascii_graphic) {
        bail!(
            "--identity-header-file {} must hold at least {MIN_HEADER_SECRET} printable ASCII \
             characters without spaces (for example `openssl rand -hex 32`)",
            path.display()
        );
    }
    Ok(secret)
}

/// `imds-proxy --probe`: whether the proxy on `--listen` answers a token for
/// `--resource`, over the IMDS contract, as an application would ask. The token itself is
/// dropped unread.
pub async fn probe(args: &ImdsProxyArgs) -> Result<()> {
    let listen = loopback(args.imds_listen)?;
    let mut url = reqwest::Url::parse(&format!(
        "http://{listen}/metadata/identity/oauth2/token?api-version=2018-02-01"
    ))?;
    url.query_pairs_mut()
        .append_pair("resource", &args.imds_resource);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()?;
    let response = client
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .with_context(|| format!("no answer from the proxy on {listen}"))?;
    let status = response.status();
    let body = zeroize::Zeroizing::new(response.bytes().await?.to_vec());
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: Option<serde::de::IgnoredAny>,
        error: Option<String>,
        error_description: Option<String>,
    }
    let answer: Option<Answer> = serde_json::from_slice(&body).ok();
    match answer {
        Some(Answer {
            access_token: Some(_),
            ..
        }) if status.is_success() => Ok(()),
        Some(answer) => Err(anyhow!(
            "HTTP {status}: {}: {}",
            answer.error.unwrap_or_default(),
            answer.error_description.unwrap_or_default()
        )),
        None => {
            warn!("the proxy's answer is not JSON");
            Err(anyhow!("HTTP {status} that is not a token"))
        }
    }
}
