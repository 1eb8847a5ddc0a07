//! An AWS STS fake for `AssumeRoleWithWebIdentity`, speaking the Query protocol the way
//! STS does: a form-encoded POST, an XML result, XML `ErrorResponse`s with the codes STS
//! uses for bad tokens. It checks the token the way STS would (a JWT, not expired) and
//! records what it received.

use std::time::{SystemTime, UNIX_EPOCH};

use super::http::{Request, Response, Server};

/// The session token it hands out; tests assert it never reaches any output.
pub const SESSION_TOKEN: &str = "FwoGZXIvYXdzEsts-fake-session-token-never-log-me";
pub const SECRET_ACCESS_KEY: &str = "sts-fake-secret-access-key-never-log-me";

pub struct Sts {
    pub server: Server,
}

/// The `Expiration` of credentials that do not parse: STS sends an ISO 8601 time.
pub const BAD_EXPIRATION: &str = "when-the-session-ends";

impl Sts {
    pub fn start() -> Sts {
        Sts::issuing("ASIAFAKESTSACCESSKEY")
    }

    /// Hands out `access_key_id`: a 12-digit one is the account LocalStack files requests
    /// under, so only these credentials see secrets seeded in that account.
    pub fn issuing(access_key_id: &str) -> Sts {
        let key = access_key_id.to_owned();
        Sts {
            server: Server::with_handler(move |request| answer(request, &key, None)),
        }
    }

    /// Checks each request as STS does, and answers one it accepts with `response`
    /// (built from [`credentials`], say, with a fault or a bad expiration).
    pub fn answering(response: Response) -> Sts {
        Sts {
            server: Server::with_handler(move |request| {
                answer(request, "ASIAFAKESTSACCESSKEY", Some(&response))
            }),
        }
    }

    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// The `WebIdentityToken` of every AssumeRoleWithWebIdentity call, as received.
    pub fn tokens(&self) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .filter_map(|r| form(&r.body, "WebIdentityToken"))
            .collect()
    }
}

fn answer(request: &Request, access_key_id: &str, fixed: Option<&Response>) -> Response {
    let body = &request.body;
    if form(body, "Action").as_deref() != Some("AssumeRoleWithWebIdentity") {
        return error(400, "InvalidAction", "Could not find operation");
    }
    let Some(role) = form(body, "RoleArn") else {
        return error(
            400,
            "ValidationError",
            "1 validation error detected: Value null at 'roleArn'",
        );
    };
    let token = form(body, "WebIdentityToken").unwrap_or_default();
    match claims(&token) {
        None => error(400, "InvalidIdentityToken", "Couldn't parse the token"),
        Some(exp) if exp <= now() => error(
            400,
            "ExpiredTokenException",
            &format!(
                "Token expired: current date/time {} must be before the expiration date/time {exp}",
                now()
            ),
        ),
        Some(_) => match fixed {
            Some(response) => response.clone(),
            None => credentials_for(&role, access_key_id, "2099-01-01T00:00:00Z"),
        },
    }
}

/// A successful AssumeRoleWithWebIdentity answer holding [`SECRET_ACCESS_KEY`] and
/// [`SESSION_TOKEN`], which expire at `expiration` (as STS writes it, or
/// [`BAD_EXPIRATION`]).
pub fn credentials(expiration: &str) -> Response {
    credentials_for(
        "arn:aws:iam::000000000000:role/secret-sidecar",
        "ASIAFAKESTSACCESSKEY",
        expiration,
    )
}

fn credentials_for(role: &str, access_key_id: &str, expiration: &str) -> Response {
    let mut response = Response::json(200, success(role, access_key_id, expiration));
    response.headers = vec![("content-type", "text/xml".to_owned())];
    response
}

/// The token's `exp`, if it is a JWT with three parts and a readable payload.
fn claims(token: &str) -> Option<u64> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let payload = base64url(parts[1])?;
    let payload: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    payload["exp"].as_u64()
}

fn base64url(text: &str) -> Option<Vec<u8>> {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes() {
        let value = TABLE.iter().position(|b| *b == byte)? as u32;
        bits = bits << 6 | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn success(role: &str, access_key_id: &str, expiration: &str) -> String {
    format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <AssumedRoleId>AROAFAKEROLEID:secret-sidecar</AssumedRoleId>
      <Arn>{role}/secret-sidecar</Arn>
    </AssumedRoleUser>
    <Provider>oidc.example.test</Provider>
    <Credentials>
      <AccessKeyId>{access_key_id}</AccessKeyId>
      <SecretAccessKey>{SECRET_ACCESS_KEY}</SecretAccessKey>
      <SessionToken>{SESSION_TOKEN}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <SubjectFromWebIdentityToken>system:serviceaccount:default:app</SubjectFromWebIdentityToken>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
    )
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let mut response = Response::json(
        status,
        format!(
            r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>"#
        ),
    );
    response.headers = vec![("content-type", "text/xml".to_owned())];
    response
}

/// One field of a form body.
fn form(body: &[u8], name: &str) -> Option<String> {
    super::http::form(body).remove(name)
}
