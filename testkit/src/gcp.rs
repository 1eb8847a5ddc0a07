//! Google protocol fakes on loopback, for the GCP provider's tests: the metadata server,
//! STS token exchange (workload identity federation), IAM Credentials
//! `generateAccessToken` (impersonation) and Secret Manager REST. Each checks what the
//! official clients send the way the real service does (headers, grant parameters, bearer
//! tokens, resource names) and answers with the documented bodies and error JSON, and each
//! keeps a request log for the tests to assert on.
//!
//! No Secret Manager emulator exists that could run here; these speak the published REST
//! protocol (cloud.google.com/secret-manager/docs/reference/rest, /compute/docs/metadata,
//! /iam/docs/reference/sts/rest, /iam/docs/reference/credentials/rest).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::{Request, Response, Server, form};

/// The project number the fakes put in resource names they return, as the service does.
pub const PROJECT_NUMBER: &str = "123456789012";

pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const IAM_SCOPE: &str = "https://www.googleapis.com/auth/iam";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A response with one content type (built through the shared constructor, so new
/// fields of `Response` keep their defaults).
pub fn answer(status: u16, content_type: &str, body: impl Into<String>) -> Response {
    let mut response = Response::json(status, body);
    response.headers = vec![("content-type", content_type.to_owned())];
    response
}

fn json(status: u16, body: impl Into<String>) -> Response {
    answer(status, "application/json; charset=UTF-8", body)
}

/// Google's error JSON, as every googleapis.com REST service sends it.
pub fn google_error(code: u16, status: &str, message: &str, details: &str) -> Response {
    let body = serde_json::json!({
        "error": {
            "code": code,
            "message": message,
            "status": status,
            "details": serde_json::from_str::<serde_json::Value>(details).unwrap(),
        }
    });
    json(code, body.to_string())
}

/// The GCE/GKE metadata server (`GCE_METADATA_HOST`): the default service account's
/// token, email and identity token, the project ID and the universe domain. Like the real
/// one it refuses any request without `Metadata-Flavor: Google` (403) and marks every
/// answer with that header.
pub struct Metadata {
    pub server: Server,
    pub token: String,
    pub email: String,
}

impl Metadata {
    pub fn start(token: &str, email: &str) -> Metadata {
        Metadata::answering(token, email, Vec::new())
    }

    /// Like [`Metadata::start`], except that a request (with the flavor header) for a path
    /// ending in one of `overrides`' suffixes gets that answer: a malformed token
    /// (`"/token"` and [`token_answer`]), a redirect of `"/email"`.
    pub fn answering(
        token: &str,
        email: &str,
        overrides: Vec<(&'static str, Response)>,
    ) -> Metadata {
        Metadata::build(token, email, overrides, Duration::ZERO)
    }

    /// Like [`Metadata::start`], each answer sent only `delay` after its request arrived,
    /// as from a metadata server a network away.
    pub fn answering_after(token: &str, email: &str, delay: Duration) -> Metadata {
        Metadata::build(token, email, Vec::new(), delay)
    }

    fn build(
        token: &str,
        email: &str,
        overrides: Vec<(&'static str, Response)>,
        delay: Duration,
    ) -> Metadata {
        let (access_token, account) = (token.to_owned(), email.to_owned());
        let (server, _) = Server::answering_after(delay, move |request| {
            let path = split_query(request.target()).0;
            let fixed = overrides
                .iter()
                .find(|(suffix, _)| path.ends_with(suffix))
                .filter(|_| request.header("metadata-flavor") == Some("Google"));
            let mut response = match fixed {
                Some((_, answer)) => answer.clone(),
                None => metadata_answer(request, &access_token, &account),
            };
            response
                .headers
                .push(("metadata-flavor", "Google".to_owned()));
            response
        });
        Metadata {
            server,
            token: token.to_owned(),
            email: email.to_owned(),
        }
    }

    /// `HOST:PORT`, the form `GCE_METADATA_HOST` takes.
    pub fn host(&self) -> String {
        self.server.url.trim_start_matches("http://").to_owned()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }
}

/// A token answer as the metadata server and STS give it, with `expires_in` as this JSON
/// text: `"\"soon\""` makes it one the client cannot read, `18446744073709551615` one too
/// long for any clock.
pub fn token_answer(token: &str, expires_in: &str) -> Response {
    json(
        200,
        format!(
            r#"{{"access_token":"{token}","expires_in":{expires_in},"token_type":"Bearer","issued_token_type":"{ACCESS_TOKEN_TYPE}"}}"#
        ),
    )
}

fn text(status: u16, body: &str) -> Response {
    answer(status, "application/text", body)
}

fn metadata_answer(request: &Request, token: &str, email: &str) -> Response {
    if request.header("metadata-flavor") != Some("Google") {
        return text(403, "Missing required header: \"Metadata-Flavor\"");
    }
    if request.header("x-forwarded-for").is_some() {
        return text(403, "Request had X-Forwarded-For header");
    }
    if request.method() != "GET" {
        return text(405, "Method Not Allowed");
    }
    let (path, query) = split_query(request.target());
    const SA: &str = "/computeMetadata/v1/instance/service-accounts/default";
    match path.as_str() {
        p if p == format!("{SA}/token") => json(
            200,
            serde_json::json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})
                .to_string(),
        ),
        p if p == format!("{SA}/email") => text(200, email),
        p if p == format!("{SA}/identity") => match query.get("audience") {
            Some(audience) if !audience.is_empty() => {
                text(200, &super::fake_jwt(&format!("{email}|{audience}")))
            }
            _ => text(400, "non-empty audience parameter required"),
        },
        p if p == format!("{SA}/scopes") => text(200, CLOUD_PLATFORM),
        "/computeMetadata/v1/project/project-id" => text(200, "my-project"),
        "/computeMetadata/v1/project/numeric-project-id" => text(200, PROJECT_NUMBER),
        "/computeMetadata/v1/universe/universe-domain" => text(200, "googleapis.com"),
        _ => text(404, "Not Found"),
    }
}

/// Google STS `POST /v1/token` (RFC 8693 token exchange) for one workload identity pool
/// provider: it accepts exactly `subject_token` for `audience` and issues `access_token`.
pub struct Sts {
    pub server: Server,
    pub access_token: String,
}

impl Sts {
    pub fn start(audience: &str, subject_token: &str, access_token: &str) -> Sts {
        Sts::answering_after(audience, subject_token, access_token, Duration::ZERO)
    }

    /// Like [`Sts::start`], each answer sent only `delay` after its request arrived, for
    /// tests of what the client does while the exchange is in flight.
    pub fn answering_after(
        audience: &str,
        subject_token: &str,
        access_token: &str,
        delay: Duration,
    ) -> Sts {
        let subject = subject_token.to_owned();
        let accept = move |presented: &str| presented == subject;
        Sts::build(audience, accept, access_token, None, delay)
    }

    /// Accepts the subject tokens `accept` says yes to (a projected token that rotates).
    pub fn accepting(
        audience: &str,
        accept: impl Fn(&str) -> bool + Send + Sync + 'static,
        access_token: &str,
    ) -> Sts {
        Sts::build(audience, accept, access_token, None, Duration::ZERO)
    }

    /// Checks each exchange as [`Sts::start`] does, and answers one it accepts with
    /// `answer` ([`token_answer`] with a bad `expires_in`, say).
    pub fn answering(audience: &str, subject_token: &str, answer: Response) -> Sts {
        let subject = subject_token.to_owned();
        Sts::build(
            audience,
            move |presented| presented == subject,
            "",
            Some(answer),
            Duration::ZERO,
        )
    }

    fn build(
        audience: &str,
        accept: impl Fn(&str) -> bool + Send + Sync + 'static,
        access_token: &str,
        fixed: Option<Response>,
        delay: Duration,
    ) -> Sts {
        let (audience, issued) = (audience.to_owned(), access_token.to_owned());
        let (server, _) = Server::answering_after(delay, move |request| {
            match (sts_answer(request, &audience, &accept, &issued), &fixed) {
                (answer, Some(fixed)) if answer.status == 200 => fixed.clone(),
                (answer, _) => answer,
            }
        });
        Sts {
            server,
            access_token: access_token.to_owned(),
        }
    }

    pub fn token_url(&self) -> String {
        format!("{}/v1/token", self.server.url)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }
}

fn oauth_error(error: &str, description: &str) -> Response {
    json(
        400,
        serde_json::json!({"error": error, "error_description": description}).to_string(),
    )
}

fn sts_answer(
    request: &Request,
    audience: &str,
    accept: &dyn Fn(&str) -> bool,
    issued: &str,
) -> Response {
    if request.method() != "POST" || split_query(request.target()).0 != "/v1/token" {
        return google_error(404, "NOT_FOUND", "Not Found", "[]");
    }
    if !request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    {
        return oauth_error("invalid_request", "Invalid Content-Type.");
    }
    let form = form(&request.body);
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("grant_type") != TOKEN_EXCHANGE {
        return oauth_error("unsupported_grant_type", "Invalid grant_type.");
    }
    if field("requested_token_type") != ACCESS_TOKEN_TYPE {
        return oauth_error("invalid_request", "Invalid requested_token_type.");
    }
    if field("subject_token_type") != JWT_TOKEN_TYPE {
        return oauth_error("invalid_request", "Invalid subject_token_type.");
    }
    if field("scope").is_empty() {
        return oauth_error("invalid_scope", "Scope(s) must be provided.");
    }
    if field("audience") != audience {
        return oauth_error(
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid.",
        );
    }
    if !accept(field("subject_token")) {
        return oauth_error("invalid_grant", "The ID Token signature is invalid.");
    }
    json(
        200,
        serde_json::json!({
            "access_token": issued,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": 3599,
        })
        .to_string(),
    )
}

/// IAM Credentials `POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`: lets
/// the holder of `caller_token` impersonate `email`, issuing `access_token`.
pub struct Iam {
    pub server: Server,
    pub access_token: String,
    pub email: String,
}

impl Iam {
    pub fn start(caller_token: &str, email: &str, access_token: &str) -> Iam {
        let (caller, account, issued) = (
            caller_token.to_owned(),
            email.to_owned(),
            access_token.to_owned(),
        );
        let server =
            Server::with_handler(move |request| iam_answer(request, &caller, &account, &issued));
        Iam {
            server,
            access_token: access_token.to_owned(),
            email: email.to_owned(),
        }
    }

    pub fn impersonation_url(&self) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
            self.server.url, self.email
        )
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }
}

fn iam_answer(request: &Request, caller: &str, email: &str, issued: &str) -> Response {
    let path = split_query(request.target()).0;
    let Some(account) = path
        .strip_prefix("/v1/projects/-/serviceAccounts/")
        .and_then(|rest| rest.strip_suffix(":generateAccessToken"))
    else {
        return google_error(404, "NOT_FOUND", "Not Found", "[]");
    };
    if request.method() != "POST" {
        return google_error(405, "METHOD_NOT_ALLOWED", "Method Not Allowed", "[]");
    }
    if request.header("authorization") != Some(&format!("Bearer {caller}")) {
        return unauthenticated();
    }
    if account != email {
        return google_error(
            403,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
            "[]",
        );
    }
    let body: serde_json::Value = match serde_json::from_slice(&request.body) {
        Ok(body) => body,
        Err(_) => return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload.", "[]"),
    };
    if body["scope"].as_array().is_none_or(|s| s.is_empty()) {
        return google_error(400, "INVALID_ARGUMENT", "Scope required.", "[]");
    }
    json(
        200,
        serde_json::json!({"accessToken": issued, "expireTime": "2099-01-01T00:00:00Z"})
            .to_string(),
    )
}

fn unauthenticated() -> Response {
    google_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, \
         login cookie or other valid authentication credential.",
        "[]",
    )
}

/// Secret Manager REST, `GET /v1/{name}:access` for global
/// (`projects/P/secrets/S/versions/V`) and regional
/// (`projects/P/locations/L/secrets/S/versions/V`) secrets, with versions, aliases and
/// `latest`. Requests must carry an accepted bearer token.
pub struct SecretManager {
    url: String,
    log: Box<dyn Fn() -> Vec<Request> + Send + Sync>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Keyed by `projects/P[/locations/L]/secrets/S`.
    secrets: BTreeMap<String, Secret>,
    denied: Vec<String>,
    corrupt: Vec<String>,
    /// How many access requests to answer 429 before serving again.
    throttle: u32,
    retry_delay: Option<String>,
    /// Answer every access request 503 UNAVAILABLE, as during an outage.
    down: bool,
}

#[derive(Default)]
struct Secret {
    versions: Vec<Vec<u8>>,
    aliases: BTreeMap<String, usize>,
}

type Accept = dyn Fn(&str) -> bool + Send + Sync;

impl SecretManager {
    /// Accepts requests that carry `Authorization: Bearer TOKEN`.
    pub fn start(token: &str) -> SecretManager {
        let token = token.to_owned();
        SecretManager::accepting(move |bearer| bearer == token)
    }

    /// Accepts the bearer tokens `accept` says yes to.
    pub fn accepting(accept: impl Fn(&str) -> bool + Send + Sync + 'static) -> SecretManager {
        SecretManager::serve(false, accept)
    }

    /// The same over HTTPS, with a certificate from the test CA (`super::tls`) for
    /// 127.0.0.1 and localhost.
    pub fn https(token: &str) -> SecretManager {
        let token = token.to_owned();
        SecretManager::serve(true, move |bearer| bearer == token)
    }

    fn serve(https: bool, accept: impl Fn(&str) -> bool + Send + Sync + 'static) -> SecretManager {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let accept: Arc<Accept> = Arc::new(accept);
        let handler = move |request: &Request| {
            secret_manager_answer(request, &mut shared.lock().unwrap(), &*accept)
        };
        let (url, log): (String, Box<dyn Fn() -> Vec<Request> + Send + Sync>) = if https {
            let server = super::tls::HttpsServer::with_handler(handler);
            (server.url.clone(), Box::new(move || server.requests()))
        } else {
            let server = Server::with_handler(handler);
            (server.url.clone(), Box::new(move || server.requests()))
        };
        SecretManager { url, log, state }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        (self.log)()
    }

    /// Adds a version to `secret` (`projects/P[/locations/L]/secrets/S`), creating it
    /// if needed, and returns the version number.
    pub fn add(&self, secret: &str, value: &[u8]) -> usize {
        let mut state = self.state.lock().unwrap();
        let entry = state.secrets.entry(secret.to_owned()).or_default();
        entry.versions.push(value.to_vec());
        entry.versions.len()
    }

    pub fn alias(&self, secret: &str, alias: &str, version: usize) {
        let mut state = self.state.lock().unwrap();
        let entry = state.secrets.get_mut(secret).expect("the secret exists");
        entry.aliases.insert(alias.to_owned(), version);
    }

    /// The identity may not read `secret`: 403 PERMISSION_DENIED.
    pub fn deny(&self, secret: &str) {
        self.state.lock().unwrap().denied.push(secret.to_owned());
    }

    /// Serve `secret` with a dataCrc32c that does not match its data.
    pub fn corrupt(&self, secret: &str) {
        self.state.lock().unwrap().corrupt.push(secret.to_owned());
    }

    /// An outage: every access request is answered 503 UNAVAILABLE until it is over.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Answer the next `times` access requests 429 RESOURCE_EXHAUSTED, with a RetryInfo
    /// detail asking for `retry_delay` (`"0.5s"`) when given.
    pub fn throttle(&self, times: u32, retry_delay: Option<&str>) {
        let mut state = self.state.lock().unwrap();
        state.throttle = times;
        state.retry_delay = retry_delay.map(str::to_owned);
    }
}

fn secret_manager_answer(request: &Request, state: &mut State, accept: &Accept) -> Response {
    let (path, _) = split_query(request.target());
    let Some(name) = path
        .strip_prefix("/v1/")
        .and_then(|rest| rest.strip_suffix(":access"))
    else {
        return google_error(404, "NOT_FOUND", "Not Found", "[]");
    };
    if request.method() != "GET" {
        return google_error(405, "METHOD_NOT_ALLOWED", "Method Not Allowed", "[]");
    }
    let bearer = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "));
    if !bearer.is_some_and(accept) {
        return unauthenticated();
    }
    let parts: Vec<&str> = name.split('/').collect();
    let (secret, location, id, version) = match parts.as_slice() {
        ["projects", p, "secrets", s, "versions", v] => {
            (format!("projects/{p}/secrets/{s}"), None, *s, *v)
        }
        ["projects", p, "locations", l, "secrets", s, "versions", v] => (
            format!("projects/{p}/locations/{l}/secrets/{s}"),
            Some(*l),
            *s,
            *v,
        ),
        _ => {
            return google_error(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid resource field value in the request: {name}"),
                "[]",
            );
        }
    };
    if state.down {
        return google_error(
            503,
            "UNAVAILABLE",
            "The service is currently unavailable.",
            "[]",
        );
    }
    if state.throttle > 0 {
        state.throttle -= 1;
        let details = match &state.retry_delay {
            Some(delay) => format!(
                r#"[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}]"#
            ),
            None => "[]".to_owned(),
        };
        return google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Access requests' and limit 'Access requests per \
             minute per project per region' of service 'secretmanager.googleapis.com'.",
            &details,
        );
    }
    if state.denied.contains(&secret) {
        return google_error(
            403,
            "PERMISSION_DENIED",
            &format!(
                "Permission 'secretmanager.versions.access' denied for resource '{name}' \
                 (or it may not exist)."
            ),
            r#"[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"IAM_PERMISSION_DENIED","domain":"secretmanager.googleapis.com","metadata":{"permission":"secretmanager.versions.access"}}]"#,
        );
    }
    // The service answers with the project number, whatever the request named.
    let numbered_secret = match location {
        None => format!("projects/{PROJECT_NUMBER}/secrets/{id}"),
        Some(l) => format!("projects/{PROJECT_NUMBER}/locations/{l}/secrets/{id}"),
    };
    let numbered = |number: &str| format!("{numbered_secret}/versions/{number}");
    let Some(entry) = state.secrets.get(&secret) else {
        return google_error(
            404,
            "NOT_FOUND",
            &format!("Secret [{numbered_secret}] not found or has no versions."),
            "[]",
        );
    };
    let index = match version {
        "latest" => Some(entry.versions.len()),
        v if v.chars().all(|c| c.is_ascii_digit()) => v.parse().ok(),
        alias => entry.aliases.get(alias).copied(),
    }
    .filter(|n| (1..=entry.versions.len()).contains(n));
    let Some(index) = index else {
        return google_error(
            404,
            "NOT_FOUND",
            &format!("Secret Version [{}] not found.", numbered(version)),
            "[]",
        );
    };
    let data = &entry.versions[index - 1];
    let mut checksum = crc32c(data);
    if state.corrupt.contains(&secret) {
        checksum ^= 1;
    }
    json(
        200,
        serde_json::json!({
            "name": numbered(&index.to_string()),
            "payload": {"data": super::base64(data), "dataCrc32c": checksum.to_string()},
        })
        .to_string(),
    )
}

/// CRC-32C (Castagnoli), bit by bit: an implementation independent of the one under test.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The path, and the decoded query parameters.
fn split_query(target: &str) -> (String, BTreeMap<String, String>) {
    match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), form(query.as_bytes())),
        None => (target.to_owned(), BTreeMap::new()),
    }
}

/// An `external_account` credential configuration, as
/// `gcloud iam workload-identity-pools create-cred-config` writes it, with a file-sourced
/// subject token, pointed at the fakes.
pub fn external_account_file(
    audience: &str,
    token_url: &str,
    token_file: &std::path::Path,
    impersonation_url: Option<&str>,
) -> String {
    let mut config = serde_json::json!({
        "type": "external_account",
        "audience": audience,
        "subject_token_type": JWT_TOKEN_TYPE,
        "token_url": token_url,
        "credential_source": {"file": token_file, "format": {"type": "text"}},
    });
    if let Some(url) = impersonation_url {
        config["service_account_impersonation_url"] = url.into();
    }
    serde_json::to_string_pretty(&config).unwrap()
}

/// A workload identity pool provider's audience.
pub fn pool_audience(pool: &str, provider: &str) -> String {
    format!(
        "//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{pool}/providers/{provider}"
    )
}
