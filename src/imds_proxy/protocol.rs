//! The two wire contracts the proxy speaks, and nothing else: the instance metadata
//! service's token endpoint and App Service's managed identity endpoint. This file reads a
//! request into what it asks for and writes the answers; it never sees the network or
//! Entra ID.
//!
//! IMDS (`GET /metadata/identity/oauth2/token`), as Microsoft documents it and SDKs meet
//! it: `Metadata: true` is required (a request without it, the SDKs' own probe included,
//! gets 400 `Required metadata header not specified`), a request carrying
//! `X-Forwarded-For` is refused, a query parameter given twice is refused, `api-version`
//! must be one IMDS serves (else IMDS's 400 with `newest-versions`), `resource` is
//! required, and `client_id`, `object_id` or `msi_res_id`/`mi_res_id` must name this
//! workload's identity or be absent (else 400 `Identity not found`). Errors are OAuth
//! shaped, `{"error", "error_description"}`; the token is `access_token`, `client_id`,
//! `expires_in`, `expires_on`, `resource`, `token_type`, every value a string.
//! `not_before` and `ext_expires_in` are left out: the Entra exchange does not report
//! them to the proxy, and it does not make them up.
//!
//! App Service (`GET /msi/token`, api-version 2019-08-01): the secret header
//! `X-IDENTITY-HEADER` instead of `Metadata`, `client_id`/`principal_id`/`object_id`/
//! `mi_res_id`, the token as `access_token`, `expires_on`, `resource`, `token_type`,
//! `client_id`, and errors as `{"statusCode", "message"}`.
//!
//! Any other path gets 404, as IMDS answers for a feature this machine lacks: instance
//! metadata, attested data, scheduled events and the rest are not a pod's to give, and
//! are never invented.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::{HeaderMap, Method, StatusCode};

use crate::secret::SecretValue;
use crate::serve::{Reply, reply};

/// IMDS's token path; IMDS matches its `/metadata` part without regard to case.
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// Where the App Service contract is served: `IDENTITY_ENDPOINT=http://ADDR:PORT/msi/token`.
pub const APP_SERVICE_PATH: &str = "/msi/token";
const APP_SERVICE_VERSION: &str = "2019-08-01";
const JSON: &str = "application/json; charset=utf-8";

/// The API versions IMDS documents (newest first), plus 2017-09-01, which the identity
/// endpoint has always served and which scripts written for the VM extension still send.
const API_VERSIONS: [&str; 36] = [
    "2025-04-07",
    "2024-07-17",
    "2024-03-15",
    "2023-11-15",
    "2023-07-01",
    "2021-12-13",
    "2021-11-15",
    "2021-11-01",
    "2021-10-01",
    "2021-08-01",
    "2021-05-01",
    "2021-03-01",
    "2021-02-01",
    "2021-01-01",
    "2020-12-01",
    "2020-10-01",
    "2020-09-01",
    "2020-07-15",
    "2020-06-01",
    "2019-11-01",
    "2019-08-15",
    "2019-08-01",
    "2019-06-04",
    "2019-06-01",
    "2019-04-30",
    "2019-03-11",
    "2019-02-01",
    "2018-10-01",
    "2018-04-02",
    "2018-02-01",
    "2017-12-01",
    "2017-10-01",
    "2017-09-01",
    "2017-08-01",
    "2017-04-02",
    "2017-03-01",
];

/// Which contract a request came in by; it decides the shape of every answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    Imds,
    AppService,
}

/// The identity a request names, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    Default,
    ClientId(String),
    ObjectId(String),
    ResourceId(String),
}

/// A token request that passed every check but the identity's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub contract: Contract,
    pub resource: String,
    pub named: Named,
}

/// What a request asks for, or the answer it gets without a token.
#[derive(Debug)]
pub enum Route {
    Token(TokenRequest),
    Answer(Reply),
    /// A path the proxy does not serve (logged once per path).
    NotServed(Reply),
}

/// Reads a request. `identity_header` is the App Service secret, when that contract is on.
pub fn route(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    identity_header: Option<&SecretValue>,
) -> Route {
    let trimmed = path.trim_end_matches('/');
    if trimmed.eq_ignore_ascii_case(TOKEN_PATH) {
        return imds(method, query, headers).map_or_else(Route::Answer, Route::Token);
    }
    if let Some(secret) = identity_header
        && trimmed.eq_ignore_ascii_case(APP_SERVICE_PATH)
    {
        return app_service(method, query, headers, secret)
            .map_or_else(Route::Answer, Route::Token);
    }
    Route::NotServed(imds_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "Not found. This pod's metadata endpoint is secret-sidecar imds-proxy, which serves \
         managed identity tokens (/metadata/identity/oauth2/token) and nothing else.",
    ))
}

// The error is the answer itself, made once per refused request; boxing it would only
// move it to the heap.
#[allow(clippy::result_large_err)]
fn imds(method: &Method, query: Option<&str>, headers: &HeaderMap) -> Result<TokenRequest, Reply> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("metadata") != Some("true") {
        return Err(imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        ));
    }
    if headers.contains_key("x-forwarded-for") {
        return Err(imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Requests carrying an X-Forwarded-For header are refused",
        ));
    }
    if method != Method::GET {
        return Err(imds_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "The HTTP method is not supported; use GET",
        ));
    }
    let params = parse_query(query).map_err(|name| {
        imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("The request includes the parameter {name} more than once"),
        )
    })?;
    let version = params.get("api-version").map(String::as_str);
    if !version.is_some_and(|v| API_VERSIONS.contains(&v)) {
        let body = serde_json::json!({
            "error": "Bad request. api-version is invalid or was not specified in the request. \
                      For more information refer to aka.ms/azureimds",
            "newest-versions": &API_VERSIONS[..3],
        });
        return Err(reply(StatusCode::BAD_REQUEST, JSON, body.to_string()));
    }
    let Some(resource) = params.get("resource").filter(|r| !r.trim().is_empty()) else {
        return Err(imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required audience parameter not specified",
        ));
    };
    let named = named(
        &params,
        &[
            ("client_id", Named::ClientId as Namer),
            ("object_id", Named::ObjectId),
            ("msi_res_id", Named::ResourceId),
            ("mi_res_id", Named::ResourceId),
        ],
    )
    .map_err(|()| {
        imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Only one of client_id, object_id and msi_res_id may be given",
        )
    })?;
    Ok(TokenRequest {
        contract: Contract::Imds,
        resource: resource.clone(),
        named,
    })
}

#[allow(clippy::result_large_err)]
fn app_service(
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    secret: &SecretValue,
) -> Result<TokenRequest, Reply> {
    let presented = headers
        .get("x-identity-header")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !constant_time_eq(presented, secret.expose()) {
        return Err(app_service_error(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER",
        ));
    }
    if method != Method::GET {
        return Err(app_service_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "The HTTP method is not supported; use GET",
        ));
    }
    let params = parse_query(query).map_err(|name| {
        app_service_error(
            StatusCode::BAD_REQUEST,
            &format!("The request includes the parameter {name} more than once"),
        )
    })?;
    if params.get("api-version").map(String::as_str) != Some(APP_SERVICE_VERSION) {
        return Err(app_service_error(
            StatusCode::BAD_REQUEST,
            "api-version must be 2019-08-01",
        ));
    }
    let Some(resource) = params.get("resource").filter(|r| !r.trim().is_empty()) else {
        return Err(app_service_error(
            StatusCode::BAD_REQUEST,
            "The resource parameter is required",
        ));
    };
    let named = named(
        &params,
        &[
            ("client_id", Named::ClientId as Namer),
            ("principal_id", Named::ObjectId),
            ("object_id", Named::ObjectId),
            ("mi_res_id", Named::ResourceId),
        ],
    )
    .map_err(|()| {
        app_service_error(
            StatusCode::BAD_REQUEST,
            "Only one of client_id, principal_id and mi_res_id may be given",
        )
    })?;
    Ok(TokenRequest {
        contract: Contract::AppService,
        resource: resource.clone(),
        named,
    })
}

/// Makes the [`Named`] a query parameter stands for.
type Namer = fn(String) -> Named;

/// The one identity parameter present, if any; `Err` when more than one is.
fn named(params: &BTreeMap<String, String>, names: &[(&str, Namer)]) -> Result<Named, ()> {
    let mut found = names
        .iter()
        .filter_map(|(name, make)| params.get(*name).map(|value| make(value.clone())));
    let first = found.next();
    match (first, found.next()) {
        (_, Some(_)) => Err(()),
        (Some(named), None) => Ok(named),
        (None, None) => Ok(Named::Default),
    }
}

/// The query's parameters; `Err(name)` for one given twice, which IMDS refuses.
fn parse_query(query: Option<&str>) -> Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if params
            .insert(name.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(name.into_owned());
        }
    }
    Ok(params)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// IMDS's OAuth-shaped error.
pub fn imds_error(status: StatusCode, error: &str, description: &str) -> Reply {
    let body = serde_json::json!({ "error": error, "error_description": description });
    reply(status, JSON, body.to_string())
}

/// App Service's error shape.
pub fn app_service_error(status: StatusCode, message: &str) -> Reply {
    let body = serde_json::json!({ "statusCode": status.as_u16(), "message": message });
    reply(status, JSON, body.to_string())
}

/// A refusal in the shape of the contract the request came by.
pub fn error(contract: Contract, status: StatusCode, error: &str, description: &str) -> Reply {
    match contract {
        Contract::Imds => imds_error(status, error, description),
        Contract::AppService => app_service_error(status, &format!("{error}: {description}")),
    }
}

/// The token answer. The body is built in zeroizing memory and handed to the server,
/// which owns it from there.
pub fn token(
    request: &TokenRequest,
    client_id: &str,
    access_token: &SecretValue,
    expires_on: SystemTime,
) -> Reply {
    let on = expires_on
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let left = expires_on
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
        .as_secs();
    // Every field is a plain string that needs no escaping but the token, which is a JWT
    // (base64url and dots) in practice; it is escaped all the same.
    let mut body = zeroize::Zeroizing::new(Vec::with_capacity(access_token.len() + 256));
    body.extend_from_slice(br#"{"access_token":"#);
    push_json_string(&mut body, access_token.expose());
    let mut rest = |name: &str, value: &str| {
        body.extend_from_slice(b",\"");
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\":");
        push_json_string(&mut body, value.as_bytes());
    };
    rest("client_id", client_id);
    if request.contract == Contract::Imds {
        rest("expires_in", &left.to_string());
    }
    rest("expires_on", &on.to_string());
    rest("resource", &request.resource);
    rest("token_type", "Bearer");
    body.push(b'}');
    reply(StatusCode::OK, JSON, bytes::Bytes::from(body.to_vec()))
}

/// Appends `value` as a JSON string (quoted, escaped).
fn push_json_string(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    for &byte in value {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => out.extend_from_slice(format!("\\u{byte:04x}").as_bytes()),
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests;
