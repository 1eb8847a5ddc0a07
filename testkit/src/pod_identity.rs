//! The EKS Pod Identity Agent, as a pod sees it: `GET /v1/credentials` on
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI`, the projected token from
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` in the `Authorization` header.
//!
//! It answers the way aws/eks-pod-identity-agent does (`pkg/handlers`, `pkg/errors`):
//! credentials as JSON (`AccessKeyId`, `SecretAccessKey`, `Token`, `AccountId`,
//! `Expiration`); a missing or unparseable token is a `400 text/plain` from the agent's own
//! validation; a token EKS Auth refuses comes back with EKS Auth's status and
//! `[request-id]: (InvalidTokenException): …, fault: client`; an EKS Auth outage is a 500.
//! A test scripts what a request carrying the right token gets, faults included.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Scratch;
use super::http::{Request, Response, Server};

/// The credentials it hands out; they must never be printed.
pub const ACCESS_KEY_ID: &str = "ASIAPODIDENTITYAGENT1";
pub const SECRET_ACCESS_KEY: &str = "pod-identity-secret-access-key-never-log-me";
pub const SESSION_TOKEN: &str = "pod-identity-session-token-never-log-me";

pub struct Agent {
    pub server: Server,
    /// The projected token the agent accepts, and the file holding it.
    pub token: String,
    pub token_file: std::path::PathBuf,
    served: Arc<AtomicUsize>,
    _dir: Scratch,
}

impl Agent {
    /// An agent that accepts the token it writes to its token file and answers requests
    /// carrying it from `script` (the last answer repeats); other requests are refused.
    pub fn start(script: Vec<Response>) -> Agent {
        let dir = Scratch::tmpfs("pod-identity-token");
        let token = super::fake_jwt("system:serviceaccount:default:app");
        let token_file = dir.path.join("eks-pod-identity-token");
        std::fs::write(&token_file, &token).unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let (expected, count) = (token.clone(), Arc::clone(&served));
        let server = Server::with_handler(move |request| {
            if let Some(refused) = validate(request, &expected) {
                return refused;
            }
            let index = count.fetch_add(1, Ordering::SeqCst);
            script[index.min(script.len() - 1)].clone()
        });
        Agent {
            server,
            token,
            token_file,
            served,
            _dir: dir,
        }
    }

    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`, as the Pod Identity webhook sets it (with a
    /// loopback address for the agent's link-local one).
    pub fn full_uri(&self) -> String {
        format!("{}/v1/credentials", self.server.url)
    }

    /// Every request received, refused ones included.
    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    /// Requests that carried the right token and took an answer from the script.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// The agent's answer with credentials.
    pub fn credentials() -> Response {
        Agent::credentials_expiring("2099-01-01T00:00:00Z")
    }

    /// The agent's answer with credentials that expire at `expiration` (as the agent
    /// writes it, or anything else, for a client to fail to read).
    pub fn credentials_expiring(expiration: &str) -> Response {
        plain_json(
            200,
            serde_json::json!({
                "AccessKeyId": ACCESS_KEY_ID,
                "SecretAccessKey": SECRET_ACCESS_KEY,
                "Token": SESSION_TOKEN,
                "AccountId": "111122223333",
                "Expiration": expiration,
            })
            .to_string(),
        )
    }

    /// EKS Auth failing (`InternalServerException`), passed through with its status.
    pub fn eks_auth_error(status: u16) -> Response {
        text(
            status,
            "[0f9e5d1c-2b7a-4c3e-9d1f-6a8b2c4e7f10]: (InternalServerException): \
             An internal error occurred, fault: server",
        )
    }
}

/// What the agent and EKS Auth say about a request's token before any credentials are
/// looked up: nothing for the expected token.
fn validate(request: &Request, expected: &str) -> Option<Response> {
    let token = request.header("authorization").unwrap_or_default();
    if request.target() != "/v1/credentials" {
        return Some(text(404, "404 page not found"));
    }
    if token.is_empty() {
        return Some(text(400, "Service account token cannot be empty"));
    }
    if token.split('.').count() != 3 {
        return Some(text(
            400,
            "Service account token cannot be parsed: token is malformed: token contains an \
             invalid number of segments",
        ));
    }
    (token != expected).then(|| {
        text(
            400,
            "[7c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f]: (InvalidTokenException): \
             Failed to validate token, fault: client",
        )
    })
}

/// `http.Error`'s answer: text/plain, the message and a newline.
fn text(status: u16, message: &str) -> Response {
    let mut response = Response::json(status, format!("{message}\n"));
    response.headers = vec![
        ("content-type", "text/plain; charset=utf-8".to_owned()),
        ("x-content-type-options", "nosniff".to_owned()),
    ];
    response
}

fn plain_json(status: u16, body: String) -> Response {
    let mut response = Response::json(status, body);
    response.headers = vec![("content-type", "application/json".to_owned())];
    response
}
