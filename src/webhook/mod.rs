//! `secret-sidecar webhook`: the mutating admission webhook that injects secret-sidecar into
//! pods from their annotations, so that a team adds annotations to a pod template and
//! nothing else.
//!
//! ```text
//! POST /mutate   AdmissionReview v1 → AdmissionReview v1 with a JSON Patch, or a denial
//! GET  /healthz  200 while the process serves
//! GET  /readyz   200 once the certificate is loaded and the socket bound
//! ```
//!
//! Served by [`crate::serve`] over TLS from certificate and key files that are re-read when
//! cert-manager (or anything else) replaces them; bodies are capped at [`MAX_BODY`], a
//! request must arrive within the header timeout and be answered within the handler
//! timeout; SIGTERM or SIGINT stops accepting and lets requests in flight finish.
//!
//! - `contract.rs`: the annotations, read and checked as the init container checks them;
//! - `inject.rs`: the containers and volumes injected;
//! - `identity.rs`: the platform identities the injected containers get (IRSA projection
//!   for `--inject-irsa`, and inheritance from an identity webhook that ran first);
//! - `patch.rs`: the JSON Patch, built against the pod as sent;
//! - `accounts.rs`: the ServiceAccount lookup;
//! - `review.rs`: one AdmissionReview in, one out.

mod accounts;
pub mod contract;
mod identity;
pub mod inject;
pub mod patch;
pub mod review;

use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use hyper::{Method, Request, StatusCode};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tracing::{info, warn};

use crate::cli::WebhookArgs;
use crate::exit::Failure;
use crate::serve::{Limits, Listener, Reply, TlsFiles, reply};
use crate::signal::Stop;
use accounts::Accounts;
use inject::Settings;
use review::{BadRequest, Outcome};

/// The largest AdmissionReview accepted. A pod is at most what etcd stores (1.5 MiB); the
/// review wraps it with the user's identity.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Runs until SIGTERM or SIGINT; `Ok` then.
pub async fn run(args: &WebhookArgs) -> Result<()> {
    let settings = settings(args).context(Failure::Usage)?;
    let accounts = match args.webhook_inject_irsa {
        true => Some(Accounts::connect().await?),
        false => None,
    };
    let tls = TlsFiles {
        cert: args.webhook_tls_cert_file.clone(),
        key: args.webhook_tls_key_file.clone(),
    };
    let listener = Listener::bind(args.webhook_listen, Some(&tls)).await?;
    info!(
        address = %listener.local_addr()?,
        image = %settings.image,
        inject_irsa = accounts.is_some(),
        "admission webhook serving"
    );
    let limits = Limits {
        max_body: MAX_BODY,
        max_connections: 64,
        ..Limits::default()
    };
    let mut stop = Stop::listen();
    let shutdown = async move {
        let signal = stop.recv().await;
        info!("stopped by {signal}; finishing the requests in flight");
    };
    let (settings, accounts) = (&settings, accounts.as_ref());
    listener
        .serve(
            &limits,
            |request| route(request, settings, accounts),
            shutdown,
        )
        .await
}

async fn route(request: Request<Bytes>, settings: &Settings, accounts: Option<&Accounts>) -> Reply {
    let plain = |status, text: &'static str| reply(status, "text/plain", text);
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz" | "/readyz") => plain(StatusCode::OK, "ok\n"),
        (&Method::POST, "/mutate") => admit(request.body(), settings, accounts).await,
        (_, "/mutate" | "/healthz" | "/readyz") => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn admit(body: &[u8], settings: &Settings, accounts: Option<&Accounts>) -> Reply {
    let started = Instant::now();
    match review::review(body, settings, accounts).await {
        Ok((answer, outcome, subject)) => {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let (namespace, pod, uid) = (&subject.namespace, &subject.pod, &subject.uid);
            match outcome {
                Outcome::Injected { secrets } => {
                    info!(%namespace, %pod, %uid, secrets, ms, "injected")
                }
                Outcome::Unchanged(why) => {
                    tracing::debug!(%namespace, %pod, %uid, why, ms, "unchanged")
                }
                // The message went back to whoever created the pod; it names the annotation.
                Outcome::Denied => info!(%namespace, %pod, %uid, ms, "denied"),
            }
            reply(StatusCode::OK, "application/json", answer)
        }
        Err(BadRequest(message)) => {
            warn!("refused a request: {message}");
            reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("{message}\n"),
            )
        }
    }
}

/// The flags' values, checked before anything is served.
fn settings(args: &WebhookArgs) -> Result<Settings> {
    check_image(&args.webhook_image)?;
    Ok(Settings {
        image: args.webhook_image.clone(),
        cpu: quantity("--cpu", &args.webhook_cpu)?,
        memory: quantity("--memory", &args.webhook_memory)?,
        volume_size: quantity("--volume-size", &args.webhook_volume_size)?,
    })
}

/// A pinned image: a tag other than `latest`, or a digest.
fn check_image(image: &str) -> Result<()> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "--image '{}' is not an image reference",
            image.escape_debug()
        );
    }
    if image.contains("@sha256:") {
        return Ok(());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() && tag != "latest" => Ok(()),
        _ => bail!(
            "--image {image}: name a tag other than latest, or a digest (@sha256:...), so every \
             pod runs the image this webhook was set up with"
        ),
    }
}

/// A Kubernetes quantity such as `100m`, `64Mi` or `1.5`.
fn quantity(flag: &str, text: &str) -> Result<Quantity> {
    const SUFFIXES: [&str; 13] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| text.strip_suffix(s))
        .unwrap_or(text);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return Err(anyhow!(
            "{flag} '{text}' is not a Kubernetes quantity like 100m or 64Mi"
        ));
    }
    Ok(Quantity(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_must_be_pinned() {
        for ok in [
            "secret-sidecar:0.1.0",
            "registry.example.com:5000/team/secret-sidecar:0.1.0",
            "ghcr.io/x/secret-sidecar@sha256:0123abcd",
        ] {
            assert!(check_image(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "secret-sidecar",
            "secret-sidecar:latest",
            "registry.example.com:5000/secret-sidecar",
            "a b:1",
        ] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        for ok in ["100m", "64Mi", "1", "1.5", "2Gi"] {
            assert!(quantity("--x", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Mi", "64 Mi", "-1", "1.", "ten"] {
            assert!(quantity("--x", bad).is_err(), "{bad}");
        }
    }
}
