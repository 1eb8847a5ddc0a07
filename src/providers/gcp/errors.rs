//! Secret Manager errors, each tagged with the exit class an operator needs, with the
//! service's own message (scrubbed of anything shaped like a token) and its requested
//! retry delay.

use std::time::Duration;

use anyhow::anyhow;
use google_cloud_auth::errors::CredentialsError;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::{Code, StatusDetails};

use crate::exit::Failure;
use crate::identity::google::scrub;
use crate::net::{certificate_error, certificate_refused, error_chain};
use crate::retry::RetryAfter;

/// Tags a Secret Manager error with its exit class, keeping the service's own message.
pub(super) fn classify(err: GaxError) -> anyhow::Error {
    if certificate_refused(&err) {
        return certificate_error(scrub(&error_chain(&err)));
    }
    let class = error_class(&err);
    let text = if err.is_deserialization() {
        // serde's messages can quote the response, and a response holds the secret.
        "the response could not be parsed (the parser's details are withheld: they can \
         quote the response, which holds the secret)"
            .to_owned()
    } else {
        scrub(&error_chain(&err))
    };
    let mut out = anyhow!(text);
    if class == Failure::Transient
        && let Some(wait) = retry_after(&err)
    {
        out = out.context(wait);
    }
    out.context(class)
}

fn error_class(err: &GaxError) -> Failure {
    if err.is_authentication() {
        let transient = std::error::Error::source(err)
            .and_then(|source| source.downcast_ref::<CredentialsError>())
            .is_some_and(CredentialsError::is_transient);
        return if transient {
            Failure::Transient
        } else {
            Failure::Auth
        };
    }
    if let Some(status) = err.status() {
        match status.code {
            Code::NotFound => return Failure::NotFound,
            // A version that is disabled or destroyed cannot be read, like a missing one.
            Code::FailedPrecondition => return Failure::NotFound,
            Code::PermissionDenied => return Failure::Denied,
            Code::Unauthenticated => return Failure::Auth,
            Code::ResourceExhausted
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Internal => return Failure::Transient,
            Code::InvalidArgument | Code::OutOfRange => return Failure::Usage,
            _ => {}
        }
    }
    if let Some(code) = err.http_status_code() {
        return match code {
            408 | 429 | 500..=599 => Failure::Transient,
            401 => Failure::Auth,
            403 => Failure::Denied,
            404 => Failure::NotFound,
            _ => Failure::Internal,
        };
    }
    if err.is_timeout() || err.is_connect() || err.is_io() || err.is_exhausted() {
        return Failure::Transient;
    }
    if err.is_transport() {
        return Failure::Transient;
    }
    Failure::Internal
}

/// The server's requested delay: a `google.rpc.RetryInfo` detail, else `Retry-After`.
fn retry_after(err: &GaxError) -> Option<RetryAfter> {
    let from_detail = err.status().and_then(|status| {
        status.details.iter().find_map(|detail| match detail {
            StatusDetails::RetryInfo(info) => info
                .retry_delay
                .and_then(|delay| Duration::try_from(delay).ok()),
            _ => None,
        })
    });
    from_detail.map(RetryAfter).or_else(|| {
        err.http_headers()?
            .get("retry-after")?
            .to_str()
            .ok()
            .and_then(RetryAfter::from_header)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_exit_classes() {
        use google_cloud_gax::error::rpc::Status;
        let service = |code: Code| GaxError::service(Status::default().set_code(code));
        assert_eq!(error_class(&service(Code::NotFound)), Failure::NotFound);
        assert_eq!(
            error_class(&service(Code::PermissionDenied)),
            Failure::Denied
        );
        assert_eq!(error_class(&service(Code::Unauthenticated)), Failure::Auth);
        for code in [
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::DeadlineExceeded,
        ] {
            assert_eq!(error_class(&service(code)), Failure::Transient, "{code:?}");
        }
        let http = |status: u16| {
            GaxError::http(
                status,
                http::HeaderMap::new(),
                bytes::Bytes::from_static(b"<html>"),
            )
        };
        assert_eq!(error_class(&http(502)), Failure::Transient);
        assert_eq!(error_class(&http(404)), Failure::NotFound);
        assert_eq!(error_class(&http(418)), Failure::Internal);
        assert_eq!(
            error_class(&GaxError::authentication(CredentialsError::from_msg(
                false, "nope"
            ))),
            Failure::Auth
        );
        assert_eq!(
            error_class(&GaxError::authentication(CredentialsError::from_msg(
                true, "later"
            ))),
            Failure::Transient
        );
    }

    #[test]
    fn retry_after_comes_from_retry_info_or_the_header() {
        let mut headers = http::HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        let err = GaxError::http(429, headers, bytes::Bytes::new());
        assert_eq!(retry_after(&err), Some(RetryAfter(Duration::from_secs(3))));

        let body = bytes::Bytes::from_static(
            br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED",
                "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2s"}]}}"#,
        );
        let status = google_cloud_gax::error::rpc::Status::try_from(&body).unwrap();
        let err = GaxError::service(status);
        assert_eq!(retry_after(&err), Some(RetryAfter(Duration::from_secs(2))));
    }
}
