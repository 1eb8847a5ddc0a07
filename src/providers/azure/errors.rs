//! Key Vault and Entra ID errors, each tagged with the exit class an operator needs and
//! given a one-line text that names the credential in use and, for Entra's AADSTS codes,
//! what to check.

use anyhow::anyhow;
use azure_core::error::{Error as AzureError, ErrorKind, ErrorResponse};
use azure_core::http::{RawResponse, headers};

use crate::exit::Failure;
use crate::identity::azure::Identity;
use crate::net::{ResponseTooLarge, certificate_error, certificate_refused, error_chain};
use crate::retry::RetryAfter;

/// Tags an SDK error with its exit class and gives it a one-line, `Display`-only text
/// that never quotes a response body the service did not shape as an error.
pub(super) fn classify(err: &AzureError, identity: &Identity) -> anyhow::Error {
    if certificate_refused(err) {
        return certificate_error(error_chain(err));
    }
    let verdict = Verdict::of(err);
    let mut text = match verdict.http {
        // Key Vault's own error: status, code and message, parsed from the JSON error.
        Some((status, raw)) if !verdict.credential => describe_http(status, raw),
        _ => error_chain(err),
    };
    if verdict.challenge_mismatch {
        // The SDK's message names its own option; name ours instead.
        text = format!(
            "{}: the vault's authentication challenge names a resource outside the vault's \
             domain. If this host is a private-endpoint alias, a custom DNS name or a test \
             server, and only then, pass --azure-skip-challenge-resource-check",
            text.split(". Set verify_challenge_resource")
                .next()
                .unwrap_or(&text)
        );
    }
    if verdict.class == Failure::Auth {
        text.push_str(&identity.explain(verdict.entra_code.as_deref()));
    }
    let mut text = text.replace(['\r', '\n'], " ");
    while text.contains("  ") {
        text = text.replace("  ", " ");
    }
    let mut error = anyhow!(text);
    if let Some(wait) = verdict.retry_after {
        error = error.context(wait);
    }
    error.context(verdict.class)
}

/// What an error chain says, read from the SDK's typed error kinds.
struct Verdict<'e> {
    class: Failure,
    /// The error came from the credential (Entra ID, managed identity, a CLI).
    credential: bool,
    http: Option<(u16, Option<&'e RawResponse>)>,
    entra_code: Option<String>,
    retry_after: Option<RetryAfter>,
    challenge_mismatch: bool,
}

impl<'e> Verdict<'e> {
    fn of(err: &'e AzureError) -> Verdict<'e> {
        let mut credential = false;
        let mut http = None;
        let mut entra_code = None;
        let mut transport = false;
        let mut too_large = false;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(current) = cause {
            too_large |= current.is::<ResponseTooLarge>();
            if let Some(azure) = current.downcast_ref::<AzureError>() {
                match azure.kind() {
                    ErrorKind::Credential => credential = true,
                    ErrorKind::Connection | ErrorKind::Io => transport = true,
                    ErrorKind::HttpResponse {
                        status,
                        error_code,
                        raw_response,
                    } if http.is_none() => {
                        http = Some((u16::from(*status), raw_response.as_deref()));
                        entra_code = error_code.clone();
                    }
                    _ => {}
                }
            }
            cause = current.source();
        }
        // The only typed trace of a refused challenge is its message (azure_security_keyvault_*
        // 1.0 returns ErrorKind::Other); it is matched only to improve the hint.
        let challenge_mismatch = matches!(err.kind(), ErrorKind::Other)
            && err.to_string().contains("verify_challenge_resource");
        let retry_after = http
            .and_then(|(_, raw)| raw)
            .and_then(|raw| raw.headers().get_optional_str(&headers::RETRY_AFTER))
            .and_then(RetryAfter::from_header);
        let class = match http.map(|(status, _)| status) {
            _ if too_large => Failure::BadData,
            Some(429 | 500..=599) => Failure::Transient,
            _ if transport => Failure::Transient,
            _ if credential => Failure::Auth,
            _ if challenge_mismatch => Failure::Usage,
            Some(404) => Failure::NotFound,
            Some(403) => Failure::Denied,
            Some(401) => Failure::Auth,
            Some(400)
                if kv_code(http.and_then(|(_, raw)| raw)).as_deref() == Some("BadParameter") =>
            {
                Failure::Usage
            }
            _ => Failure::Internal,
        };
        Verdict {
            class,
            credential,
            http,
            entra_code: entra_code.filter(|_| credential),
            retry_after,
            challenge_mismatch,
        }
    }
}

fn kv_code(raw: Option<&RawResponse>) -> Option<String> {
    let body: ErrorResponse = serde_json::from_slice(raw?.body()).ok()?;
    body.error?.code
}

/// `403 Forbidden (AccessDenied): The user, group or application ... does not have secrets
/// get permission ...`; a body that is not Key Vault's JSON error is not shown.
fn describe_http(status: u16, raw: Option<&RawResponse>) -> String {
    let parsed: Option<ErrorResponse> = raw.and_then(|raw| serde_json::from_slice(raw.body()).ok());
    match parsed.and_then(|body| body.error) {
        Some(detail) => {
            let mut codes = Vec::new();
            codes.extend(detail.code.clone());
            let mut inner = detail.inner_error.as_ref();
            while let Some(current) = inner {
                codes.extend(current.code.clone());
                inner = current.inner_error.as_deref();
            }
            format!(
                "HTTP {status} {}: {}",
                codes.join("/"),
                detail.message.as_deref().unwrap_or("(no message)")
            )
        }
        None => format!(
            "HTTP {status} with a body that is not a Key Vault error ({} bytes, not shown)",
            raw.map_or(0, |raw| raw.body().len())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::StatusCode;
    use azure_core::http::headers::Headers;
    use std::sync::Arc;

    fn raw(status: u16, headers: &[(&'static str, &str)], body: &str) -> RawResponse {
        let mut map = Headers::new();
        for (name, value) in headers {
            map.insert(*name, value.to_string());
        }
        RawResponse::from_bytes(StatusCode::from(status), map, body.to_owned())
    }

    fn http_error(status: u16, headers: &[(&'static str, &str)], body: &str) -> AzureError {
        AzureError::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::from(status),
                error_code: None,
                raw_response: Some(Box::new(raw(status, headers, body))),
            },
            "message",
        )
    }

    fn identity() -> Identity {
        Identity {
            kind: "WorkloadIdentity",
            inputs: "token file /t for client c in tenant t at https://login".into(),
            trimmed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    #[test]
    fn key_vault_answers_map_to_exit_classes() {
        let not_found = r#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) db was not found in this key vault."}}"#;
        let err = classify(&http_error(404, &[], not_found), &identity());
        assert_eq!(Failure::of(&err), Failure::NotFound);
        assert_eq!(
            format!("{err:#}"),
            "secret not found: HTTP 404 SecretNotFound: A secret with (name/id) db was not found in this key vault."
        );

        let forbidden = r#"{"error":{"code":"Forbidden","message":"not\r\nallowed","innererror":{"code":"AccessDenied"}}}"#;
        let err = classify(&http_error(403, &[], forbidden), &identity());
        assert_eq!(Failure::of(&err), Failure::Denied);
        assert!(format!("{err:#}").ends_with("HTTP 403 Forbidden/AccessDenied: not allowed"));

        let err = classify(&http_error(429, &[("retry-after", "7")], "{}"), &identity());
        assert_eq!(Failure::of(&err), Failure::Transient);
        assert_eq!(
            err.downcast_ref::<RetryAfter>(),
            Some(&RetryAfter(std::time::Duration::from_secs(7)))
        );
        assert_eq!(
            Failure::of(&classify(&http_error(503, &[], ""), &identity())),
            Failure::Transient
        );
        assert_eq!(
            Failure::of(&classify(&http_error(401, &[], ""), &identity())),
            Failure::Auth
        );
        assert_eq!(
            Failure::of(&classify(&http_error(418, &[], ""), &identity())),
            Failure::Internal
        );
        let bad = r#"{"error":{"code":"BadParameter","message":"bad version"}}"#;
        assert_eq!(
            Failure::of(&classify(&http_error(400, &[], bad), &identity())),
            Failure::Usage
        );

        let connection = AzureError::with_message(ErrorKind::Connection, "refused");
        assert_eq!(
            Failure::of(&classify(&connection, &identity())),
            Failure::Transient
        );
    }

    #[test]
    fn bodies_that_are_not_key_vault_errors_are_never_quoted() {
        let err = classify(
            &http_error(502, &[], "<html>sentinel-body</html>"),
            &identity(),
        );
        let text = format!("{err:#}");
        assert!(!text.contains("sentinel-body"), "{text}");
        assert!(text.contains("HTTP 502"), "{text}");
    }

    #[test]
    fn entra_rejections_are_identity_failures_with_advice() {
        let entra = AzureError::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::BadRequest,
                error_code: Some("700211".into()),
                raw_response: None,
            },
            "AADSTS700211: No matching federated identity record found for presented assertion issuer.",
        );
        let err = AzureError::with_error(
            ErrorKind::Credential,
            entra,
            "ClientAssertionCredential authentication failed.",
        );
        let err = classify(&err, &identity());
        assert_eq!(Failure::of(&err), Failure::Auth);
        let text = format!("{err:#}");
        assert!(text.contains("AADSTS700211"), "{text}");
        assert!(text.contains("OIDC issuer"), "{text}");
        assert!(text.contains("whitespace"), "{text}");

        // Entra throttled or down: the core retries.
        let busy = AzureError::with_error(
            ErrorKind::Credential,
            http_error(503, &[("retry-after", "2")], "{}"),
            "ClientAssertionCredential authentication failed.",
        );
        let err = classify(&busy, &identity());
        assert_eq!(Failure::of(&err), Failure::Transient);
        assert!(err.downcast_ref::<RetryAfter>().is_some());
    }
}
