//! An OAuth2 token endpoint for the client-credentials grant (RFC 6749 §4.4), the way an
//! external identity provider (Entra ID, Okta, Keycloak) answers one: a form POST, the
//! client authenticated by HTTP Basic (id and secret form-encoded first, §2.3.1) or by the
//! body, never both; §5.2 JSON errors (`invalid_client` with 401 and a `WWW-Authenticate`
//! challenge for Basic, `invalid_scope`, `unsupported_grant_type`, `invalid_request`);
//! each token a JWT with its own `jti` and an `exp` `lifetime` seconds ahead. A [`Quirk`]
//! makes it misbehave the ways the hardening tests need.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::http::{Fault, Request, Response, Server, form};

pub struct IdP {
    pub server: Server,
    client: Client,
    issued: Arc<Mutex<Vec<String>>>,
    /// While non-zero, every request fails with 503 (an IdP outage).
    outage: Arc<AtomicU32>,
    flaky: Arc<Flaky>,
    quirk: Arc<Mutex<Quirk>>,
}

/// Failures mixed into normal service: every `every`-th request fails, in turn with a 503,
/// a 500 that is an HTML page, and a connection closed without an answer.
#[derive(Default)]
struct Flaky {
    every: AtomicU32,
    requests: AtomicU32,
    failed_at: Mutex<Vec<Instant>>,
}

impl Flaky {
    fn fault(&self) -> Option<Response> {
        let every = self.every.load(Ordering::SeqCst);
        let number = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if every == 0 || !number.is_multiple_of(every) {
            return None;
        }
        self.failed_at.lock().unwrap().push(Instant::now());
        Some(match number / every % 3 {
            0 => error(503, "temporarily_unavailable", "The service is down."),
            1 => {
                let mut page = Response::json(500, "<html><body>Internal error</body></html>");
                page.headers = vec![("content-type", "text/html".to_owned())];
                page
            }
            _ => Response::json(200, "").fault(Fault::Close),
        })
    }
}

/// How the endpoint misbehaves.
#[derive(Clone, Copy, Default)]
pub enum Quirk {
    #[default]
    None,
    /// A request it accepts gets a 200 that holds the token but is cut short before the
    /// JSON object ends, as a proxy that truncates would pass it on.
    Malformed,
    /// A request it accepts gets a valid answer whose `expires_in` is this JSON text
    /// (`18446744073709551615`, say; the JWT keeps the client's lifetime).
    ExpiresIn(&'static str),
    /// Every request is refused (`invalid_client`, 401) with an `error_description` that
    /// quotes the client's credentials as the request carried them, after `offset`
    /// characters of other text: the Basic credentials (base64 of the form-encoded
    /// `id:secret`) or the form-encoded `client_secret` field.
    Echo { offset: usize },
}

/// What the endpoint expects of the client.
#[derive(Clone)]
pub struct Client {
    pub id: String,
    pub secret: String,
    /// The scope the client may ask for; any other is `invalid_scope`.
    pub scope: Option<String>,
    /// Token lifetime in seconds, as `expires_in` and the JWT's `exp`.
    pub lifetime: u64,
}

impl IdP {
    pub fn start(client: Client) -> IdP {
        let expected = client.clone();
        let issued = Arc::new(Mutex::new(Vec::new()));
        let outage = Arc::new(AtomicU32::new(0));
        let flaky = Arc::new(Flaky::default());
        let quirk = Arc::new(Mutex::new(Quirk::None));
        let (log, down) = (Arc::clone(&issued), Arc::clone(&outage));
        let (faults, odd) = (Arc::clone(&flaky), Arc::clone(&quirk));
        let server = Server::with_handler(move |request| {
            if down.load(Ordering::SeqCst) > 0 {
                return error(503, "temporarily_unavailable", "The service is down.");
            }
            if let Some(failure) = faults.fault() {
                return failure;
            }
            let response = answer(request, &expected, *odd.lock().unwrap());
            if let Ok(token) = response.1 {
                log.lock().unwrap().push(token);
            }
            response.0
        });
        IdP {
            server,
            client,
            issued,
            outage,
            flaky,
            quirk,
        }
    }

    /// Misbehaves as `quirk` says from now on.
    pub fn set_quirk(&self, quirk: Quirk) {
        *self.quirk.lock().unwrap() = quirk;
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth2/v2.0/token", self.server.url)
    }

    /// The `--oauth2-*` options of a client of this endpoint whose secret is in
    /// `secret_file` (the scope too, if the client has one).
    pub fn client_args(&self, secret_file: &Path) -> Vec<String> {
        let mut args = vec![
            "--oauth2-token-url".into(),
            self.token_url(),
            "--oauth2-client-id".into(),
            self.client.id.clone(),
            "--oauth2-client-secret-file".into(),
            secret_file.display().to_string(),
        ];
        if let Some(scope) = &self.client.scope {
            args.extend(["--oauth2-scope".into(), scope.clone()]);
        }
        args
    }

    /// Every access token issued, in order.
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    /// Fails every `n`-th request from now on (0: none), in turn with a 503, an HTML 500
    /// and a dropped connection.
    pub fn fail_every(&self, n: u32) {
        self.flaky.every.store(n, Ordering::SeqCst);
    }

    /// When each failure [`IdP::fail_every`] asked for was served.
    pub fn failed_at(&self) -> Vec<Instant> {
        self.flaky.failed_at.lock().unwrap().clone()
    }

    /// Starts or ends an outage (every request answered 503).
    pub fn set_down(&self, down: bool) {
        self.outage.store(u32::from(down), Ordering::SeqCst);
    }
}

/// The response, and the token when one was issued.
fn answer(request: &Request, client: &Client, quirk: Quirk) -> (Response, Result<String, ()>) {
    let fail = |status, code, text| (error(status, code, text), Err(()));
    if let Quirk::Echo { offset } = quirk {
        let basic = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Basic "));
        let body = String::from_utf8_lossy(&request.body);
        let field = body
            .split('&')
            .find_map(|pair| pair.strip_prefix("client_secret="));
        let echoed = basic.or(field).unwrap_or_default();
        return fail(
            401,
            "invalid_client",
            &format!("{}{echoed} is not a known client", "x".repeat(offset)),
        );
    }
    if request.method() != "POST" || !request.target().ends_with("/oauth2/v2.0/token") {
        return fail(404, "invalid_request", "No such endpoint.");
    }
    if !request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    {
        return fail(400, "invalid_request", "The request body must be a form.");
    }
    let fields = form(&request.body);
    let basic = request
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(decode_basic);
    let in_body = fields
        .get("client_id")
        .cloned()
        .zip(fields.get("client_secret").cloned());
    let (id, secret) = match (basic, in_body) {
        (Some(_), Some(_)) => {
            return fail(
                400,
                "invalid_request",
                "More than one client authentication method.",
            );
        }
        (Some(pair), None) | (None, Some(pair)) => pair,
        (None, None) => {
            return fail(401, "invalid_client", "Client authentication failed.");
        }
    };
    if id != client.id || secret != client.secret {
        return fail(401, "invalid_client", "Client authentication failed.");
    }
    if fields.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return fail(
            400,
            "unsupported_grant_type",
            "The grant type is not supported.",
        );
    }
    if let Some(expected) = &client.scope
        && fields.get("scope") != Some(expected)
    {
        return fail(400, "invalid_scope", "The requested scope is invalid.");
    }
    let token = jwt(&client.id, client.lifetime);
    let expires_in = match quirk {
        Quirk::ExpiresIn(text) => text.to_owned(),
        _ => client.lifetime.to_string(),
    };
    let mut body =
        format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#);
    if let Quirk::Malformed = quirk {
        body.pop();
    }
    (
        json(200, body).header("cache-control", "no-store"),
        Ok(token),
    )
}

/// `base64(urlencode(id):urlencode(secret))`, decoded.
fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let bytes = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (id, secret) = text.split_once(':')?;
    let mut decoded = form(format!("id={id}&secret={secret}").as_bytes());
    Some((decoded.remove("id")?, decoded.remove("secret")?))
}

fn jwt(subject: &str, lifetime: u64) -> String {
    static SERIAL: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // `exp` is whole seconds: rounded up, a token lasts at least `lifetime`, as
    // `expires_in` promises (rounded down it could lapse up to a second early).
    let exp = match lifetime {
        0 => now,
        _ => now + lifetime + 1,
    };
    let part = |json: String| URL_SAFE_NO_PAD.encode(json);
    format!(
        "{}.{}.{}",
        part(r#"{"alg":"RS256","typ":"JWT","kid":"idp-test"}"#.to_owned()),
        part(format!(
            r#"{{"iss":"https://idp.example.test","sub":"{subject}","aud":"api://secret-sidecar-aws","iat":{now},"exp":{},"jti":"{}-{}"}}"#,
            exp,
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::SeqCst)
        )),
        part("signature".to_owned())
    )
}

fn error(status: u16, code: &str, description: &str) -> Response {
    let body = serde_json::json!({"error": code, "error_description": description});
    let response = json(status, body.to_string());
    match status {
        401 => response.header("www-authenticate", "Basic realm=\"idp.example.test\""),
        _ => response,
    }
}

fn json(status: u16, body: String) -> Response {
    let mut response = Response::json(status, body);
    response.headers = vec![("content-type", "application/json".to_owned())];
    response
}
