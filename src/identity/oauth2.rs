//! The OAuth2 client-credentials grant (RFC 6749 §4.4), the way an external identity
//! provider (Entra ID, Okta, Keycloak, Auth0, ...) issues a workload an access token.
//!
//! One form POST; no crate for it, because the `oauth2` crate pins another major of
//! reqwest than the one already in the build and adds nothing this request needs.
//! `client_secret_basic` form-encodes the id and secret before base64 (§2.3.1), which
//! reqwest's `basic_auth` does not; `client_secret_post` sends them in the body.

use anyhow::{Context as _, Result, anyhow};
use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::options::ClientAuth;
use super::web_token::{OAuth2Client, WebToken};
use crate::exit::Failure;
use crate::net::{
    HttpConfig, MAX_RESPONSE_BYTES, ResponseTooLarge, certificate_error, certificate_refused,
    error_chain, user_agent,
};
use crate::retry::RetryAfter;
use crate::secret::SecretValue;

impl OAuth2Client {
    pub(super) async fn obtain(&self, http: &HttpConfig) -> Result<WebToken> {
        let secret = self.read_secret()?;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        if let Some(audience) = &self.audience {
            form.push(("audience", audience));
        }
        let mut authorization = None;
        match self.auth {
            ClientAuth::Basic => {
                let pair =
                    Zeroizing::new(format!("{}:{}", encode(&self.client_id), encode(&secret)));
                let header = Zeroizing::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
                ));
                let mut value = reqwest::header::HeaderValue::from_str(&header)
                    .context("the client id or secret cannot go in an HTTP header")
                    .context(Failure::Usage)?;
                value.set_sensitive(true);
                authorization = Some(value);
            }
            ClientAuth::Body => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", &secret));
            }
        }
        let body = Zeroizing::new(
            form.iter()
                .map(|(name, value)| format!("{name}={}", encode(value)))
                .collect::<Vec<_>>()
                .join("&"),
        );

        let client = http.client().context("the OAuth2 token request")?;
        let mut request = client
            .post(&self.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header("user-agent", user_agent(None))
            .body(body.as_bytes().to_vec());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.map_err(|err| {
            let failed = format!("requesting a token from {}", self.token_url);
            match certificate_refused(&err) {
                true => certificate_error(error_chain(&err)).context(failed),
                false => anyhow!(error_chain(&err))
                    .context(failed)
                    .context(Failure::Transient),
            }
        })?;

        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(RetryAfter::from_header);
        let body = read_capped(response)
            .await
            .with_context(|| format!("reading the answer of {}", self.token_url))?;
        if status != 200 {
            // A server that echoes the request must not make the log carry the secret.
            let detail = describe_error(&body, &[&self.client_id], &secret);
            let mut err = anyhow!("{} answered HTTP {status}{detail}", self.token_url);
            if let Some(wait) = retry_after {
                err = err.context(wait);
            }
            let class = match status {
                408 | 429 | 500..=599 => Failure::Transient,
                _ => Failure::Auth,
            };
            return Err(err).context(class);
        }
        parse_token(&body)
            .with_context(|| format!("the answer of {}", self.token_url))
            .context(Failure::Auth)
    }

    /// The secret, from its file, without the line break a Kubernetes Secret or `echo`
    /// tends to leave at the end.
    fn read_secret(&self) -> Result<Zeroizing<String>> {
        let path = &self.secret_file;
        let bytes = Zeroizing::new(
            super::token_file::read(path)
                .with_context(|| format!("reading --oauth2-client-secret-file {}", path.display()))
                .context(Failure::Auth)?,
        );
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| {
                anyhow!(
                    "--oauth2-client-secret-file {} is not UTF-8",
                    path.display()
                )
            })
            .context(Failure::Auth)?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(anyhow!(
                "--oauth2-client-secret-file {} is empty",
                path.display()
            ))
            .context(Failure::Auth);
        }
        Ok(Zeroizing::new(trimmed.to_owned()))
    }
}

/// `application/x-www-form-urlencoded` for one name or value.
fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The body, refused past [`MAX_RESPONSE_BYTES`] so a broken endpoint cannot make the
/// process buffer without end. Kept in zeroizing memory: it holds the token.
async fn read_capped(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| anyhow!(error_chain(&err)))
        .context(Failure::Transient)?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(anyhow!(ResponseTooLarge)).context(Failure::Auth);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    /// Seconds; some servers send it as a string.
    expires_in: Option<serde_json::Value>,
}

/// Reads a token endpoint's successful answer (RFC 6749 §5.1). Public for the fuzz target.
pub fn parse_token(body: &[u8]) -> Result<WebToken> {
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| anyhow!("the token response is not the JSON object RFC 6749 describes"))?;
    let token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("the token response has no access_token"))?;
    let expires_in = parsed.expires_in.and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    Ok(WebToken::new(SecretValue::from_string(token), expires_in))
}

/// `: invalid_client (Client authentication failed)`, from an RFC 6749 §5.2 error body;
/// nothing for a body that is not one (an HTML error page is not worth showing). Only the
/// two documented fields are shown, cut short, without control characters, and with the
/// client secret redacted first in every spelling the request carried it in.
fn describe_error(body: &[u8], client_id: &[&str], secret: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<String>,
        error_description: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return String::new();
    };
    let forms = secret_forms(client_id, secret);
    let clean = |text: String, max: usize| -> String {
        let mut text = Zeroizing::new(text);
        for form in forms.iter() {
            *text = text.replace(form.as_str(), "<redacted>");
        }
        text.chars().filter(|c| !c.is_control()).take(max).collect()
    };
    match (parsed.error, parsed.error_description) {
        (Some(code), Some(text)) => format!(": {} ({})", clean(code, 64), clean(text, 300)),
        (Some(code), None) => format!(": {}", clean(code, 64)),
        (None, Some(text)) => format!(": {}", clean(text, 300)),
        (None, None) => String::new(),
    }
}

/// The secret as the request sent it and as a server might echo it: as is, form-encoded
/// (`+` or `%20` for a space), and inside the Basic credentials (`id:secret` in base64,
/// encoded or not), longest first so a longer spelling is redacted whole.
fn secret_forms(client_ids: &[&str], secret: &str) -> Zeroizing<Vec<String>> {
    let base64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let encoded = encode(secret);
    let mut forms = vec![
        secret.to_owned(),
        encoded.clone(),
        encoded.replace('+', "%20"),
    ];
    for id in client_ids {
        forms.push(base64(&format!("{}:{encoded}", encode(id))));
        forms.push(base64(&format!("{id}:{secret}")));
    }
    forms.retain(|form| !form.is_empty());
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    forms.dedup();
    Zeroizing::new(forms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_responses_as_servers_send_them() {
        let token =
            parse_token(br#"{"access_token":"abc","token_type":"Bearer","expires_in":3599}"#)
                .unwrap();
        assert_eq!(token.value.expose(), b"abc");
        assert!(token.lifetime().unwrap() > Duration::from_secs(3590));
        let token = parse_token(br#"{"access_token":"abc","expires_in":"60"}"#).unwrap();
        assert!(token.lifetime().unwrap() <= Duration::from_secs(60));
        assert!(parse_token(br#"{"token_type":"Bearer"}"#).is_err());
        assert!(parse_token(b"<html>").is_err());
    }

    #[test]
    fn error_bodies_show_only_the_documented_fields() {
        assert_eq!(
            describe_error(
                br#"{"error":"invalid_client","error_description":"bad\nsecret","trace_id":"x"}"#,
                &["app"],
                "s3cr3t"
            ),
            ": invalid_client (badsecret)"
        );
        assert_eq!(describe_error(b"<html>oops</html>", &["app"], "s3cr3t"), "");
    }

    #[test]
    fn an_echoed_secret_is_redacted_in_every_spelling_before_the_cut() {
        let (id, secret) = ("app id", "hunter2 sentinel&x=y");
        let encoded = encode(secret);
        let basic = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
        for echoed in [
            secret.to_owned(),
            encoded.clone(),
            encoded.replace('+', "%20"),
            basic(format!("{}:{encoded}", encode(id))),
            basic(format!("{id}:{secret}")),
        ] {
            // Placed where the 300-character cut would split it.
            let description = format!("{}{echoed} trailing", "x".repeat(290));
            let body =
                serde_json::json!({"error": "invalid_client", "error_description": description});
            let shown = describe_error(body.to_string().as_bytes(), &[id], secret);
            for piece in echoed.as_bytes().windows(8) {
                let piece = String::from_utf8_lossy(piece);
                assert!(!shown.contains(&*piece), "{echoed:?} shows as {shown:?}");
            }
        }
    }

    #[test]
    fn credentials_are_form_encoded_before_basic() {
        assert_eq!(encode("id with:colon&"), "id+with%3Acolon%26");
    }
}
