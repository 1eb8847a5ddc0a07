//! What every network caller in this crate shares, identity sources and providers alike.
//!
//! Each rule lives here once: error chains are shown by `Display` only (SDK errors keep
//! raw responses, which can hold a secret); a refused server certificate is an identity
//! failure, never retried; a token or a secret travels over https, or plain http only to
//! this machine; every request says `secret-sidecar/<version>` in its User-Agent; no
//! answer is buffered past [`MAX_RESPONSE_BYTES`]; `--ca-file` is read and checked once
//! ([`CaBundle`]) and handed to each client as bytes; and requests this crate makes itself
//! go through one reqwest client ([`HttpConfig::client`]) that follows no redirect; a
//! host is looked up once for a burst of connections ([`Lookups`], `net/lookup.rs`).

mod lookup;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::exit::Failure;
pub use lookup::Lookups;

/// An error as one line: each cause's `Display`, joined by `: `, with repeats dropped.
/// Never `Debug`: SDK errors keep the raw HTTP response, whose body may hold a secret or
/// credentials when a successful response fails to parse.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(err);
    while let Some(current) = cause {
        let text = current.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        cause = current.source();
    }
    parts.join(": ")
}

/// Whether a connection failed because this client refused the server's TLS certificate
/// (an unknown or self-signed issuer, another host's name, expired). Retrying cannot fix
/// that, and it may be an interception, so it is an authentication failure (of the
/// server), never transient.
///
/// rustls says so with `Error::InvalidCertificate`, which each SDK buries differently:
/// aws-smithy's connector and reqwest (Azure, Google) inside hyper-util's and their own
/// errors, around an `io::Error`. `io::Error::source` skips the error it carries, so an
/// `io::Error` is opened with `get_ref` as well as followed through `source`.
pub fn certificate_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut pending = vec![err];
    while let Some(current) = pending.pop() {
        if let Some(rustls::Error::InvalidCertificate(_)) = current.downcast_ref::<rustls::Error>()
        {
            return true;
        }
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            pending.push(inner);
        }
        pending.extend(current.source());
    }
    false
}

/// The error every caller reports for a refused certificate (see [`certificate_refused`]):
/// exit 3, not retried, with what to check.
pub fn certificate_error(cause: String) -> anyhow::Error {
    anyhow!(cause)
        .context(
            "the server's TLS certificate was refused; check that its CA is trusted \
             (--ca-file, SSL_CERT_FILE) and that it names the host in the URL",
        )
        .context(Failure::Auth)
}

/// Whether a URL's host (`localhost`, `127.0.0.1`, `[::1]`) is this machine, the one
/// place plain http may carry a token or a secret.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks a URL the user gave for an endpoint that will receive `carries` (a client
/// secret, an access token): https, or plain http only to a loopback address. `option`
/// names it in errors (`--gcp-endpoint`).
pub fn https_or_loopback(option: &str, text: &str, carries: &str) -> Result<reqwest::Url> {
    let url = reqwest::Url::parse(text)
        .map_err(|err| anyhow!("{option} '{text}' is not a URL: {err}"))?;
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        bail!("{option} '{text}' has no host");
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(host) => Ok(url),
        "http" => bail!(
            "{option} '{text}' is plain http to a non-loopback host; {carries} would cross the \
             network unencrypted (use https)"
        ),
        other => bail!("{option} '{text}' is {other}://; it must be https"),
    }
}

/// `secret-sidecar/<version>`, for every request's User-Agent.
pub const USER_AGENT: &str = concat!("secret-sidecar/", env!("CARGO_PKG_VERSION"));

/// An SDK's User-Agent with `secret-sidecar/<version>` appended (once, however often a
/// request passes through), so calls are attributable in the provider's audit logs.
pub fn user_agent(sdk: Option<&str>) -> String {
    match sdk {
        Some(existing) if existing.ends_with(USER_AGENT) => existing.to_owned(),
        Some(existing) => format!("{existing} {USER_AGENT}"),
        None => USER_AGENT.to_owned(),
    }
}

/// The most one response may hold. Far above every store's own limits (AWS: 64 KiB per
/// secret, 20 per batch; Azure: 25 KiB; Google: 64 KiB) and their encodings, and low
/// enough that a hostile or broken endpoint cannot make the process buffer without end.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// What a caller reports when a response goes over [`MAX_RESPONSE_BYTES`]: bad data,
/// exit 7, and never retried.
#[derive(Debug)]
pub struct ResponseTooLarge;

impl std::fmt::Display for ResponseTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the response is larger than {MAX_RESPONSE_BYTES} bytes, far above any secret"
        )
    }
}

impl std::error::Error for ResponseTooLarge {}

/// `--ca-file`: CA certificates (PEM) trusted beside the platform's roots, read and
/// checked once when the plan is built, then handed to each client as bytes.
#[derive(Debug, Clone)]
pub struct CaBundle {
    path: PathBuf,
    pem: Arc<[u8]>,
}

impl CaBundle {
    pub fn read(path: &Path) -> Result<CaBundle> {
        let pem = std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            bail!("--ca-file {} holds no PEM certificate", path.display());
        }
        Ok(CaBundle {
            path: path.to_owned(),
            pem: pem.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

/// Waits for the requests that open a store's connections ahead of its reads (the
/// providers' warm-ups), at most `bound`: the time the identity exchange they ran beside
/// took. A read that starts while its connection's warm-up is still out makes the pool
/// open another connection, a second handshake for nothing when the two endpoints are
/// equally far; when the store is much farther than the identity, the bound lets the reads
/// go ahead and race a new connection against the warm one.
pub async fn settle(warm_ups: Vec<tokio::task::JoinHandle<()>>, bound: Duration) {
    if warm_ups.is_empty() {
        return;
    }
    let _ = tokio::time::timeout(bound, futures_util::future::join_all(warm_ups)).await;
}

/// How this process makes one HTTP attempt: its time bound, connection set-up included,
/// and the extra roots to trust.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub attempt_timeout: Duration,
    pub ca: Option<CaBundle>,
    /// How many requests the run has in flight at most (`--concurrency`): how many
    /// connections a provider opens ahead of its reads.
    pub concurrency: usize,
}

impl HttpConfig {
    /// The reqwest client for requests this crate makes itself (Azure's SDK transport, the
    /// OAuth2 token request): one attempt bounded in time, no redirects (a token or a
    /// secret must not follow a `Location` to another host), `--ca-file` trusted beside
    /// the platform's roots, hosts looked up through [`Lookups`].
    pub fn client(&self) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.attempt_timeout)
            .timeout(self.attempt_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Lookups)
            .no_proxy();
        for proxy in proxies_from_env()? {
            builder = builder.proxy(proxy);
        }
        if let Some(ca) = &self.ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca.pem())
                .map_err(|err| anyhow!(error_chain(&err)))
                .with_context(|| format!("--ca-file {}", ca.path().display()))
                .context(Failure::Usage)?;
            builder = builder.tls_certs_merge(certs);
        }
        builder
            .build()
            .map_err(|err| anyhow!(error_chain(&err)))
            .context("building the HTTPS client")
            .context(Failure::Usage)
    }
}

/// The proxies the environment names (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, with
/// `NO_PROXY`; upper or lower case), as reqwest would read them, except that this machine
/// is never reached through one: a request to a loopback address is plain http carrying a
/// client secret or a token, which a proxy would see.
fn proxies_from_env() -> Result<Vec<reqwest::Proxy>> {
    let var = |name: &str| crate::env::var(name).or_else(|| crate::env::var(&name.to_lowercase()));
    let mut bypass = var("NO_PROXY").unwrap_or_default();
    bypass.push_str(",localhost,127.0.0.0/8,::1");
    let mut proxies = Vec::new();
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
        let Some(url) = var(name) else { continue };
        let proxy = match name {
            "HTTPS_PROXY" => reqwest::Proxy::https(&url),
            "HTTP_PROXY" => reqwest::Proxy::http(&url),
            _ => reqwest::Proxy::all(&url),
        }
        .map_err(|err| anyhow!(error_chain(&err)))
        .with_context(|| format!("{name} is not a proxy URL"))
        .context(Failure::Usage)?;
        proxies.push(proxy.no_proxy(reqwest::NoProxy::from_string(&bypass)));
    }
    Ok(proxies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn a_refused_certificate_is_found_inside_io_errors_and_nowhere_else() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, refused);
        let outer = Layer("connection failed", None);
        assert!(certificate_refused(&wrapped));
        assert!(!certificate_refused(&outer));
        let other =
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(!certificate_refused(&other));
        let err = certificate_error("invalid peer certificate: UnknownIssuer".to_owned());
        assert_eq!(Failure::of(&err), Failure::Auth);
        assert!(format!("{err:#}").starts_with("authentication failed: the server's TLS"));
    }

    #[test]
    fn the_user_agent_suffix_is_added_once() {
        let once = user_agent(Some("azsdk-rust/1.0"));
        assert_eq!(once, format!("azsdk-rust/1.0 {USER_AGENT}"));
        assert_eq!(user_agent(Some(&once)), once);
        assert_eq!(user_agent(None), USER_AGENT);
    }

    #[test]
    fn error_chain_uses_display_only_and_drops_repeats() {
        let err = Layer(
            "service error",
            Some(Box::new(Layer(
                "NotFound: gone",
                Some(Box::new(Layer("NotFound: gone", None))),
            ))),
        );
        assert_eq!(error_chain(&err), "service error: NotFound: gone");
    }

    #[test]
    fn tokens_and_secrets_only_travel_over_https_or_loopback() {
        for ok in [
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "https://secretmanager-x.p.googleapis.com",
            "http://127.0.0.1:8080/token",
            "http://localhost/token",
            "http://localhost:1",
            "http://[::1]:9/token",
            "http://[::1]:8080/",
        ] {
            https_or_loopback("--x", ok, "a token").unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        for bad in [
            "http://idp.example.com/token",
            "http://10.0.0.1:8080",
            "http://127.0.0.1.evil.example/token",
            "ftp://idp/token",
            "idp.example.com/token",
            "secretmanager.googleapis.com",
            "https://",
        ] {
            assert!(
                https_or_loopback("--x", bad, "a token").is_err(),
                "{bad} was accepted"
            );
        }
        let err = https_or_loopback("--x", "http://idp.example.com", "the secret").unwrap_err();
        assert!(
            err.to_string()
                .contains("plain http to a non-loopback host; the secret would cross"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("ca-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(CaBundle::read(&path).is_err());
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nAA==\n").unwrap();
        assert_eq!(CaBundle::read(&path).unwrap().path(), path);
        assert!(CaBundle::read(&dir.join("missing.pem")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
