//! Secrets Manager's error codes, each tagged with the exit class an operator needs; the
//! rest (transport, credentials, the message) is classified as for every AWS service, in
//! [`crate::providers::aws_session`].

use std::error::Error as StdError;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use crate::exit::Failure;
use crate::providers::aws_session::{classify_with, common_class};

/// Tags a Secrets Manager error with the exit class an operator needs, keeping the SDK's
/// own messages.
pub(super) fn classify<E>(err: SdkError<E>) -> anyhow::Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    classify_with(err, classify_code)
}

/// Secrets Manager's error codes (the same for every operation), then those every AWS
/// service shares.
fn classify_code(code: Option<&str>, status: u16) -> Failure {
    match code {
        // Missing, scheduled for deletion, or a version not in a usable state.
        Some("ResourceNotFoundException" | "InvalidRequestException") => Failure::NotFound,
        // Not allowed to use its KMS key.
        Some("DecryptionFailure") => Failure::Denied,
        Some("InvalidParameterException") => Failure::Usage,
        Some("InternalServiceError") => Failure::Transient,
        _ => common_class(code, status),
    }
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
