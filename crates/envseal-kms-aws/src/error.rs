//! AWS KMS errors → [`KmsError`] (docs/backends/aws-kms.md §Errors).
//!
//! The mapping works on AWS error codes (the `__type` of the JSON error), not on the SDK's
//! per-operation enums: `AccessDeniedException` and `ThrottlingException` are not in KMS's model
//! and reach the SDK as "unhandled" errors with just a code. Messages carry AWS's explanation
//! (key ARNs, principal ARNs, never request data) or the SDK's transport description.

use envseal_core::KmsError;

use crate::BACKEND;
use crate::api::{ApiError, ApiErrorKind};

/// The operation that failed, which refines some mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    GenerateDataKey,
    Decrypt,
    Encrypt,
    ReEncrypt,
    CreateKey,
    DescribeKey,
    ListKeys,
    ListAliases,
    ListKeyRotations,
    ListResourceTags,
    CreateAlias,
    DeleteAlias,
    EnableKey,
    DisableKey,
    ScheduleKeyDeletion,
    CancelKeyDeletion,
    RotateKeyOnDemand,
}

impl Op {
    /// The envseal operation name reported in [`KmsError::Unsupported`].
    pub(crate) fn envseal_name(self) -> &'static str {
        match self {
            Op::GenerateDataKey => "generate_data_key",
            Op::Decrypt => "decrypt",
            Op::Encrypt => "encrypt",
            Op::ReEncrypt => "re_encrypt",
            Op::CreateKey => "create_key",
            Op::DescribeKey | Op::ListKeyRotations | Op::ListResourceTags => "describe_key",
            Op::ListKeys => "list_keys",
            Op::ListAliases => "list_aliases",
            Op::CreateAlias => "create_alias",
            Op::DeleteAlias => "delete_alias",
            Op::EnableKey => "enable_key",
            Op::DisableKey => "disable_key",
            Op::ScheduleKeyDeletion => "schedule_key_deletion",
            Op::CancelKeyDeletion => "cancel_key_deletion",
            Op::RotateKeyOnDemand => "rotate_key",
        }
    }
}

/// Longest AWS message kept in an error.
const MAX_MESSAGE: usize = 512;

/// Maps a failed call of `op` on `subject` (the key or alias as the caller gave it) to the
/// [`KmsError`] a user can act on.
pub(crate) fn map_error(op: Op, subject: &str, e: ApiError) -> KmsError {
    let message = clip(&e.message);
    let key = || subject.to_owned();
    match e.kind {
        ApiErrorKind::Timeout => {
            return KmsError::Unavailable { message: format!("AWS KMS timed out: {message}"), retryable: true };
        }
        ApiErrorKind::Dispatch { retryable } => {
            // Credential loading fails before anything is sent; say so plainly.
            if !retryable && message.to_ascii_lowercase().contains("credentials") {
                return KmsError::AccessDenied { message: format!("no usable AWS credentials: {message}") };
            }
            return KmsError::Unavailable { message: format!("AWS KMS unreachable: {message}"), retryable };
        }
        ApiErrorKind::Construction => {
            return KmsError::Unavailable { message: format!("AWS KMS request not sent: {message}"), retryable: false };
        }
        ApiErrorKind::Response => {
            return KmsError::Unavailable {
                message: format!("unreadable AWS KMS response: {message}"),
                retryable: e.status.is_some_and(|s| s >= 500),
            };
        }
        ApiErrorKind::Service => {}
    }
    let code = e.code.as_deref().unwrap_or("");
    match code {
        "NotFoundException" => KmsError::KeyNotFound { key: key() },
        "DisabledException" => KmsError::KeyDisabled { key: key() },
        "KMSInvalidStateException" => invalid_state(op, subject, &message),
        "InvalidCiphertextException" | "IncorrectKeyException" => KmsError::InvalidCiphertext,
        "AccessDeniedException"
        | "NotAuthorizedException"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException" => KmsError::AccessDenied { message: with_code(code, &message) },
        "ThrottlingException" | "LimitExceededException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
            KmsError::Throttled { message: with_code(code, &message) }
        }
        "KMSInternalException"
        | "KeyUnavailableException"
        | "DependencyTimeoutException"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException" => {
            KmsError::Unavailable { message: with_code(code, &message), retryable: true }
        }
        "AlreadyExistsException" => KmsError::AlreadyExists { what: key() },
        "UnsupportedOperationException" => {
            KmsError::Unsupported { operation: op.envseal_name(), backend: BACKEND.to_owned() }
        }
        c if c.starts_with("CustomKeyStore") || c.starts_with("CloudHsm") || c.starts_with("XksProxy") => {
            // The key's custom key store is disconnected or misconfigured: an operator must act.
            KmsError::Unavailable { message: with_code(code, &message), retryable: false }
        }
        _ => {
            let message = match (with_code(code, &message), e.status) {
                (m, Some(status)) if m.is_empty() => format!("HTTP {status} without an error code"),
                (m, _) => m,
            };
            match e.status {
                Some(429) => KmsError::Throttled { message },
                Some(s) if s >= 500 => KmsError::Unavailable { message, retryable: true },
                Some(401 | 403) => KmsError::AccessDenied { message },
                // ValidationException, InvalidAliasNameException, InvalidArnException,
                // InvalidKeyUsageException, TagException, InvalidMarkerException, ...
                _ => KmsError::InvalidRequest { message },
            }
        }
    }
}

/// `KMSInvalidStateException`: the key's state forbids the operation. AWS uses it for keys
/// pending deletion (the common case), pending import, unavailable (custom key store
/// disconnected), and for state transitions that make no sense (cancelling a deletion that is
/// not pending). AWS's message names the state ("... is pending deletion.").
fn invalid_state(op: Op, subject: &str, message: &str) -> KmsError {
    let m = message.to_ascii_lowercase();
    if op == Op::CancelKeyDeletion && !m.contains("pending deletion") {
        return KmsError::InvalidRequest { message: format!("no deletion is pending for {subject}: {message}") };
    }
    if m.contains("pending") && m.contains("deletion") && !m.contains("not pending") {
        return KmsError::KeyPendingDeletion { key: subject.to_owned() };
    }
    if m.contains("disabled") {
        return KmsError::KeyDisabled { key: subject.to_owned() };
    }
    if op == Op::CancelKeyDeletion {
        return KmsError::InvalidRequest { message: format!("no deletion is pending for {subject}: {message}") };
    }
    KmsError::InvalidRequest { message: format!("the state of {subject} does not allow this: {message}") }
}

fn with_code(code: &str, message: &str) -> String {
    match (code.is_empty(), message.is_empty()) {
        (true, _) => message.to_owned(),
        (false, true) => code.to_owned(),
        (false, false) => format!("{code}: {message}"),
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn svc(code: &str, msg: &str, status: u16) -> ApiError {
        ApiError::service(code, msg, status)
    }

    #[test]
    fn service_codes() {
        type Check = fn(&KmsError) -> bool;
        let cases: Vec<(ApiError, Check)> = vec![
            (
                svc("NotFoundException", "Key 'x' does not exist", 400),
                |e| matches!(e, KmsError::KeyNotFound { key } if key == K),
            ),
            (
                svc("DisabledException", "x is disabled.", 400),
                |e| matches!(e, KmsError::KeyDisabled { key } if key == K),
            ),
            (
                svc("KMSInvalidStateException", &format!("{K} is pending deletion."), 400),
                |e| matches!(e, KmsError::KeyPendingDeletion { key } if key == K),
            ),
            (svc("KMSInvalidStateException", &format!("{K} is pending import."), 400), |e| {
                matches!(e, KmsError::InvalidRequest { .. })
            }),
            (svc("InvalidCiphertextException", "", 400), |e| matches!(e, KmsError::InvalidCiphertext)),
            (svc("IncorrectKeyException", "wrong key", 400), |e| matches!(e, KmsError::InvalidCiphertext)),
            (
                svc("AccessDeniedException", "User: arn:aws:iam::1:user/u is not authorized", 400),
                |e| matches!(e, KmsError::AccessDenied { message } if message.contains("not authorized")),
            ),
            (svc("UnrecognizedClientException", "The security token included in the request is invalid.", 400), |e| {
                matches!(e, KmsError::AccessDenied { .. })
            }),
            (svc("ThrottlingException", "Rate exceeded", 400), |e| matches!(e, KmsError::Throttled { .. })),
            (svc("LimitExceededException", "quota", 400), |e| matches!(e, KmsError::Throttled { .. })),
            (svc("KMSInternalException", "", 500), |e| matches!(e, KmsError::Unavailable { retryable: true, .. })),
            (svc("KeyUnavailableException", "", 500), |e| matches!(e, KmsError::Unavailable { retryable: true, .. })),
            (svc("DependencyTimeoutException", "", 503), |e| {
                matches!(e, KmsError::Unavailable { retryable: true, .. })
            }),
            (svc("CustomKeyStoreInvalidStateException", "disconnected", 400), |e| {
                matches!(e, KmsError::Unavailable { retryable: false, .. })
            }),
            (
                svc("AlreadyExistsException", "exists", 400),
                |e| matches!(e, KmsError::AlreadyExists { what } if what == K),
            ),
            (
                svc("UnsupportedOperationException", "no", 400),
                |e| matches!(e, KmsError::Unsupported { operation: "generate_data_key", backend } if backend == "aws-kms"),
            ),
            (
                svc("ValidationException", "1 validation error detected", 400),
                |e| matches!(e, KmsError::InvalidRequest { message } if message.starts_with("ValidationException: ")),
            ),
            (svc("SomethingNew", "", 503), |e| matches!(e, KmsError::Unavailable { retryable: true, .. })),
            (
                svc("", "", 500),
                |e| matches!(e, KmsError::Unavailable { retryable: true, message } if message == "HTTP 500 without an error code"),
            ),
            (svc("SomethingNew", "", 429), |e| matches!(e, KmsError::Throttled { .. })),
            (svc("SomethingNew", "", 403), |e| matches!(e, KmsError::AccessDenied { .. })),
            (svc("SomethingNew", "", 400), |e| matches!(e, KmsError::InvalidRequest { .. })),
        ];
        for (api, check) in cases {
            let shown = api.to_string();
            let e = map_error(Op::GenerateDataKey, K, api);
            assert!(check(&e), "{shown} mapped to {e:?}");
        }
    }

    #[test]
    fn invalid_state_by_operation() {
        let pending = || svc("KMSInvalidStateException", &format!("{K} is pending deletion."), 400);
        let enabled = || svc("KMSInvalidStateException", &format!("{K} is not pending deletion."), 400);
        assert!(matches!(map_error(Op::EnableKey, K, pending()), KmsError::KeyPendingDeletion { .. }));
        assert!(matches!(map_error(Op::Decrypt, K, pending()), KmsError::KeyPendingDeletion { .. }));
        assert!(matches!(map_error(Op::CancelKeyDeletion, K, enabled()), KmsError::InvalidRequest { .. }));
        let odd = svc("KMSInvalidStateException", "state Enabled", 400);
        assert!(matches!(map_error(Op::CancelKeyDeletion, K, odd), KmsError::InvalidRequest { .. }));
        let disabled = svc("KMSInvalidStateException", &format!("{K} is disabled."), 400);
        assert!(matches!(map_error(Op::ScheduleKeyDeletion, K, disabled), KmsError::KeyDisabled { .. }));
    }

    #[test]
    fn transport_failures() {
        let t = ApiError { kind: ApiErrorKind::Timeout, code: None, message: "timeout".into(), status: None };
        assert!(matches!(map_error(Op::Decrypt, K, t), KmsError::Unavailable { retryable: true, .. }));
        let io = ApiError {
            kind: ApiErrorKind::Dispatch { retryable: true },
            code: None,
            message: "io error: connection refused".into(),
            status: None,
        };
        let e = map_error(Op::Decrypt, K, io);
        assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }) && e.is_retryable());
        let tls = ApiError {
            kind: ApiErrorKind::Dispatch { retryable: false },
            code: None,
            message: "invalid peer certificate".into(),
            status: None,
        };
        assert!(matches!(map_error(Op::Decrypt, K, tls), KmsError::Unavailable { retryable: false, .. }));
        let creds = ApiError {
            kind: ApiErrorKind::Dispatch { retryable: false },
            code: None,
            message: "failed to load credentials: no providers in chain provided credentials".into(),
            status: None,
        };
        assert!(matches!(map_error(Op::Decrypt, K, creds), KmsError::AccessDenied { .. }));
        let region = ApiError {
            kind: ApiErrorKind::Construction,
            code: None,
            message: "a region must be set".into(),
            status: None,
        };
        assert!(matches!(map_error(Op::Decrypt, K, region), KmsError::Unavailable { retryable: false, .. }));
        let r5 = ApiError { kind: ApiErrorKind::Response, code: None, message: "bad json".into(), status: Some(502) };
        assert!(map_error(Op::Decrypt, K, r5).is_retryable());
        let r2 = ApiError { kind: ApiErrorKind::Response, code: None, message: "bad json".into(), status: Some(200) };
        assert!(!map_error(Op::Decrypt, K, r2).is_retryable());
    }

    #[test]
    fn long_messages_are_clipped() {
        let e = map_error(Op::Decrypt, K, svc("AccessDeniedException", &"x".repeat(5000), 400));
        assert!(e.to_string().len() < MAX_MESSAGE + 100);
    }

    #[test]
    fn unsupported_names_the_envseal_operation() {
        let e = map_error(Op::RotateKeyOnDemand, K, svc("UnsupportedOperationException", "", 400));
        assert!(matches!(e, KmsError::Unsupported { operation: "rotate_key", .. }));
    }
}
