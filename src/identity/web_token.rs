//! Web-identity tokens obtained in-process, for AWS STS `AssumeRoleWithWebIdentity`.
//!
//! IRSA hands a pod a token file. Off EKS there is no such file, and the usual answer is a
//! second sidecar plus a mutating webhook that fetch a token and write one. An init
//! container needs neither: it can ask the token's issuer itself, exchange the token once,
//! and exit; or, in `token` mode, keep a file fresh for an app whose own AWS SDK reads
//! `AWS_WEB_IDENTITY_TOKEN_FILE`.
//!
//! ```text
//! --aws-token-source gcp-metadata --aws-token-audience sts.amazonaws.com
//!     a Google ID token from the GKE/GCE metadata server (GCE_METADATA_HOST honoured)
//! --aws-token-source oauth2-client-credentials --oauth2-token-url https://idp/token
//!     --oauth2-client-id ID --oauth2-client-secret-file /var/run/idp/secret [--oauth2-scope S]
//!     an access token from any OAuth2 server (Entra ID, Okta, Keycloak, ...)
//! ```
//!
//! Every [`TokenSource::obtain`] makes one attempt, tags its errors with a [`Failure`]
//! like a provider does, and returns the token in zeroizing memory; it is never logged.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;

use super::options::{ClientAuth, OAuth2Args, TokenSourceKind};
use crate::exit::Failure;
use crate::net::HttpConfig;
use crate::secret::SecretValue;

/// Where a web-identity token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// The metadata server's ID token for `audience`.
    GcpMetadata { audience: String },
    /// An OAuth2 access token from the client-credentials grant (RFC 6749 §4.4).
    OAuth2(OAuth2Client),
}

/// The client-credentials request, checked. The secret stays in its file, read afresh for
/// every request so a rotated secret is picked up.
#[derive(Debug, Clone)]
pub struct OAuth2Client {
    pub token_url: String,
    pub client_id: String,
    pub secret_file: PathBuf,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub auth: ClientAuth,
}

/// A token and, when known, when it expires: from the issuer's `expires_in`, else the
/// JWT's `exp` claim.
pub struct WebToken {
    pub value: SecretValue,
    pub expires_at: Option<SystemTime>,
}

/// The longest lifetime a token is taken to have, whatever its issuer says: web-identity
/// tokens last minutes to hours (STS accepts up to 12 hours of session), and a larger or
/// absurd figure (`expires_in` near 2^64) must neither overflow the clock nor postpone
/// the next refresh for years.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

impl WebToken {
    /// Builds a token from what an issuer returned: its lifetime in seconds when the
    /// response said, otherwise read from the token itself; at most [`MAX_LIFETIME`].
    pub fn new(value: SecretValue, expires_in: Option<u64>) -> WebToken {
        let now = SystemTime::now();
        let expires_at = expires_in
            .and_then(|seconds| now.checked_add(Duration::from_secs(seconds).min(MAX_LIFETIME)))
            .or_else(|| jwt_expiry(value.expose()));
        WebToken { value, expires_at }
    }

    /// Time left before expiry, if the expiry is known; at most [`MAX_LIFETIME`].
    pub fn lifetime(&self) -> Option<Duration> {
        self.expires_at.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(MAX_LIFETIME)
        })
    }
}

impl TokenSource {
    /// Checks the options for `kind`; a missing or misplaced option is a usage error.
    pub fn from_args(
        kind: TokenSourceKind,
        audience: Option<&str>,
        oauth2: &OAuth2Args,
        audience_flag: &str,
    ) -> Result<TokenSource> {
        let source = match kind {
            TokenSourceKind::GcpMetadata => {
                let Some(audience) = audience.filter(|a| !a.trim().is_empty()) else {
                    bail!(
                        "the gcp-metadata token source needs {audience_flag}: the audience \
                         the AWS identity provider expects (often sts.amazonaws.com or the \
                         IAM OIDC provider's client ID)"
                    );
                };
                if oauth2.oauth2_token_url.is_some() {
                    bail!("--oauth2-* options are for the oauth2-client-credentials source");
                }
                TokenSource::GcpMetadata {
                    audience: audience.trim().to_owned(),
                }
            }
            TokenSourceKind::Oauth2ClientCredentials => {
                if audience.is_some() {
                    bail!(
                        "{audience_flag} is for the gcp-metadata source; an OAuth2 token's \
                         audience comes from --oauth2-scope or --oauth2-audience"
                    );
                }
                TokenSource::OAuth2(OAuth2Client::from_args(oauth2)?)
            }
        };
        Ok(source)
    }

    /// One attempt at a token.
    pub async fn obtain(&self, http: &HttpConfig) -> Result<WebToken> {
        let token = match self {
            TokenSource::GcpMetadata { audience } => gcp_id_token(audience, http).await,
            TokenSource::OAuth2(client) => client.obtain(http).await,
        }?;
        if token.value.is_empty() {
            return Err(anyhow!("{} returned an empty token", self.describe()))
                .context(Failure::Auth);
        }
        Ok(token)
    }

    /// The source's name on the command line.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenSource::GcpMetadata { .. } => "gcp-metadata",
            TokenSource::OAuth2(_) => "oauth2-client-credentials",
        }
    }

    /// Where the token comes from, for logs and errors (no secret in it).
    pub fn describe(&self) -> String {
        match self {
            TokenSource::GcpMetadata { audience } => {
                format!("the Google metadata server (ID token for audience {audience})")
            }
            TokenSource::OAuth2(client) => format!(
                "the OAuth2 token endpoint {} (client {})",
                client.token_url, client.client_id
            ),
        }
    }
}

#[cfg(feature = "gcp")]
async fn gcp_id_token(audience: &str, http: &HttpConfig) -> Result<WebToken> {
    let token = super::google::id_token(audience, http.attempt_timeout).await?;
    Ok(WebToken::new(token, None))
}

#[cfg(not(feature = "gcp"))]
async fn gcp_id_token(_audience: &str, _http: &HttpConfig) -> Result<WebToken> {
    Err(anyhow!(
        "this build has no Google support; the gcp-metadata token source needs the gcp \
         feature (the default image has it)"
    ))
    .context(Failure::Usage)
}

impl OAuth2Client {
    fn from_args(args: &OAuth2Args) -> Result<OAuth2Client> {
        let missing: Vec<&str> = [
            ("--oauth2-token-url", args.oauth2_token_url.is_none()),
            ("--oauth2-client-id", args.oauth2_client_id.is_none()),
            (
                "--oauth2-client-secret-file",
                args.oauth2_client_secret_file.is_none(),
            ),
        ]
        .into_iter()
        .filter_map(|(flag, absent)| absent.then_some(flag))
        .collect();
        if !missing.is_empty() {
            bail!(
                "the oauth2-client-credentials token source needs {}",
                missing.join(", ")
            );
        }
        let token_url = args.oauth2_token_url.clone().unwrap_or_default();
        crate::net::https_or_loopback("--oauth2-token-url", &token_url, "the client secret")?;
        let client_id = args.oauth2_client_id.clone().unwrap_or_default();
        if client_id.trim().is_empty() {
            bail!("--oauth2-client-id is empty");
        }
        Ok(OAuth2Client {
            token_url,
            client_id,
            secret_file: args.oauth2_client_secret_file.clone().unwrap_or_default(),
            scope: args.oauth2_scope.clone().filter(|s| !s.trim().is_empty()),
            audience: args
                .oauth2_audience
                .clone()
                .filter(|s| !s.trim().is_empty()),
            auth: args.oauth2_client_auth,
        })
    }
}

/// The `exp` claim of a JWT, read without verifying anything: only to schedule a refresh.
/// Opaque tokens and malformed JWTs have no known expiry.
pub fn jwt_expiry(token: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(token).ok()?;
    let mut parts = text.trim().split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?,
    );
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<f64>,
    }
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.exp.filter(|e| e.is_finite() && *e > 0.0)?;
    // A time the clock cannot hold is no known expiry, never an overflow.
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(exp).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> Vec<u8> {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.c2ln",
            engine.encode(r#"{"alg":"RS256"}"#),
            engine.encode(claims)
        )
        .into_bytes()
    }

    #[test]
    fn expiry_comes_from_the_jwt_when_the_issuer_gives_no_lifetime() {
        let token = WebToken::new(SecretValue::new(jwt(r#"{"exp":4102444800}"#)), None);
        assert_eq!(
            token.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(4_102_444_800))
        );
        let token = WebToken::new(SecretValue::new(jwt(r#"{"exp":4102444800}"#)), Some(60));
        let left = token.lifetime().unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
    }

    #[test]
    fn absurd_lifetimes_are_clamped_not_overflowed() {
        // Found in review: u64::MAX seconds overflowed SystemTime and panicked.
        for expires_in in [Some(u64::MAX), Some(u64::MAX / 2), Some(10_000_000_000)] {
            let token = WebToken::new(SecretValue::new(b"opaque".to_vec()), expires_in);
            assert!(token.lifetime().unwrap() <= MAX_LIFETIME);
        }
        for exp in [
            "1e300",
            "18446744073709551615",
            "9.3e18",
            "1.7976931348623157e308",
        ] {
            let claims = format!(r#"{{"exp":{exp}}}"#);
            let token = WebToken::new(SecretValue::new(jwt(&claims)), None);
            // Too far for the clock: no known expiry. Else known, and clamped.
            assert!(
                token.lifetime().is_none_or(|left| left <= MAX_LIFETIME),
                "{exp}"
            );
        }
    }

    #[test]
    fn opaque_and_malformed_tokens_have_no_expiry() {
        assert_eq!(jwt_expiry(b"opaque-access-token"), None);
        assert_eq!(jwt_expiry(b"a.b"), None);
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(jwt_expiry(&jwt(r#"{"exp":"soon"}"#)), None);
        assert_eq!(jwt_expiry(&jwt(r#"{"exp":-5}"#)), None);
        assert_eq!(jwt_expiry(b"a.!!!.c"), None);
    }

    #[test]
    fn each_source_names_what_it_needs() {
        let none = OAuth2Args::default();
        let err = TokenSource::from_args(TokenSourceKind::GcpMetadata, None, &none, "--audience")
            .unwrap_err();
        assert!(format!("{err:#}").contains("--audience"));
        let err =
            TokenSource::from_args(TokenSourceKind::Oauth2ClientCredentials, None, &none, "-")
                .unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("--oauth2-token-url, --oauth2-client-id, --oauth2-client-secret-file")
        );
        let source = TokenSource::from_args(
            TokenSourceKind::GcpMetadata,
            Some(" sts.amazonaws.com "),
            &none,
            "--audience",
        )
        .unwrap();
        assert!(source.describe().contains("audience sts.amazonaws.com"));
    }
}
