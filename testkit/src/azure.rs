//! Protocol fakes for Azure, driven by the official SDK clients inside the real binary:
//!
//! - [`Entra`]: Entra ID's v2.0 token endpoint (`POST /{tenant}/oauth2/v2.0/token`,
//!   client-credentials grant with a `jwt-bearer` client assertion) that checks tenant,
//!   client id, scope and the assertion, and answers errors the way Entra does (`error`,
//!   `error_description` with the AADSTS code, `error_codes`, `timestamp`, `trace_id`,
//!   `correlation_id`, `error_uri`). It also serves the tenant's OpenID discovery document,
//!   which MSAL-based clients read first (azure_identity 1.0 does not).
//! - [`KeyVault`]: the data plane. A request without a valid bearer token gets the real
//!   401 challenge (`WWW-Authenticate: Bearer authorization="…/{tenant}",
//!   resource="https://vault.azure.net"`); `GET /secrets/{name}[/{version}]?api-version=…`
//!   answers the secret bundle, or Key Vault's error bodies for not found, forbidden and
//!   throttled (429 + `Retry-After`).
//! - [`ConnectProxy`]: an `HTTPS_PROXY` that tunnels `login.microsoftonline.com` and
//!   `*.vault.azure.net` to those fakes, so a test can use the host names a pod uses (and
//!   the SDK's challenge-resource check runs for real).
//! - [`AppServiceIdentity`]: the App Service / Functions managed identity endpoint
//!   (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, api-version 2019-08-01).
//! - [`Imds`]: the instance metadata service's token endpoint, reached as an `HTTP_PROXY`
//!   so that the SDK's fixed `http://169.254.169.254` never leaves the loopback interface.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use super::http::{Fault, Request, Response, Server, form};
use super::tls::{HttpsServer, ca};
use super::{Scratch, Sidecar};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "5c0a5e1b-3f6e-4b8e-9a2d-1f7c2b9e4d11";
pub const SCOPE: &str = "https://vault.azure.net/.default";
pub const RESOURCE: &str = "https://vault.azure.net";
/// A second resource Entra issues tokens for (Azure Resource Manager, as IMDS callers
/// usually name it: with the trailing slash, kept in the scope so that it stays in the
/// token's audience).
pub const ARM_RESOURCE: &str = "https://management.azure.com/";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Key Vault names allow letters, digits and dashes; ids here stay alphanumeric.
fn unique() -> String {
    super::unique_id('x')
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn base64url(text: &str) -> String {
    super::base64(text.as_bytes())
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_owned()
}

/// A JWT-shaped token; nothing here checks signatures, as nothing in the fakes can.
pub fn jwt(claims: &str) -> String {
    format!(
        "{}.{}.{}",
        base64url(r#"{"alg":"RS256","typ":"JWT","kid":"test"}"#),
        base64url(claims),
        base64url(&format!("signature-{}", unique()))
    )
}

/// The projected service account token AKS writes for the pod.
pub fn projected_token() -> String {
    jwt(&format!(
        r#"{{"aud":["api://AzureADTokenExchange"],"iss":"https://oidc.example.test/{TENANT}/","sub":"system:serviceaccount:default:app","exp":{}}}"#,
        now() + 3600
    ))
}

fn query(target: &str) -> BTreeMap<String, String> {
    target
        .split_once('?')
        .map(|(_, query)| form(query.as_bytes()))
        .unwrap_or_default()
}

/// Azure workload identity end to end: Entra ID, a vault that trusts its tokens, and the
/// projected token file the AKS webhook mounts for the pod.
pub struct Workload {
    pub entra: Entra,
    pub vault: KeyVault,
    /// The projected service account token, the client assertion Entra accepts.
    pub token: String,
    pub token_file: PathBuf,
    _token_dir: Scratch,
}

impl Workload {
    /// Entra ID and a vault that names it in its challenge, both on 127.0.0.1.
    pub fn start() -> Workload {
        Workload::with_vault(KeyVault::start)
    }

    /// Entra ID and the vault `vault` makes to trust it.
    pub fn with_vault(vault: impl FnOnce(&Entra) -> KeyVault) -> Workload {
        let token = projected_token();
        let token_dir = Scratch::disk("azure-token");
        let token_file = token_dir.path.join("azure-identity-token");
        std::fs::write(&token_file, &token).unwrap();
        let entra = Entra::start(&token);
        let vault = vault(&entra);
        Workload {
            entra,
            vault,
            token,
            token_file,
            _token_dir: token_dir,
        }
    }

    /// `sidecar` with the variables the workload identity webhook injects, the authority
    /// aimed at the fake.
    pub fn identity(&self, sidecar: Sidecar) -> Sidecar {
        sidecar
            .env("AZURE_CLIENT_ID", CLIENT_ID)
            .env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_FEDERATED_TOKEN_FILE", &self.token_file)
            .env("AZURE_AUTHORITY_HOST", self.entra.authority_host())
    }

    /// [`Workload::identity`], the test CA trusted with `--ca-file`, and the challenge's
    /// resource check off, as a vault reached by its loopback URL needs.
    pub fn configure(&self, sidecar: Sidecar) -> Sidecar {
        self.identity(sidecar)
            .arg("--azure-skip-challenge-resource-check")
            .arg("--ca-file")
            .arg(&ca().pem_file)
    }

    /// `azure://https://127.0.0.1:PORT/secrets/NAME`
    pub fn reference(&self, name: &str) -> String {
        format!("azure://{}", self.vault.secret_url(name))
    }
}

/// Entra ID's error shape, as `login.microsoftonline.com` sends it.
pub fn entra_error(status: u16, error: &str, code: u32, description: &str) -> Response {
    let trace = format!("0b5e1c2a-{}", unique());
    let stamp = "2026-11-22 06:00:00Z";
    let body = serde_json::json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {stamp}"
        ),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": trace,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    json(status, body.to_string())
}

fn json(status: u16, body: String) -> Response {
    Response {
        status,
        headers: vec![
            ("content-type", "application/json; charset=utf-8".to_owned()),
            ("cache-control", "no-store, no-cache".to_owned()),
        ],
        body,
        fault: Default::default(),
    }
}

/// A forced answer for every token request, to play Entra refusing or failing.
#[derive(Clone)]
pub enum EntraMode {
    Normal,
    Reject {
        code: u32,
        description: &'static str,
    },
    /// Accepted requests get the access token with `expires_in` as this JSON text:
    /// `"\"soon\""` is an answer the client cannot read.
    ExpiresIn(&'static str),
}

/// The Entra ID token endpoint for one tenant and one client id ([`TENANT`] and
/// [`CLIENT_ID`] unless started with [`Entra::start_for`]).
pub struct Entra {
    pub server: HttpsServer,
    /// The access token it issues for Key Vault, the only one [`KeyVault`] accepts.
    pub access_token: String,
    /// The token it issues for [`ARM_RESOURCE`].
    pub arm_token: String,
    mode: Arc<Mutex<EntraMode>>,
    answer: Arc<Mutex<Answer>>,
}

/// How long the tokens it issues last and how long it takes to answer.
#[derive(Clone, Copy)]
struct Answer {
    lifetime: u64,
    delay: std::time::Duration,
}

impl Entra {
    /// Accepts exactly `assertion` as the client assertion.
    pub fn start(assertion: &str) -> Entra {
        Entra::start_for(assertion, TENANT, CLIENT_ID)
    }

    /// Accepts exactly `assertion`, for `client_id` in `tenant` (the values a deployment
    /// artifact names).
    pub fn start_for(assertion: &str, tenant: &str, client_id: &str) -> Entra {
        let expected = assertion.to_owned();
        Entra::serve(tenant, client_id, move |presented| presented == expected)
    }

    /// Accepts the client assertions `accept` says yes to, for [`CLIENT_ID`] in
    /// [`TENANT`] (a projected token that rotates, say).
    pub fn accepting(accept: impl Fn(&str) -> bool + Send + Sync + 'static) -> Entra {
        Entra::serve(TENANT, CLIENT_ID, accept)
    }

    fn serve(
        tenant: &str,
        client_id: &str,
        accept: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Entra {
        let access_token = jwt(&format!(
            r#"{{"aud":"{RESOURCE}","iss":"https://sts.windows.net/{tenant}/","appid":"{client_id}","exp":{}}}"#,
            now() + 3600
        ));
        let arm_token = jwt(&format!(
            r#"{{"aud":"{ARM_RESOURCE}","iss":"https://sts.windows.net/{tenant}/","appid":"{client_id}","exp":{}}}"#,
            now() + 3600
        ));
        let mode = Arc::new(Mutex::new(EntraMode::Normal));
        let answer = Arc::new(Mutex::new(Answer {
            lifetime: 3599,
            delay: std::time::Duration::ZERO,
        }));
        let issued = HashMap::from([
            (SCOPE.to_owned(), access_token.clone()),
            (format!("{ARM_RESOURCE}/.default"), arm_token.clone()),
        ]);
        let (forced, how) = (Arc::clone(&mode), Arc::clone(&answer));
        let app = (tenant.to_owned(), client_id.to_owned());
        let server = HttpsServer::with_handler(move |request| {
            let how = *how.lock().unwrap();
            let response = token_endpoint(
                request,
                &app,
                &accept,
                &issued,
                &forced.lock().unwrap(),
                how.lifetime,
            );
            response.fault(Fault::DelayHeaders(how.delay))
        });
        Entra {
            server,
            access_token,
            arm_token,
            mode,
            answer,
        }
    }

    pub fn set_mode(&self, mode: EntraMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Tokens issued from now on last `seconds` (3599 unless set).
    pub fn set_lifetime(&self, seconds: u64) {
        self.answer.lock().unwrap().lifetime = seconds;
    }

    /// Every answer from now on waits `delay` first.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.answer.lock().unwrap().delay = delay;
    }

    /// What `AZURE_AUTHORITY_HOST` points at.
    pub fn authority_host(&self) -> String {
        format!("{}/", self.server.url)
    }

    /// The form fields of every token request received.
    pub fn token_requests(&self) -> Vec<BTreeMap<String, String>> {
        self.server
            .requests()
            .iter()
            .filter(|r| r.method() == "POST")
            .map(|r| form(&r.body))
            .collect()
    }
}

fn token_endpoint(
    request: &Request,
    (known_tenant, client_id): &(String, String),
    accept: &dyn Fn(&str) -> bool,
    issued: &HashMap<String, String>,
    mode: &EntraMode,
    lifetime: u64,
) -> Response {
    let path = request.target().split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if request.method() == "GET" {
        return match segments.as_slice() {
            [tenant, "v2.0", ".well-known", "openid-configuration"] => {
                let base = format!("https://{}", request.header("host").unwrap_or_default());
                json(
                    200,
                    serde_json::json!({
                        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
                        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
                        "response_modes_supported": ["query", "fragment", "form_post"],
                        "subject_types_supported": ["pairwise"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                        "scopes_supported": ["openid", "profile", "email", "offline_access"],
                        "issuer": format!("https://login.microsoftonline.com/{known_tenant}/v2.0"),
                        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
                        "tenant_region_scope": "EU",
                        "cloud_instance_name": "microsoftonline.com",
                    })
                    .to_string(),
                )
            }
            _ => entra_error(
                404,
                "invalid_request",
                900561,
                "The endpoint only accepts POST requests.",
            ),
        };
    }
    let [tenant, "oauth2", "v2.0", "token"] = segments.as_slice() else {
        return entra_error(
            404,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    };
    if tenant != known_tenant {
        return entra_error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    if !request
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/x-www-form-urlencoded")
    {
        return entra_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    }
    let fields = form(&request.body);
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "client_credentials" {
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if field("client_assertion_type") != JWT_BEARER {
        return entra_error(
            400,
            "invalid_request",
            50012,
            "Client assertion type is not supported.",
        );
    }
    if field("client_id") != client_id {
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{known_tenant}'.",
                field("client_id")
            ),
        );
    }
    let Some(issued) = issued.get(field("scope")) else {
        return entra_error(
            400,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
                field("scope")
            ),
        );
    };
    let presented = field("client_assertion");
    if presented.trim() != presented || presented.split('.').count() != 3 {
        return entra_error(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        );
    }
    if let EntraMode::Reject { code, description } = mode {
        return entra_error(400, "invalid_client", *code, description);
    }
    if !accept(presented) {
        return entra_error(
            400,
            "invalid_client",
            700211,
            "No matching federated identity record found for presented assertion issuer 'https://oidc.example.test/'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.",
        );
    }
    let expires_in = match mode {
        EntraMode::ExpiresIn(text) => (*text).to_owned(),
        _ => lifetime.to_string(),
    };
    json(
        200,
        format!(
            r#"{{"token_type":"Bearer","expires_in":{expires_in},"ext_expires_in":{lifetime},"access_token":"{issued}"}}"#
        ),
    )
}

#[derive(Default)]
struct Vault {
    /// Name → versions, oldest first: (version, value).
    secrets: HashMap<String, Vec<(String, String)>>,
    denied: HashSet<String>,
    /// Name → how many more requests get a 429.
    throttled: HashMap<String, u32>,
    /// Version → the content type of a certificate's secret (`application/x-pkcs12`).
    certificates: HashMap<String, String>,
}

/// A Key Vault data plane that trusts only `entra`'s access token.
pub struct KeyVault {
    pub server: HttpsServer,
    state: Arc<Mutex<Vault>>,
}

impl KeyVault {
    pub fn start(entra: &Entra) -> KeyVault {
        Self::with_token(
            &entra.access_token,
            &format!("{}/{TENANT}", entra.server.url),
        )
    }

    /// Accepts `token`; its challenge names `authorization` as the authority.
    pub fn with_token(token: &str, authorization: &str) -> KeyVault {
        let state = Arc::new(Mutex::new(Vault::default()));
        let (vault, token) = (Arc::clone(&state), token.to_owned());
        let challenge = format!(r#"Bearer authorization="{authorization}", resource="{RESOURCE}""#);
        let server = HttpsServer::with_handler(move |request| {
            data_plane(request, &token, &challenge, &mut vault.lock().unwrap())
        });
        KeyVault { server, state }
    }

    /// Adds a version (the latest from now on) and returns its id.
    pub fn put(&self, name: &str, value: &str) -> String {
        let version = format!("{:032x}", fastrand::u128(..));
        self.state
            .lock()
            .unwrap()
            .secrets
            .entry(name.to_owned())
            .or_default()
            .push((version.clone(), value.to_owned()));
        version
    }

    /// Adds a version the way Key Vault keeps a certificate behind the secret of the same
    /// name: `value` (base64 PKCS#12 or PEM) with its `contentType`, `kid` and
    /// `managed: true`. Returns the version's id.
    pub fn put_certificate(&self, name: &str, value: &str, content_type: &str) -> String {
        let version = self.put(name, value);
        self.state
            .lock()
            .unwrap()
            .certificates
            .insert(version.clone(), content_type.to_owned());
        version
    }

    /// The secret exists, but the caller may not read it.
    pub fn deny(&self, name: &str) {
        self.state.lock().unwrap().denied.insert(name.to_owned());
    }

    /// The next `times` requests for `name` are throttled.
    pub fn throttle(&self, name: &str, times: u32) {
        self.state
            .lock()
            .unwrap()
            .throttled
            .insert(name.to_owned(), times);
    }

    /// `https://127.0.0.1:PORT/secrets/NAME`, the reference's vault part.
    pub fn secret_url(&self, name: &str) -> String {
        format!("{}/secrets/{name}", self.server.url)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    /// Requests for `name` that carried a bearer token (the unauthenticated challenge
    /// round trip not counted).
    pub fn authorized_gets(&self, name: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                let path = r.target().split('?').next().unwrap_or_default();
                r.header("authorization").is_some()
                    && path
                        .strip_prefix("/secrets/")
                        .map(|rest| rest.split('/').next())
                        == Some(Some(name))
            })
            .count()
    }
}

pub fn kv_error(status: u16, code: &str, message: &str, inner: Option<&str>) -> Response {
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = serde_json::json!({ "code": inner });
    }
    let mut response = json(status, serde_json::json!({ "error": error }).to_string());
    response
        .headers
        .push(("x-ms-keyvault-service-version", "1.9.2757.1".to_owned()));
    response
        .headers
        .push(("x-ms-request-id", format!("5e1f0a4c-{}", unique())));
    response
}

fn data_plane(request: &Request, token: &str, challenge: &str, vault: &mut Vault) -> Response {
    let target = request.target();
    if !query(target).contains_key("api-version") {
        return kv_error(
            400,
            "BadParameter",
            "The request URI contains an invalid API version",
            None,
        );
    }
    let authorized = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        == Some(token);
    if !authorized {
        let message = match request.header("authorization") {
            None => "AKV10000: Request is missing a Bearer or PoP token.",
            Some(_) => {
                "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/."
            }
        };
        return kv_error(401, "Unauthorized", message, None)
            .header("www-authenticate", challenge.to_owned());
    }
    let path = target.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (name, version) = match (request.method(), segments.as_slice()) {
        ("GET", ["secrets", name] | ["secrets", name, ""]) => (*name, None),
        ("GET", ["secrets", name, version]) => (*name, Some(*version)),
        _ => {
            return kv_error(
                405,
                "BadParameter",
                "The requested operation is not supported.",
                None,
            );
        }
    };
    if let Some(left) = vault.throttled.get_mut(name).filter(|left| **left > 0) {
        *left -= 1;
        return kv_error(
            429,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
            None,
        )
        .header("retry-after", "1");
    }
    if vault.denied.contains(name) {
        return kv_error(
            403,
            "Forbidden",
            &format!(
                "The user, group or application 'appid={CLIENT_ID};oid=0d3f2c1b-1111-2222-3333-444455556666;iss=https://sts.windows.net/{TENANT}/' does not have secrets get permission on key vault 'test-vault;location=westeurope'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
            ),
            Some("AccessDenied"),
        );
    }
    let found = vault.secrets.get(name).and_then(|versions| match version {
        None => versions.last(),
        Some(wanted) => versions.iter().find(|(id, _)| id == wanted),
    });
    let Some((id, value)) = found else {
        let what = version.map_or(name.to_owned(), |v| format!("{name}/{v}"));
        return kv_error(
            404,
            "SecretNotFound",
            &format!(
                "A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
            None,
        );
    };
    let host = request.header("host").unwrap_or_default();
    let stamp = now();
    let mut bundle = serde_json::json!({
        "value": value,
        "id": format!("https://{host}/secrets/{name}/{id}"),
        "attributes": {
            "enabled": true,
            "created": stamp - 60,
            "updated": stamp - 60,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
        "tags": {"owner": "secret-sidecar-tests"},
    });
    if let Some(content_type) = vault.certificates.get(id) {
        bundle["contentType"] = content_type.clone().into();
        bundle["kid"] = format!("https://{host}/keys/{name}/{id}").into();
        bundle["managed"] = true.into();
    }
    let mut response = json(200, bundle.to_string());
    response
        .headers
        .push(("x-ms-keyvault-service-version", "1.9.2757.1".to_owned()));
    response
}

/// An HTTP CONNECT proxy on 127.0.0.1 that sends `login.microsoftonline.com` to one local
/// port and `*.vault.azure.net` to another; every other host is refused. No name is ever
/// resolved: nothing leaves the loopback interface.
pub struct ConnectProxy {
    pub url: String,
    connects: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start(entra_port: u16, vault_port: u16) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connects = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&connects);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let seen = Arc::clone(&seen);
                thread::spawn(move || tunnel(client, &seen, entra_port, vault_port));
            }
        });
        ConnectProxy { url, connects }
    }

    /// The `host:port` of every CONNECT received.
    pub fn connects(&self) -> Vec<String> {
        self.connects.lock().unwrap().clone()
    }
}

fn tunnel(client: TcpStream, seen: &Mutex<Vec<String>>, entra_port: u16, vault_port: u16) {
    let mut reader = BufReader::new(client);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
    }
    let authority = match line.split(' ').collect::<Vec<_>>().as_slice() {
        ["CONNECT", authority, _] => authority.to_string(),
        _ => String::new(),
    };
    seen.lock().unwrap().push(authority.clone());
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h);
    let port = if host == "login.microsoftonline.com" {
        Some(entra_port)
    } else if host.ends_with(".vault.azure.net") {
        Some(vault_port)
    } else {
        None
    };
    let leftover = reader.buffer().to_vec();
    let mut client = reader.into_inner();
    let Some(Ok(mut upstream)) = port.map(|port| TcpStream::connect(("127.0.0.1", port))) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .and_then(|_| upstream.write_all(&leftover))
        .is_err()
    {
        return;
    }
    let (mut client_read, mut upstream_write) =
        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let forward = thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = forward.join();
}

/// App Service's managed identity endpoint: `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01
/// &resource=…[&client_id=…]` with the `X-IDENTITY-HEADER` secret.
pub struct AppServiceIdentity {
    pub server: Server,
    pub header_secret: String,
}

impl AppServiceIdentity {
    pub fn start(access_token: &str, client_id: Option<&str>) -> AppServiceIdentity {
        let header_secret = format!("identity-header-{}", unique());
        let (secret, token, client_id) = (
            header_secret.clone(),
            access_token.to_owned(),
            client_id.map(str::to_owned),
        );
        let server = Server::with_handler(move |request| {
            let query = query(request.target());
            let ok = request.method() == "GET"
                && request.target().starts_with("/msi/token?")
                && request.header("x-identity-header") == Some(secret.as_str())
                && query.get("api-version").map(String::as_str) == Some("2019-08-01")
                && query.get("resource").map(String::as_str) == Some(RESOURCE)
                && query.get("client_id") == client_id.as_ref();
            if !ok {
                return json(
                    400,
                    r#"{"statusCode":400,"message":"Unable to load the proper Managed Identity.","correlationId":"7f0e8a0c-0000-0000-0000-000000000000"}"#.to_owned(),
                );
            }
            json(
                200,
                serde_json::json!({
                    "access_token": token,
                    "expires_on": (now() + 3600).to_string(),
                    "resource": RESOURCE,
                    "token_type": "Bearer",
                    "client_id": client_id.clone().unwrap_or_else(|| CLIENT_ID.to_owned()),
                })
                .to_string(),
            )
        });
        AppServiceIdentity {
            server,
            header_secret,
        }
    }

    /// What `IDENTITY_ENDPOINT` points at.
    pub fn endpoint(&self) -> String {
        format!("{}/msi/token", self.server.url)
    }
}

/// The instance metadata service's token endpoint
/// (`GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2019-08-01
/// &resource=…[&client_id=…]` with `Metadata: true`), served as the `HTTP_PROXY` the
/// binary is given: the request never leaves the loopback interface, and it arrives in
/// the absolute form a proxy sees, with the real host name.
pub struct Imds {
    pub server: Server,
}

impl Imds {
    pub fn start(access_token: &str, client_id: Option<&str>) -> Imds {
        let (token, client_id) = (access_token.to_owned(), client_id.map(str::to_owned));
        let server = Server::with_handler(move |request| {
            let target = request.target();
            let query = query(target);
            let ok = request.method() == "GET"
                && target.starts_with("http://169.254.169.254/metadata/identity/oauth2/token?")
                && request.header("metadata") == Some("true")
                && query.get("api-version").map(String::as_str) == Some("2019-08-01")
                && query.get("resource").map(String::as_str) == Some(RESOURCE)
                && query.get("client_id") == client_id.as_ref();
            if !ok {
                return json(
                    400,
                    r#"{"error":"invalid_request","error_description":"Identity not found"}"#
                        .to_owned(),
                );
            }
            json(
                200,
                serde_json::json!({
                    "access_token": token,
                    "client_id": client_id.clone().unwrap_or_else(|| CLIENT_ID.to_owned()),
                    "expires_in": "86399",
                    "expires_on": (now() + 86399).to_string(),
                    "ext_expires_in": "86399",
                    "not_before": (now() - 300).to_string(),
                    "resource": RESOURCE,
                    "token_type": "Bearer",
                })
                .to_string(),
            )
        });
        Imds { server }
    }
}
