//! Test-only HTTPS: a CA made once per test process, one server certificate for the
//! loopback address and the public Azure host names (so a test can reach the fakes under
//! the names a pod uses, through a CONNECT proxy), and an HTTPS server that wraps
//! [`super::http::serve`] in rustls.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::http::{Request, Response};

/// Names the server certificate is valid for, besides 127.0.0.1 and localhost.
pub const SERVER_NAMES: &[&str] = &["*.vault.azure.net", "login.microsoftonline.com"];

pub struct TestCa {
    /// The CA certificate in PEM, for `--ca-file` or `SSL_CERT_FILE`.
    pub pem_file: PathBuf,
    config: Arc<rustls::ServerConfig>,
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
        let mut leaf = CertificateParams::new(names).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf.distinguished_name
            .push(DnType::CommonName, "secret-sidecar test server");
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let pem_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("test-ca-{}.pem", std::process::id()));
        fs::write(&pem_file, issuer.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![
                    CertificateDer::from(leaf_cert.der().to_vec()),
                    issuer.der().clone(),
                ],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        TestCa {
            pem_file,
            config: Arc::new(config),
        }
    })
}

/// An HTTPS/1.1 server on 127.0.0.1 answering with a handler and recording requests.
pub struct HttpsServer {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl HttpsServer {
    pub fn with_handler(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let handler: Arc<dyn Fn(&Request) -> Response + Send + Sync> = Arc::new(handler);
        let config = Arc::clone(&ca().config);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (seen, handler, config) =
                    (Arc::clone(&seen), Arc::clone(&handler), Arc::clone(&config));
                thread::spawn(move || {
                    let Ok(connection) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let tls = rustls::StreamOwned::new(connection, stream);
                    super::http::serve(tls, &seen, &*handler);
                });
            }
        });
        HttpsServer {
            url: format!("https://127.0.0.1:{port}"),
            port,
            requests,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}
