//! Secrets Manager and STS errors, each tagged with the exit class an operator needs.
//!
//! The SDK's own messages are kept, by `Display` only (see [`error_chain`]): its `Debug`
//! holds the raw response, which may carry a secret when a successful answer fails to
//! parse.

use std::error::Error as StdError;

use anyhow::anyhow;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use crate::exit::Failure;
use crate::net::{ResponseTooLarge, certificate_error, certificate_refused, error_chain};
use crate::retry::RetryAfter;

/// Tags an SDK error with the exit class an operator needs, keeping the SDK's own
/// messages (see [`error_chain`] for why never its `Debug`).
pub(super) fn classify<E>(err: SdkError<E>) -> anyhow::Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    classify_with(err, classify_code)
}

/// [`classify`] for any AWS service, with that service's error codes.
pub(super) fn classify_with<E>(
    err: SdkError<E>,
    by_code: fn(Option<&str>, u16) -> Failure,
) -> anyhow::Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    if has_cause::<http_body_util::LengthLimitError>(&err) {
        return anyhow::Error::new(ResponseTooLarge).context(Failure::BadData);
    }
    if certificate_refused(&err) {
        return certificate_error(error_chain(&err));
    }
    let class = match &err {
        SdkError::ServiceError(service) => {
            by_code(service.err().code(), service.raw().status().as_u16())
        }
        SdkError::TimeoutError(_) => Failure::Transient,
        SdkError::ResponseError(_) => Failure::Transient,
        SdkError::DispatchFailure(failure) => match credentials_class(&err) {
            Some(class) => class,
            None if failure.is_user() => Failure::Usage,
            None => Failure::Transient,
        },
        SdkError::ConstructionFailure(_) => credentials_class(&err).unwrap_or(Failure::Internal),
        _ => Failure::Internal,
    };
    let retry_after = match &err {
        SdkError::ServiceError(service) => service
            .raw()
            .headers()
            .get("retry-after")
            .and_then(RetryAfter::from_header),
        _ => None,
    };
    let err = anyhow!(match &err {
        // The service's own code and message, the same way for the errors the SDK models
        // and those it does not (GetSecretValue's AccessDeniedException is one: its
        // Display would otherwise be the SDK's `Error { code: .., message: .. }` dump). An
        // answer without a code is one the SDK could not read: its chain says why.
        SdkError::ServiceError(service) if service.err().code().is_some() => format!(
            "service error: {}: {}",
            service.err().code().unwrap_or_default(),
            service.err().message().unwrap_or("(no message)")
        ),
        _ => error_chain(&err),
    });
    match retry_after {
        Some(wait) => err.context(wait).context(class),
        None => err.context(class),
    }
}

/// Secrets Manager's error codes (the same for every operation), then the HTTP status.
fn classify_code(code: Option<&str>, status: u16) -> Failure {
    match code {
        // Missing, scheduled for deletion, or a version not in a usable state.
        Some("ResourceNotFoundException" | "InvalidRequestException") => Failure::NotFound,
        // Not allowed to read it, or to use its KMS key.
        Some("AccessDeniedException" | "AccessDenied" | "DecryptionFailure") => Failure::Denied,
        Some("InvalidParameterException" | "ValidationException") => Failure::Usage,
        Some(
            "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "ExpiredTokenException"
            | "ExpiredToken",
        ) => Failure::Auth,
        Some(
            "InternalServiceError"
            | "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "ServiceUnavailable"
            | "ServiceUnavailableException",
        ) => Failure::Transient,
        _ if status >= 500 || status == 429 => Failure::Transient,
        _ if status == 401 => Failure::Auth,
        _ if status == 403 => Failure::Denied,
        _ => Failure::Internal,
    }
}

pub(super) fn has_cause<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if current.is::<T>() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Credential failures surface inside dispatch or construction errors. A provider that
/// could not reach its endpoint is transient; anything else is an identity failure.
pub(super) fn credentials_class(err: &(dyn StdError + 'static)) -> Option<Failure> {
    let mut cause = Some(err);
    let mut found = None;
    while let Some(current) = cause {
        if let Some(creds) = current.downcast_ref::<CredentialsError>() {
            found = Some(match creds {
                CredentialsError::ProviderTimedOut(_) => Failure::Transient,
                _ => Failure::Auth,
            });
        } else if found.is_some()
            && let Some(connector) =
                current.downcast_ref::<aws_sdk_secretsmanager::error::ConnectorError>()
            && (connector.is_io() || connector.is_timeout())
        {
            return Some(Failure::Transient);
        }
        cause = current.source();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_exit_classes() {
        // Responses carry the code in their error metadata for every operation alike.
        for (code, status, class) in [
            ("ResourceNotFoundException", 400, Failure::NotFound),
            ("AccessDeniedException", 400, Failure::Denied),
            ("DecryptionFailure", 400, Failure::Denied),
            ("InvalidRequestException", 400, Failure::NotFound),
            ("InvalidParameterException", 400, Failure::Usage),
            ("UnrecognizedClientException", 400, Failure::Auth),
            ("ThrottlingException", 400, Failure::Transient),
            ("InternalServiceError", 500, Failure::Transient),
            ("Whatever", 503, Failure::Transient),
            ("Whatever", 403, Failure::Denied),
            ("Whatever", 400, Failure::Internal),
        ] {
            assert_eq!(classify_code(Some(code), status), class, "{code} {status}");
        }
    }
}
