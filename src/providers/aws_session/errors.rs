//! What any AWS SDK call returns, tagged with the exit class an operator needs: the
//! transport, the credential chain and the service's answer, the service's error codes
//! given by each provider's own table.
//!
//! The SDK's own messages are kept, by `Display` only (see [`error_chain`]): its `Debug`
//! holds the raw response, which may carry a secret when a successful answer fails to
//! parse.

use std::error::Error as StdError;

use anyhow::anyhow;
use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
use aws_smithy_schema::serde::SerdeError;
use aws_smithy_types::error::ErrorMetadata;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::exit::Failure;
use crate::net::{ResponseTooLarge, certificate_error, certificate_refused, error_chain};
use crate::retry::RetryAfter;

/// Tags an SDK error of any AWS service with its exit class, `by_code` giving the class of
/// the service's own error codes (and HTTP status).
pub(crate) fn classify_with<E>(
    err: SdkError<E, HttpResponse>,
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
        // A whole answer the client could not read (an HTML page, JSON of the wrong shape,
        // a status no operation models): the newer, schema-based clients report it here,
        // like a body cut short, but it is no transport failure and a retry repeats it;
        // unless the status says the server is busy or failing (a proxy's 503 page).
        SdkError::ResponseError(response)
            if (has_cause::<SerdeError>(&err) || has_cause::<ErrorMetadata>(&err))
                && !matches!(response.raw().status().as_u16(), 429 | 500..) =>
        {
            Failure::Internal
        }
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

/// The error codes every AWS service answers with alike (signatures, expired tokens,
/// denial, validation, throttling), then the HTTP status; a service's own table handles
/// its codes first and leaves the rest to this.
pub(crate) fn common_class(code: Option<&str>, status: u16) -> Failure {
    match code {
        Some("AccessDeniedException" | "AccessDenied") => Failure::Denied,
        Some("ValidationException") => Failure::Usage,
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
            "ThrottlingException"
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

pub(crate) fn has_cause<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
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
pub(crate) fn credentials_class(err: &(dyn StdError + 'static)) -> Option<Failure> {
    let mut cause = Some(err);
    let mut found = None;
    while let Some(current) = cause {
        if let Some(creds) = current.downcast_ref::<CredentialsError>() {
            found = Some(match creds {
                CredentialsError::ProviderTimedOut(_) => Failure::Transient,
                _ => Failure::Auth,
            });
        } else if found.is_some()
            && let Some(connector) = current.downcast_ref::<ConnectorError>()
            && (connector.is_io() || connector.is_timeout())
        {
            return Some(Failure::Transient);
        }
        cause = current.source();
    }
    found
}
