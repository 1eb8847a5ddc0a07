//! Parameter Store's error codes, each tagged with the exit class an operator needs; the
//! rest (transport, credentials, the message) is classified as for every AWS service, in
//! [`crate::providers::aws_session`].

use std::error::Error as StdError;

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};

use crate::exit::Failure;
use crate::providers::aws_session::{classify_with, common_class};

/// Tags a Parameter Store error with the exit class an operator needs, keeping the SDK's
/// own messages.
pub(super) fn classify<E>(err: SdkError<E>) -> anyhow::Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    classify_with(err, classify_code)
}

/// GetParameter, GetParameters and GetParametersByPath's error codes, then those every
/// AWS service shares.
fn classify_code(code: Option<&str>, status: u16) -> Failure {
    match code {
        Some(
            "ParameterNotFound" | "ParameterVersionNotFound" | "ParameterVersionLabelNotFound",
        ) => Failure::NotFound,
        // A SecureString whose KMS key cannot be used (disabled, deleted, not allowed).
        Some("InvalidKeyId" | "KMSAccessDeniedException" | "KMSDisabledException") => {
            Failure::Denied
        }
        Some("InternalServerError") => Failure::Transient,
        // A page token or filter this program built wrong: a bug, not the user's.
        Some("InvalidNextToken" | "InvalidFilterKey" | "InvalidFilterOption") => Failure::Internal,
        _ => common_class(code, status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_exit_classes() {
        for (code, status, class) in [
            ("ParameterNotFound", 400, Failure::NotFound),
            ("ParameterVersionNotFound", 400, Failure::NotFound),
            ("AccessDeniedException", 400, Failure::Denied),
            ("InvalidKeyId", 400, Failure::Denied),
            ("ValidationException", 400, Failure::Usage),
            ("UnrecognizedClientException", 400, Failure::Auth),
            ("ThrottlingException", 400, Failure::Transient),
            ("InternalServerError", 500, Failure::Transient),
            ("InvalidNextToken", 400, Failure::Internal),
            ("Whatever", 400, Failure::Internal),
        ] {
            assert_eq!(classify_code(Some(code), status), class, "{code} {status}");
        }
    }
}
