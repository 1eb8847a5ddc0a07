//! The fault-injection harness: for each provider, its identity fakes and a secret
//! endpoint that answers from a script of [`Response`]s (faults included), so one table of
//! cases in `tests/faults.rs` drives every provider's real client through the real binary.
//!
//! Only the secret read is scripted; identity is served by the provider's normal fakes, so
//! a fault lands where it would hurt in production, after authentication:
//! - AWS: `GetSecretValue` on a plain-HTTP loopback server (`AWS_ENDPOINT_URL`), static keys;
//! - Azure: the vault's `GET /secrets/db` over HTTPS (test CA, `--ca-file`); a request
//!   without Entra's token gets the real 401 challenge, and only authorized requests take
//!   from the script;
//! - Google: `versions/latest:access` over loopback HTTP (`--gcp-endpoint`), the token from
//!   the metadata fake (`GCE_METADATA_HOST`);
//! - Parameter Store: `GetParameter` on a plain-HTTP loopback server, as for AWS.
//!
//! A new provider plugs in with a [`Provider`] variant, its answers in the documented shape,
//! and its wiring in [`Endpoint::start`].

use std::ffi::OsString;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(feature = "azure")]
use super::azure::{CLIENT_ID, Entra, RESOURCE, TENANT, kv_error, projected_token};
#[cfg(feature = "gcp")]
use super::gcp::{Metadata, PROJECT_NUMBER, answer, crc32c, google_error};
use super::http::{Fault, Request, Response, Server};
use super::tls::{BadCertificate, HttpsServer, ca};
use super::{SENTINEL, Scratch, Sidecar};

/// The file every case publishes to.
pub const FILE: &str = "db";

/// A provider the binary was built with: each variant exists with its cargo feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    #[cfg(feature = "aws")]
    Aws,
    #[cfg(feature = "azure")]
    Azure,
    #[cfg(feature = "gcp")]
    Gcp,
    /// Parameter Store: the AWS JSON protocol, `GetParameter` for one parameter.
    #[cfg(feature = "aws")]
    Ssm,
}

#[cfg(feature = "gcp")]
const GCP_TOKEN: &str = "ya29.c.fault-suite-metadata-token-0b7e";
#[cfg(feature = "gcp")]
const GCP_SECRET: &str = "projects/my-project/secrets/db";

impl Provider {
    /// The secret's successful answer, holding [`SENTINEL`].
    pub fn ok(self) -> Response {
        self.ok_with(SENTINEL)
    }

    /// The successful answer for `value`, in the provider's documented shape.
    pub fn ok_with(self, value: &str) -> Response {
        match self {
            #[cfg(feature = "aws")]
            Provider::Aws => Response::json(
                200,
                serde_json::json!({"Name": "db", "VersionId": "v1", "SecretString": value})
                    .to_string(),
            ),
            #[cfg(feature = "azure")]
            Provider::Azure => azure_json(
                200,
                serde_json::json!({
                    "value": value,
                    "id": "https://127.0.0.1/secrets/db/6a1f0c2e9b8d4f7a8c3e5d1b2a4f6e8c",
                    "attributes": {"enabled": true, "recoveryLevel": "Recoverable+Purgeable"},
                })
                .to_string(),
            ),
            #[cfg(feature = "gcp")]
            Provider::Gcp => answer(
                200,
                "application/json; charset=UTF-8",
                serde_json::json!({
                    "name": format!("projects/{PROJECT_NUMBER}/secrets/db/versions/1"),
                    "payload": {
                        "data": super::base64(value.as_bytes()),
                        "dataCrc32c": crc32c(value.as_bytes()).to_string(),
                    },
                })
                .to_string(),
            ),
            #[cfg(feature = "aws")]
            Provider::Ssm => Response::json(
                200,
                serde_json::json!({"Parameter": {
                    "ARN": "arn:aws:ssm:us-east-1:000000000000:parameter/db",
                    "DataType": "text",
                    "Name": "/db",
                    "Type": "SecureString",
                    "Value": value,
                    "Version": 1,
                }})
                .to_string(),
            ),
        }
    }

    /// A 5xx in the provider's error shape (500 internal, 503 unavailable, ...).
    pub fn server_error(self, status: u16) -> Response {
        let code = |unavailable, internal| match status {
            503 => unavailable,
            _ => internal,
        };
        match self {
            #[cfg(feature = "aws")]
            Provider::Aws => Response::json(
                status,
                format!(
                    r#"{{"__type":"{}","Message":"injected fault"}}"#,
                    code("ServiceUnavailable", "InternalServiceError")
                ),
            ),
            #[cfg(feature = "azure")]
            Provider::Azure => kv_error(
                status,
                code("ServiceUnavailable", "InternalServerError"),
                "injected fault",
                None,
            ),
            #[cfg(feature = "gcp")]
            Provider::Gcp => google_error(
                status,
                code("UNAVAILABLE", "INTERNAL"),
                "injected fault",
                "[]",
            ),
            #[cfg(feature = "aws")]
            Provider::Ssm => Response::json(
                status,
                format!(
                    r#"{{"__type":"{}","message":"injected fault"}}"#,
                    code("ServiceUnavailable", "InternalServerError")
                ),
            ),
        }
    }

    /// Throttled, asking for a retry after `seconds`, the way the provider asks.
    pub fn throttled(self, seconds: u64) -> Response {
        match self {
            #[cfg(feature = "aws")]
            Provider::Aws | Provider::Ssm => Response::json(
                429,
                r#"{"__type":"ThrottlingException","Message":"Rate exceeded"}"#,
            )
            .header("retry-after", seconds.to_string()),
            #[cfg(feature = "azure")]
            Provider::Azure => kv_error(
                429,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
                None,
            )
            .header("retry-after", seconds.to_string()),
            // Google says it in a google.rpc.RetryInfo detail, not a header.
            #[cfg(feature = "gcp")]
            Provider::Gcp => google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Access requests'.",
                &format!(
                    r#"[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{seconds}s"}}]"#
                ),
            ),
        }
    }

    /// A 200 whose body is not the provider's answer at all, as a captive portal or a
    /// misrouted proxy sends.
    pub fn html(self, status: u16) -> Response {
        let mut response = Response::json(status, "<html><body>Proxy error</body></html>");
        response.headers = vec![("content-type", "text/html".to_owned())];
        response
    }

    /// A 200 in the provider's content type that holds [`SENTINEL`] but does not parse as
    /// its answer: a field of the wrong type, and (AWS) cut short. A client that printed
    /// its parse error with the raw body would leak the value.
    pub fn malformed(self) -> Response {
        match self {
            #[cfg(feature = "aws")]
            Provider::Aws => Response::json(
                200,
                format!(r#"{{"Name":"db","VersionId":7,"SecretString":"{SENTINEL}""#),
            ),
            #[cfg(feature = "azure")]
            Provider::Azure => azure_json(
                200,
                format!(r#"{{"value":"{SENTINEL}","id":7,"attributes":"enabled"}}"#),
            ),
            // `data` must be base64 and `dataCrc32c` a decimal int64 string.
            #[cfg(feature = "gcp")]
            Provider::Gcp => answer(
                200,
                "application/json",
                format!(
                    r#"{{"name":"projects/1/secrets/db/versions/1","payload":{{"data":"{SENTINEL}!","dataCrc32c":"{SENTINEL}"}}}}"#
                ),
            ),
            #[cfg(feature = "aws")]
            Provider::Ssm => Response::json(
                200,
                format!(r#"{{"Parameter":{{"Name":"/db","Version":"seven","Value":"{SENTINEL}""#),
            ),
        }
    }

    /// The start of a successful answer, inside the secret's value, that never ends: an
    /// endpoint streaming without limit (see [`Fault::Endless`]).
    pub fn endless(self) -> Response {
        let mut response = self.ok_with("");
        let cut = match self {
            #[cfg(feature = "aws")]
            Provider::Aws => r#""SecretString":""#,
            #[cfg(feature = "azure")]
            Provider::Azure => r#""value":""#,
            #[cfg(feature = "gcp")]
            Provider::Gcp => r#""data":""#,
            #[cfg(feature = "aws")]
            Provider::Ssm => r#""Value":""#,
        };
        let end = response.body.find(cut).expect("the answer has the value") + cut.len();
        response.body.truncate(end);
        response.fault(Fault::Endless)
    }

    /// The successful answer cut off before its end, with a matching Content-Length.
    pub fn truncated(self) -> Response {
        let mut response = self.ok();
        response.body.pop();
        response
    }
}

#[cfg(feature = "azure")]
fn azure_json(status: u16, body: String) -> Response {
    let mut response = Response::json(status, body);
    response.headers = vec![
        ("content-type", "application/json; charset=utf-8".to_owned()),
        ("x-ms-keyvault-service-version", "1.9.2757.1".to_owned()),
    ];
    response
}

/// The answers the secret endpoint gives, in order; the last repeats.
struct Script {
    responses: Vec<Response>,
    served: AtomicUsize,
}

impl Script {
    fn next(&self) -> Response {
        let index = self.served.fetch_add(1, Ordering::SeqCst);
        self.responses[index.min(self.responses.len() - 1)].clone()
    }
}

/// Where the secret read goes.
enum Secrets {
    Plain(Server),
    Tls(HttpsServer),
    /// A port nothing listens on, and the scheme the client would speak to it.
    Refused(u16, &'static str),
}

impl Secrets {
    fn url(&self) -> String {
        match self {
            Secrets::Plain(server) => server.url.clone(),
            Secrets::Tls(server) => server.url.clone(),
            Secrets::Refused(port, scheme) => format!("{scheme}://127.0.0.1:{port}"),
        }
    }

    fn serve(
        https: Option<BadCertificate>,
        tls: bool,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Secrets {
        match (https, tls) {
            (Some(bad), _) => Secrets::Tls(HttpsServer::with_bad_certificate(bad, handler)),
            (None, true) => Secrets::Tls(HttpsServer::with_handler(handler)),
            (None, false) => Secrets::Plain(Server::with_handler(handler)),
        }
    }
}

/// One provider's fakes, with its secret endpoint following a script.
pub struct Endpoint {
    pub provider: Provider,
    script: Arc<Script>,
    secrets: Secrets,
    env: Vec<(&'static str, OsString)>,
    args: Vec<OsString>,
    /// Credentials the fakes issue or accept; they must never be printed.
    pub tokens: Vec<String>,
    _identity: Identity,
}

/// The identity fakes, held only to keep them serving until the endpoint is dropped.
enum Identity {
    #[cfg(feature = "aws")]
    StaticKeys,
    #[cfg(feature = "azure")]
    Azure { _entra: Entra, _token_dir: Scratch },
    #[cfg(feature = "gcp")]
    Gcp { _metadata: Metadata },
}

impl Endpoint {
    /// The provider's fakes; the secret endpoint answers from `script`.
    pub fn start(provider: Provider, script: Vec<Response>) -> Endpoint {
        Endpoint::build(provider, script, None, false)
    }

    /// The secret endpoint presents `certificate`, which the client must refuse even
    /// though it trusts the test CA.
    pub fn with_bad_certificate(provider: Provider, certificate: BadCertificate) -> Endpoint {
        Endpoint::build(provider, vec![provider.ok()], Some(certificate), false)
    }

    /// The secret endpoint's port refuses connections.
    pub fn refusing(provider: Provider) -> Endpoint {
        Endpoint::build(provider, vec![provider.ok()], None, true)
    }

    fn build(
        provider: Provider,
        script: Vec<Response>,
        certificate: Option<BadCertificate>,
        refused: bool,
    ) -> Endpoint {
        let script = Arc::new(Script {
            responses: script,
            served: AtomicUsize::new(0),
        });
        let take = Arc::clone(&script);
        let ca_file = || OsString::from(&ca().pem_file);
        let (secrets, identity, env, args, tokens): (_, _, Vec<(&str, OsString)>, _, _) =
            match provider {
                #[cfg(feature = "aws")]
                Provider::Aws | Provider::Ssm => {
                    let secrets = Secrets::serve(certificate, false, move |_| take.next());
                    let args = match certificate {
                        Some(_) => vec!["--ca-file".into(), ca_file()],
                        None => Vec::new(),
                    };
                    (secrets, Identity::StaticKeys, Vec::new(), args, Vec::new())
                }
                #[cfg(feature = "azure")]
                Provider::Azure => {
                    let token = projected_token();
                    let dir = Scratch::disk("fault-azure-token");
                    let token_file = dir.path.join("token");
                    std::fs::write(&token_file, &token).unwrap();
                    let entra = Entra::start(&token);
                    let bearer = format!("Bearer {}", entra.access_token);
                    let challenge = format!(
                        r#"Bearer authorization="{}/{TENANT}", resource="{RESOURCE}""#,
                        entra.server.url
                    );
                    let secrets = Secrets::serve(certificate, true, move |request| {
                        match request.header("authorization") == Some(bearer.as_str()) {
                            true => take.next(),
                            false => kv_error(
                                401,
                                "Unauthorized",
                                "AKV10000: Request is missing a Bearer or PoP token.",
                                None,
                            )
                            .header("www-authenticate", challenge.clone()),
                        }
                    });
                    let env = vec![
                        ("AZURE_CLIENT_ID", CLIENT_ID.into()),
                        ("AZURE_TENANT_ID", TENANT.into()),
                        ("AZURE_FEDERATED_TOKEN_FILE", token_file.into()),
                        ("AZURE_AUTHORITY_HOST", entra.authority_host().into()),
                    ];
                    let args = vec![
                        "--azure-skip-challenge-resource-check".into(),
                        "--ca-file".into(),
                        ca_file(),
                    ];
                    let tokens = vec![token, entra.access_token.clone()];
                    let identity = Identity::Azure {
                        _entra: entra,
                        _token_dir: dir,
                    };
                    (secrets, identity, env, args, tokens)
                }
                #[cfg(feature = "gcp")]
                Provider::Gcp => {
                    let metadata =
                        Metadata::start(GCP_TOKEN, "app@my-project.iam.gserviceaccount.com");
                    let bearer = format!("Bearer {GCP_TOKEN}");
                    // A request without the token (the client's connection warm-up) is
                    // refused as Secret Manager refuses it, and is not a read.
                    let secrets = Secrets::serve(certificate, false, move |request| {
                        match request.header("authorization") == Some(bearer.as_str()) {
                            true => take.next(),
                            false => google_error(
                                401,
                                "UNAUTHENTICATED",
                                "Request is missing required authentication credential.",
                                "[]",
                            ),
                        }
                    });
                    let mut env = vec![
                        ("HOME", "/nonexistent/home".into()),
                        ("GCE_METADATA_HOST", metadata.host().into()),
                    ];
                    if certificate.is_some() {
                        // The Google clients take no --ca-file; SSL_CERT_FILE replaces the roots.
                        env.push(("SSL_CERT_FILE", ca_file()));
                    }
                    let identity = Identity::Gcp {
                        _metadata: metadata,
                    };
                    (
                        secrets,
                        identity,
                        env,
                        Vec::new(),
                        vec![GCP_TOKEN.to_owned()],
                    )
                }
            };
        let secrets = match refused {
            true => Secrets::Refused(
                closed_port(),
                match provider {
                    #[cfg(feature = "aws")]
                    Provider::Aws | Provider::Ssm => "http",
                    #[cfg(feature = "azure")]
                    Provider::Azure => "https",
                    #[cfg(feature = "gcp")]
                    Provider::Gcp => "http",
                },
            ),
            false => secrets,
        };
        Endpoint {
            provider,
            script,
            secrets,
            env,
            args,
            tokens,
            _identity: identity,
        }
    }

    /// `sidecar` (the binary, from [`crate::sidecar!`]) publishing the secret as [`FILE`]
    /// into `out`, set up as [`Endpoint::configure`] does.
    pub fn aim(&self, sidecar: Sidecar, out: &Scratch) -> Sidecar {
        self.configure(sidecar)
            .arg("--output-dir")
            .arg(&out.path)
            .arg("--secret")
            .arg(format!("{FILE}={}", self.reference()))
    }

    /// `sidecar` with this provider's identity and endpoint, logging at trace level so
    /// that leak checks see everything.
    pub fn configure(&self, sidecar: Sidecar) -> Sidecar {
        let mut sidecar = sidecar.env("RUST_LOG", "trace");
        for (name, value) in &self.env {
            sidecar = sidecar.env(name, value);
        }
        let sidecar = match self.provider {
            #[cfg(feature = "aws")]
            Provider::Aws | Provider::Ssm => sidecar.env("AWS_ENDPOINT_URL", self.secrets.url()),
            // The vault's URL is in the reference.
            #[cfg(feature = "azure")]
            Provider::Azure => sidecar,
            #[cfg(feature = "gcp")]
            Provider::Gcp => sidecar.args(["--gcp-endpoint", &self.secrets.url()]),
        };
        sidecar.args(&self.args)
    }

    /// The reference to the scripted secret.
    pub fn reference(&self) -> String {
        match self.provider {
            #[cfg(feature = "aws")]
            Provider::Aws => "aws://db".to_owned(),
            #[cfg(feature = "azure")]
            Provider::Azure => format!("azure://{}/secrets/db", self.secrets.url()),
            #[cfg(feature = "gcp")]
            Provider::Gcp => format!("gcp://{GCP_SECRET}"),
            #[cfg(feature = "aws")]
            Provider::Ssm => "ssm:///db".to_owned(),
        }
    }

    /// Secret reads that reached the script (Azure's unauthenticated challenge round trip
    /// and Google's unauthenticated connection warm-up not counted).
    pub fn attempts(&self) -> usize {
        self.script.served.load(Ordering::SeqCst)
    }

    /// Requests the secret endpoint received, challenges included.
    pub fn requests(&self) -> usize {
        match &self.secrets {
            Secrets::Plain(server) => server.requests().len(),
            Secrets::Tls(server) => server.requests().len(),
            Secrets::Refused(..) => 0,
        }
    }

    /// TCP connections the secret endpoint accepted (HTTPS endpoints only).
    pub fn connections(&self) -> Option<usize> {
        match &self.secrets {
            Secrets::Tls(server) => Some(server.connections()),
            _ => None,
        }
    }
}

/// A loopback port that was just free and has no listener.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
