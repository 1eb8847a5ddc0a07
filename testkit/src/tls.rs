//! Test-only HTTPS: a CA made once per test process, one server certificate for the
//! loopback address and the public Azure host names (so a test can reach the fakes under
//! the names a pod uses, through a CONNECT proxy), and an HTTPS server that wraps
//! [`super::http::serve`] in rustls. For the fault suite the server can instead present a
//! [`BadCertificate`]: a self-signed one, or one from the test CA for another host name.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::http::{Fault, Request, Response};

/// Names the server certificate is valid for, besides 127.0.0.1 and localhost.
pub const SERVER_NAMES: &[&str] = &["*.vault.azure.net", "login.microsoftonline.com"];

pub struct TestCa {
    /// The CA certificate in PEM, for `--ca-file` or `SSL_CERT_FILE`.
    pub pem_file: PathBuf,
    config: Arc<rustls::ServerConfig>,
    /// A leaf from this CA that names only [`WRONG_NAME`].
    wrong_name: Arc<rustls::ServerConfig>,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// The only name the [`BadCertificate::WrongName`] certificate is valid for.
pub const WRONG_NAME: &str = "wrong-host.example.test";

/// A certificate a client that trusts the test CA must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadCertificate {
    /// Valid for 127.0.0.1 and localhost, but signed by its own key, not by the test CA.
    SelfSigned,
    /// Signed by the test CA, but for [`WRONG_NAME`] only.
    WrongName,
}

/// The process's test CA and server configuration, made on first use.
pub fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "secret-sidecar test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();

        let mut names = vec!["localhost".to_owned()];
        names.extend(SERVER_NAMES.iter().map(|n| n.to_string()));
        let mut leaf = leaf_params(names);
        leaf.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let wrong_key = KeyPair::generate().unwrap();
        let wrong_cert = leaf_params(vec![WRONG_NAME.to_owned()])
            .signed_by(&wrong_key, &issuer)
            .unwrap();

        let pem_file = pem_path(std::process::id());
        fs::write(&pem_file, issuer.pem()).unwrap();
        remove_stale_pem_files();

        TestCa {
            pem_file,
            config: server_config(&leaf_cert, &leaf_key, Some(issuer.der())),
            wrong_name: server_config(&wrong_cert, &wrong_key, Some(issuer.der())),
            issuer,
        }
    })
}

/// Where the CA of test process `pid` is written: on disk, readable by every user the
/// binary may run as.
fn pem_path(pid: u32) -> PathBuf {
    super::disk_dir().join(format!("secret-sidecar-test-ca-{pid}.pem"))
}

/// Each test process writes its CA once and cannot know when it is the last to need it;
/// the next one removes the files of processes that are gone.
fn remove_stale_pem_files() {
    let Ok(entries) = fs::read_dir(super::disk_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("secret-sidecar-test-ca-"))
            .and_then(|n| n.strip_suffix(".pem"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_file(pem_path(pid));
        }
    }
}

fn leaf_params(names: Vec<String>) -> CertificateParams {
    let mut leaf = CertificateParams::new(names).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "secret-sidecar test server");
    leaf
}

/// A server configuration presenting `cert` (and its issuer, when there is one).
fn server_config(
    cert: &rcgen::Certificate,
    key: &KeyPair,
    issuer: Option<&CertificateDer<'static>>,
) -> Arc<rustls::ServerConfig> {
    let mut chain = vec![CertificateDer::from(cert.der().to_vec())];
    chain.extend(issuer.cloned());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Arc::new(config)
}

/// A fresh self-signed certificate for 127.0.0.1 and localhost and its key, as PEM
/// (certificate, PKCS#8 key): a pair for a server under test to load from files.
pub fn self_signed_pem() -> (String, String) {
    let mut params = leaf_params(vec!["localhost".to_owned()]);
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A certificate from the test CA for 127.0.0.1 and localhost, with `common_name` as its
/// subject, and its key, as PEM (certificate, PKCS#8 key): a pair for a server under test
/// that clients trusting [`TestCa::pem_file`] accept.
pub fn ca_signed_pem(common_name: &str) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca().issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A certificate for 127.0.0.1 and localhost that no CA signed.
fn self_signed() -> Arc<rustls::ServerConfig> {
    let mut params = leaf_params(vec!["localhost".to_owned()]);
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    server_config(&cert, &key, None)
}

/// An HTTPS/1.1 server on 127.0.0.1 answering with a handler and recording requests.
pub struct HttpsServer {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
}

impl HttpsServer {
    pub fn with_handler(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        HttpsServer::with_config(Arc::clone(&ca().config), handler)
    }

    /// The same, presenting a certificate a client must refuse.
    pub fn with_bad_certificate(
        certificate: BadCertificate,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Self {
        let config = match certificate {
            BadCertificate::SelfSigned => self_signed(),
            BadCertificate::WrongName => Arc::clone(&ca().wrong_name),
        };
        HttpsServer::with_config(config, handler)
    }

    fn with_config(
        config: Arc<rustls::ServerConfig>,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen, accepted) = (Arc::clone(&requests), Arc::clone(&connections));
        let handler: Arc<dyn Fn(&Request) -> Response + Send + Sync> = Arc::new(handler);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                // A response is written as head, then body: with Nagle's algorithm the body
                // would wait for the client's delayed ACK of the head (40 ms on Linux).
                let _ = stream.set_nodelay(true);
                accepted.fetch_add(1, Ordering::SeqCst);
                let (seen, handler, config) =
                    (Arc::clone(&seen), Arc::clone(&handler), Arc::clone(&config));
                thread::spawn(move || {
                    let (Ok(connection), Ok(spare)) =
                        (rustls::ServerConnection::new(config), stream.try_clone())
                    else {
                        return;
                    };
                    let tls = rustls::StreamOwned::new(connection, stream);
                    if super::http::serve(tls, &seen, &*handler) == Fault::Reset {
                        // As for plain HTTP: a zero linger turns the close into an RST.
                        let _ = rustix::net::sockopt::set_socket_linger(
                            &spare,
                            Some(std::time::Duration::ZERO),
                        );
                    }
                });
            }
        });
        HttpsServer {
            url: format!("https://127.0.0.1:{port}"),
            port,
            requests,
            connections,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// TCP connections accepted, whether or not a TLS session followed.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
