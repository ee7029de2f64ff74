//! Request failures, and how each API spells them (HTTP status, error code).
//!
//! Handlers fail with a [`Fault`]: what went wrong, in envseal's terms, plus a message for the
//! client. [`Fault::aws`] and [`Fault::alibaba`] give the status and code each API uses. No
//! message ever carries a secret, a plaintext, a blob or a signature: only key ids, parameter
//! names and sizes.

use envseal_core::KmsError;

/// What went wrong with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    // Authentication.
    /// No Authorization header / signature parameters.
    MissingAuth,
    /// The Authorization header or signature parameters are malformed or incomplete.
    IncompleteSignature,
    /// Unknown access key id.
    UnknownAccessKey,
    /// The signature does not match.
    SignatureMismatch,
    /// The request time is missing, malformed or too far from the server's clock.
    RequestExpired,
    /// A malformed timestamp (Alibaba distinguishes it).
    BadTimestamp,
    /// An Alibaba signature nonce seen before.
    NonceReused,
    /// An STS security token that does not belong to the access key.
    InvalidToken,
    /// An expired STS token.
    ExpiredToken,
    /// Refused by the request hook (policy).
    AccessDenied,
    // Request shape.
    /// An action this emulator does not implement.
    UnknownAction,
    /// An API version other than the one served.
    UnsupportedVersion,
    /// A required parameter is missing.
    MissingParameter,
    /// A parameter is invalid.
    InvalidParameter,
    /// The body is not what the API's content type promises.
    MalformedBody,
    /// The body is larger than the limit.
    PayloadTooLarge,
    /// The request took longer than the request timeout.
    Timeout,
    /// The API is switched off with `--api`.
    ApiDisabled,
    // Keys.
    /// No such key.
    KeyNotFound,
    /// No such alias.
    AliasNotFound,
    /// No such key version.
    KeyVersionNotFound,
    /// The key is disabled.
    Disabled,
    /// The key is pending deletion (or in another state that refuses the operation).
    InvalidState,
    /// The ciphertext blob is malformed, altered, or not this server's.
    InvalidCiphertext,
    /// The encryption context does not match the blob's.
    WrongContext,
    /// The blob was not wrapped by the key the caller named (AWS Decrypt with `KeyId`).
    IncorrectKey,
    /// The data was wrapped by a version below the key's minimum decryption version.
    VersionBelowMinimum,
    /// An alias or key already exists.
    AlreadyExists,
    /// The backend cannot do this (e.g. HSM keys on the local keystore).
    Unsupported,
    /// Alibaba `DryRun=true`: the request would have succeeded.
    DryRun,
    /// A key policy that does not parse, or would lock the caller out.
    MalformedPolicy,
    /// A grant token that names no grant.
    InvalidGrantToken,
    /// A grant id that names no grant of the key.
    GrantNotFound,
    /// Over the `--throttle` limit.
    RateLimited,
    // Service.
    /// The backend throttled the call.
    Throttled,
    /// The backend is unavailable.
    Unavailable,
    /// A bug or an unexpected backend failure.
    Internal,
}

/// A failed request: its class and a message safe to show the client.
/// An HTTP status and an API error code.
pub(crate) type Spelling = (u16, &'static str);

#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub class: Class,
    pub message: String,
    /// (AWS, Alibaba) status and code when the API's spelling is not the class's usual one
    /// (STS answers).
    codes: Option<(Spelling, Spelling)>,
}

impl Fault {
    pub(crate) fn new(class: Class, message: impl Into<String>) -> Self {
        Self { class, message: message.into(), codes: None }
    }

    /// Uses these (AWS, Alibaba) statuses and codes instead of the class's.
    pub(crate) fn with_codes(mut self, aws: (u16, &'static str), alibaba: (u16, &'static str)) -> Self {
        self.codes = Some((aws, alibaba));
        self
    }

    /// The AWS status and code set by [`Fault::with_codes`].
    pub(crate) fn aws_override(&self) -> Option<(u16, &'static str)> {
        self.codes.map(|c| c.0)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(Class::InvalidParameter, message)
    }

    pub(crate) fn missing(name: &str) -> Self {
        Self::new(Class::MissingParameter, format!("the parameter {name} is required"))
    }

    /// AWS KMS: HTTP status and `__type` (JSON 1.1 error shape, botocore
    /// data/kms/2014-11-01/service-2.json error shapes).
    pub(crate) fn aws(&self) -> (u16, &'static str) {
        if let Some((aws, _)) = self.codes {
            return aws;
        }
        match self.class {
            Class::MissingAuth => (400, "MissingAuthenticationTokenException"),
            Class::IncompleteSignature => (400, "IncompleteSignatureException"),
            Class::UnknownAccessKey | Class::InvalidToken => (400, "UnrecognizedClientException"),
            Class::SignatureMismatch | Class::RequestExpired | Class::BadTimestamp | Class::NonceReused => {
                (400, "InvalidSignatureException")
            }
            Class::ExpiredToken => (400, "ExpiredTokenException"),
            Class::AccessDenied => (400, "AccessDeniedException"),
            Class::UnknownAction => (400, "UnknownOperationException"),
            Class::UnsupportedVersion | Class::MissingParameter | Class::InvalidParameter => {
                (400, "ValidationException")
            }
            Class::MalformedBody => (400, "SerializationException"),
            Class::PayloadTooLarge => (413, "RequestEntityTooLargeException"),
            Class::Timeout => (408, "RequestTimeoutException"),
            Class::ApiDisabled => (400, "UnknownOperationException"),
            Class::KeyNotFound | Class::AliasNotFound | Class::KeyVersionNotFound => (400, "NotFoundException"),
            Class::Disabled => (400, "DisabledException"),
            Class::InvalidState | Class::VersionBelowMinimum => (400, "KMSInvalidStateException"),
            Class::InvalidCiphertext | Class::WrongContext => (400, "InvalidCiphertextException"),
            Class::IncorrectKey => (400, "IncorrectKeyException"),
            Class::AlreadyExists => (400, "AlreadyExistsException"),
            Class::Unsupported => (400, "UnsupportedOperationException"),
            Class::DryRun => (412, "DryRunOperationException"),
            Class::MalformedPolicy => (400, "MalformedPolicyDocumentException"),
            Class::InvalidGrantToken => (400, "InvalidGrantTokenException"),
            Class::GrantNotFound => (400, "NotFoundException"),
            Class::RateLimited => (400, "ThrottlingException"),
            Class::Throttled => (400, "ThrottlingException"),
            Class::Unavailable => (500, "KMSInternalException"),
            Class::Internal => (500, "KMSInternalException"),
        }
    }

    /// Alibaba Cloud KMS: HTTP status and `Code` (common error codes of the RPC gateway and of
    /// KMS 2016-01-20; see docs/backends/emulator.md for the codes only this emulator uses).
    pub(crate) fn alibaba(&self) -> (u16, &'static str) {
        if let Some((_, alibaba)) = self.codes {
            return alibaba;
        }
        match self.class {
            Class::MissingAuth => (400, "MissingAccessKeyId"),
            Class::IncompleteSignature => (400, "IncompleteSignature"),
            Class::UnknownAccessKey => (404, "InvalidAccessKeyId.NotFound"),
            Class::SignatureMismatch => (400, "SignatureDoesNotMatch"),
            Class::RequestExpired => (400, "InvalidTimeStamp.Expired"),
            Class::BadTimestamp => (400, "InvalidTimeStamp.Format"),
            Class::NonceReused => (400, "SignatureNonceUsed"),
            Class::InvalidToken => (403, "InvalidSecurityToken.MismatchWithAccessKey"),
            Class::ExpiredToken => (403, "InvalidSecurityToken.Expired"),
            Class::AccessDenied => (403, "Forbidden.RAM"),
            Class::UnknownAction => (404, "InvalidAction.NotFound"),
            Class::UnsupportedVersion => (400, "InvalidVersion"),
            Class::MissingParameter => (400, "MissingParameter"),
            Class::InvalidParameter | Class::MalformedBody => (400, "InvalidParameter"),
            Class::PayloadTooLarge => (413, "RequestEntityTooLarge"),
            Class::Timeout => (408, "RequestTimeout"),
            Class::ApiDisabled => (404, "InvalidAction.NotFound"),
            Class::KeyNotFound => (404, "Forbidden.KeyNotFound"),
            Class::AliasNotFound => (404, "Forbidden.AliasNotFound"),
            Class::KeyVersionNotFound => (404, "Forbidden.KeyVersionNotFound"),
            Class::Disabled => (409, "Rejected.Disabled"),
            Class::InvalidState => (409, "Rejected.PendingDeletion"),
            Class::VersionBelowMinimum => (409, "Rejected.KeyVersionBelowMinimum"),
            Class::InvalidCiphertext | Class::IncorrectKey => (400, "InvalidParameter.CiphertextBlob"),
            Class::WrongContext => (400, "InvalidParameter.EncryptionContext"),
            Class::AlreadyExists => (409, "Rejected.ResourceExist"),
            Class::Unsupported => (400, "UnsupportedOperation"),
            Class::DryRun => (400, "DryRunOperation"),
            Class::MalformedPolicy => (400, "InvalidParameter.Policy"),
            Class::InvalidGrantToken | Class::GrantNotFound => (400, "InvalidParameter"),
            Class::RateLimited => (429, "Rejected.Throttling"),
            Class::Throttled => (400, "Throttling"),
            Class::Unavailable => (503, "ServiceUnavailableTemporary"),
            Class::Internal => (500, "InternalFailure"),
        }
    }
}

impl From<KmsError> for Fault {
    fn from(e: KmsError) -> Self {
        // KmsError messages carry ids, versions and sizes only (core's rule), so they are safe
        // to return.
        let message = e.to_string();
        let class = match &e {
            KmsError::KeyNotFound { key } if key.starts_with("alias/") => Class::AliasNotFound,
            KmsError::KeyNotFound { .. } => Class::KeyNotFound,
            KmsError::KeyVersionNotFound { .. } => Class::KeyVersionNotFound,
            KmsError::KeyDisabled { .. } => Class::Disabled,
            KmsError::KeyPendingDeletion { .. } => Class::InvalidState,
            KmsError::KeyVersionBelowMinimum { .. } => Class::VersionBelowMinimum,
            KmsError::AccessDenied { .. } => Class::AccessDenied,
            KmsError::WrongContext => Class::WrongContext,
            KmsError::InvalidCiphertext => Class::InvalidCiphertext,
            KmsError::PlaintextTooLarge { .. } => Class::InvalidParameter,
            KmsError::Throttled { .. } => Class::Throttled,
            KmsError::Unavailable { .. } => Class::Unavailable,
            KmsError::InvalidRequest { .. } => Class::InvalidParameter,
            KmsError::AlreadyExists { .. } => Class::AlreadyExists,
            KmsError::Unsupported { .. } => Class::Unsupported,
            _ => Class::Internal,
        };
        Fault { class, message, codes: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_errors_map_to_api_codes() {
        let f = Fault::from(KmsError::KeyNotFound { key: "k".into() });
        assert_eq!((f.aws(), f.alibaba()), ((400, "NotFoundException"), (404, "Forbidden.KeyNotFound")));
        let f = Fault::from(KmsError::KeyNotFound { key: "alias/x".into() });
        assert_eq!(f.alibaba(), (404, "Forbidden.AliasNotFound"));
        let f = Fault::from(KmsError::KeyDisabled { key: "k".into() });
        assert_eq!((f.aws().1, f.alibaba().1), ("DisabledException", "Rejected.Disabled"));
        let f = Fault::from(KmsError::WrongContext);
        assert_eq!((f.aws().1, f.alibaba().1), ("InvalidCiphertextException", "InvalidParameter.EncryptionContext"));
        let f = Fault::from(KmsError::Throttled { message: "slow down".into() });
        assert_eq!((f.aws().1, f.alibaba().1), ("ThrottlingException", "Throttling"));
        let f = Fault::from(KmsError::KeyVersionNotFound { key: "k".into(), version: "9".into() });
        assert_eq!(f.alibaba(), (404, "Forbidden.KeyVersionNotFound"));
    }
}
