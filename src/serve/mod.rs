//! The one HTTP server of the long-running modes (the admission webhook over TLS, the IMDS
//! proxy and the refresh metrics on loopback), so that each gets the same limits:
//!
//! - a request's headers must arrive within [`Limits::header_timeout`] (slow clients do not
//!   hold a connection), its body is refused past [`Limits::max_body`] (413) before the
//!   handler sees it, and a handler that outlasts [`Limits::handler_timeout`] answers 503;
//! - at most [`Limits::max_connections`] connections are served at once; more wait in the
//!   kernel's backlog;
//! - on shutdown it stops accepting, lets requests in flight finish for up to
//!   [`Limits::drain`], then returns;
//! - with TLS, the certificate and key are files that are re-read when they change (on the
//!   next handshake after cert-manager or a kubelet secret update replaces them), and a
//!   pair that fails to load or does not match keeps the previous one in service;
//! - it never logs a header or a body: one debug line per request, method, path, status.
//!
//! HTTP/1.1 only: every caller of these modes (the Kubernetes API server, SDKs, curl,
//! Prometheus) speaks it, and the API server falls back to it when ALPN offers nothing else.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::exit::Failure;

/// What one server allows its clients.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body: usize,
    pub header_timeout: Duration,
    pub handler_timeout: Duration,
    pub max_connections: usize,
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 64 * 1024,
            header_timeout: Duration::from_secs(5),
            handler_timeout: Duration::from_secs(10),
            max_connections: 256,
            drain: Duration::from_secs(5),
        }
    }
}

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A bound socket, ready to serve.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A response with a fixed body, what every handler returns.
pub type Reply = Response<Full<Bytes>>;

/// A response with `status`, a content type and `body`.
pub fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

impl Listener {
    /// Binds `addr`, loading the TLS pair first when given, so that a bad address or a bad
    /// pair is a usage error before anything is served.
    pub async fn bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<Listener> {
        let tls = match tls {
            Some(files) => Some(acceptor(files).context(Failure::Usage)?),
            None => None,
        };
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))
            .context(Failure::Usage)?;
        Ok(Listener { tcp, tls })
    }

    /// The address bound (the port, when 0 was asked for).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.tcp.local_addr()?)
    }

    /// Serves `handler` until `shutdown` completes, then drains. The handler sees the whole
    /// request body, already bounded, and the peer's address as a request extension.
    pub async fn serve<H, F>(
        self,
        limits: &Limits,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()>
    where
        H: Fn(Request<Bytes>) -> F,
        F: Future<Output = Reply>,
    {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut connections = FuturesUnordered::new();
        let handler = &handler;
        tokio::pin!(shutdown);
        loop {
            let room = connections.len() < limits.max_connections;
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = connections.next() => {}
                accepted = self.tcp.accept(), if room => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // EMFILE and the like: back off instead of spinning.
                            warn!("accepting a connection: {err}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let watcher = graceful.watcher();
                    let tls = self.tls.clone();
                    connections.push(async move {
                        let service = hyper::service::service_fn(move |request| {
                            respond(request, peer, limits, handler)
                        });
                        let builder = {
                            let mut builder = hyper::server::conn::http1::Builder::new();
                            builder
                                .timer(TokioTimer::new())
                                .header_read_timeout(limits.header_timeout)
                                .max_buf_size(limits.max_body.max(16 * 1024));
                            builder
                        };
                        let outcome = match tls {
                            Some(tls) => {
                                let handshake =
                                    tokio::time::timeout(limits.header_timeout, tls.accept(stream));
                                match handshake.await {
                                    Ok(Ok(stream)) => {
                                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                                        watcher.watch(connection).await
                                    }
                                    Ok(Err(err)) => {
                                        debug!(%peer, "TLS handshake failed: {err}");
                                        Ok(())
                                    }
                                    Err(_) => Ok(()),
                                }
                            }
                            None => {
                                let connection = builder.serve_connection(TokioIo::new(stream), service);
                                watcher.watch(connection).await
                            }
                        };
                        if let Err(err) = outcome {
                            debug!(%peer, "connection ended: {err}");
                        }
                    });
                }
            }
        }

        // Stop accepting; let what is in flight finish, for a while.
        drop(self.tcp);
        let drained = graceful.shutdown();
        let deadline = tokio::time::sleep(limits.drain);
        tokio::pin!(drained, deadline);
        loop {
            tokio::select! {
                _ = &mut drained => break,
                Some(()) = connections.next() => {}
                _ = &mut deadline => {
                    warn!(open = connections.len(), "connections still open after {:?}; closing them", limits.drain);
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Reads the body within its bound, runs the handler within its time, and logs the line.
async fn respond<H, F>(
    request: Request<Incoming>,
    peer: SocketAddr,
    limits: &Limits,
    handler: &H,
) -> Result<Reply, std::convert::Infallible>
where
    H: Fn(Request<Bytes>) -> F,
    F: Future<Output = Reply>,
{
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
    let response = match Limited::new(body, limits.max_body).collect().await {
        Err(_) => reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            format!(
                "the request body is larger than {} bytes\n",
                limits.max_body
            ),
        ),
        Ok(body) => {
            parts.extensions.insert(peer);
            let request = Request::from_parts(parts, body.to_bytes());
            match tokio::time::timeout(limits.handler_timeout, handler(request)).await {
                Ok(response) => response,
                Err(_) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "the request took too long\n",
                ),
            }
        }
    };
    debug!(
        %method,
        path = %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(response)
}

/// A TLS acceptor serving the pair in `files`, re-read when the files change.
fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor> {
    let resolver = Reloading::load(files)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| anyhow!("TLS set-up: {err}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The certificate and key files, re-read at a handshake when either has changed.
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

/// What identifies a version of the two files: inode, size and modification time.
type Stamp = [(u64, u64, u64, i64, i64); 2];

fn stamp(files: &TlsFiles) -> Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let of = |path: &Path| -> Result<(u64, u64, u64, i64, i64)> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        Ok((
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
        ))
    };
    Ok([of(&files.cert)?, of(&files.key)?])
}

impl Reloading {
    fn load(files: &TlsFiles) -> Result<Reloading> {
        let stamp = stamp(files)?;
        let key = certified_key(files)?;
        Ok(Reloading {
            files: files.clone(),
            current: Mutex::new((stamp, key)),
        })
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().ok()?;
        if let Ok(now) = stamp(&self.files)
            && now != current.0
        {
            match certified_key(&self.files) {
                Ok(key) => {
                    info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    *current = (now, key);
                }
                // Half-way through a rotation, or a bad pair: serve the last good one and
                // try again at the next handshake.
                Err(err) => warn!("keeping the current TLS certificate: {err:#}"),
            }
        }
        Some(current.1.clone())
    }
}

/// The chain and key in `files`, checked to belong together.
fn certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| anyhow!("{}: {err}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!("{} holds no certificate", files.cert.display()));
    }
    // The key's bytes are never shown; only which file failed.
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|_| anyhow!("{} holds no PEM private key", files.key.display()))?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|_| {
        anyhow!(
            "{}: the private key's type is not supported",
            files.key.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| {
        anyhow!(
            "{} and {} do not belong together (the key is not the certificate's)",
            files.cert.display(),
            files.key.display()
        )
    })?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests;
