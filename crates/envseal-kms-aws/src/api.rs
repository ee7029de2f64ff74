//! The narrow seam between envseal and the AWS SDK: just the KMS calls this backend makes
//! (docs/ARCHITECTURE.md, Conventions 3, after tink's `KMSAPI`).
//!
//! [`crate::sdk::SdkApi`] implements it with `aws-sdk-kms`; unit tests use a fake. Requests and
//! responses are plain structs, so the fake needs no SDK types, and everything above this seam
//! (reference parsing, context mapping, versions, error mapping) is tested without a server.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use envseal_core::SecretBytes;

/// AWS `EncryptionContext` (a string map). Built by [`crate::context::to_aws_context`] only.
pub(crate) type AwsContext = HashMap<String, String>;

/// GenerateDataKey's answer.
pub(crate) struct DataKeyOut {
    /// ARN of the key that wrapped the data key.
    pub key_id: String,
    /// `CiphertextBlob`.
    pub blob: Vec<u8>,
    /// `Plaintext`, moved out of the SDK's buffer without a copy.
    pub plaintext: SecretBytes,
    /// `KeyMaterialId`, when the server reports it.
    pub key_material_id: Option<String>,
}

/// Decrypt's answer.
pub(crate) struct DecryptOut {
    /// ARN of the key that had wrapped the blob.
    pub key_id: String,
    /// `Plaintext`.
    pub plaintext: SecretBytes,
    /// `KeyMaterialId`, when the server reports it.
    pub key_material_id: Option<String>,
}

/// Encrypt's and ReEncrypt's answer.
pub(crate) struct CipherOut {
    /// ARN of the key that wrapped the blob.
    pub key_id: String,
    /// `CiphertextBlob`.
    pub blob: Vec<u8>,
    /// `KeyMaterialId` (ReEncrypt's `DestinationKeyMaterialId`; Encrypt reports none).
    pub key_material_id: Option<String>,
}

/// The parts of AWS `KeyMetadata` envseal uses.
#[derive(Clone, Debug)]
pub(crate) struct KeyDesc {
    /// `Arn`.
    pub arn: String,
    /// `KeyId` (the bare id).
    pub key_id: String,
    /// `Description`.
    pub description: String,
    /// `KeyState` as AWS spells it (`Enabled`, `PendingDeletion`, ...).
    pub state: String,
    /// `Origin` as AWS spells it (`AWS_KMS`, `AWS_CLOUDHSM`, ...).
    pub origin: String,
    /// `CreationDate`.
    pub created_at: SystemTime,
    /// `DeletionDate`.
    pub deletion_date: Option<SystemTime>,
    /// `CurrentKeyMaterialId`.
    pub current_key_material_id: Option<String>,
}

/// One `AliasListEntry`.
#[derive(Clone, Debug)]
pub(crate) struct AliasOut {
    /// `AliasName` (`alias/...`).
    pub name: String,
    /// `AliasArn`.
    pub arn: Option<String>,
    /// `TargetKeyId` (a bare key id); none for AWS-reserved aliases not yet in use.
    pub target_key_id: Option<String>,
}

/// One `RotationsListEntry`.
#[derive(Clone, Debug)]
pub(crate) struct RotationOut {
    /// `KeyMaterialId`.
    pub key_material_id: Option<String>,
    /// `RotationDate` (absent for the first key material).
    pub rotation_date: Option<SystemTime>,
}

/// One page of a paginated list, and the marker of the next.
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    pub next_marker: Option<String>,
}

/// How a call failed, reduced to what the error mapping needs. Never holds request data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// Where it failed.
    pub kind: ApiErrorKind,
    /// The AWS error code (`NotFoundException`, ...) for service errors.
    pub code: Option<String>,
    /// AWS's message, or the SDK's description of a transport failure.
    pub message: String,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
}

/// Where a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ApiErrorKind {
    /// The service answered with an error.
    Service,
    /// An attempt or the whole operation timed out (after the SDK's retries).
    Timeout,
    /// The request could not be sent or no response came back.
    Dispatch {
        /// An I/O or timeout failure (worth retrying), as opposed to e.g. a TLS or
        /// credential-loading failure.
        retryable: bool,
    },
    /// The request could not be built (missing region, bad endpoint, ...).
    Construction,
    /// A response came back that could not be read.
    Response,
}

impl ApiError {
    /// A service error with `code` and `message` (the fake builds these).
    #[cfg(test)]
    pub(crate) fn service(code: &str, message: &str, status: u16) -> Self {
        Self { kind: ApiErrorKind::Service, code: Some(code.into()), message: message.into(), status: Some(status) }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The AWS KMS calls envseal makes. Each method maps to one API operation; `key` arguments are
/// what AWS's `KeyId` takes. Implementations route a request by the region of an ARN argument.
#[async_trait]
pub(crate) trait KmsApi: Send + Sync + fmt::Debug {
    /// The client's default region, if one is configured.
    fn region(&self) -> Option<String>;

    /// Whether the `SdkConfig` carries an endpoint URL (`AWS_ENDPOINT_URL` or set in code).
    /// Informational: a service-specific `AWS_ENDPOINT_URL_KMS` applies without showing here.
    fn endpoint_url_set(&self) -> bool;

    /// GenerateDataKey with `KeySpec = AES_256`.
    async fn generate_data_key(&self, key: &str, context: &AwsContext) -> Result<DataKeyOut, ApiError>;

    /// Decrypt with `KeyId = key`, so AWS checks that `key` wrapped the blob.
    async fn decrypt(&self, key: &str, blob: &[u8], context: &AwsContext) -> Result<DecryptOut, ApiError>;

    /// Encrypt.
    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &AwsContext) -> Result<CipherOut, ApiError>;

    /// ReEncrypt with `SourceKeyId = source_key`.
    async fn re_encrypt(
        &self,
        source_key: &str,
        blob: &[u8],
        source_context: &AwsContext,
        destination_key: &str,
        destination_context: &AwsContext,
    ) -> Result<CipherOut, ApiError>;

    /// CreateKey (symmetric, `ENCRYPT_DECRYPT`); in `custom_key_store` with origin
    /// `AWS_CLOUDHSM` when given.
    async fn create_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
        custom_key_store: Option<&str>,
    ) -> Result<KeyDesc, ApiError>;

    /// DescribeKey.
    async fn describe_key(&self, key: &str) -> Result<KeyDesc, ApiError>;

    /// ListKeys: key ARNs.
    async fn list_keys(&self, marker: Option<String>) -> Result<Page<String>, ApiError>;

    /// ListAliases, for one key or all.
    async fn list_aliases(&self, key: Option<&str>, marker: Option<String>) -> Result<Page<AliasOut>, ApiError>;

    /// ListKeyRotations.
    async fn list_key_rotations(&self, key: &str, marker: Option<String>) -> Result<Page<RotationOut>, ApiError>;

    /// ListResourceTags: (key, value) pairs.
    async fn list_resource_tags(&self, key: &str, marker: Option<String>) -> Result<Page<(String, String)>, ApiError>;

    /// CreateAlias.
    async fn create_alias(&self, alias: &str, target_key: &str) -> Result<(), ApiError>;

    /// DeleteAlias.
    async fn delete_alias(&self, alias: &str) -> Result<(), ApiError>;

    /// EnableKey.
    async fn enable_key(&self, key: &str) -> Result<(), ApiError>;

    /// DisableKey.
    async fn disable_key(&self, key: &str) -> Result<(), ApiError>;

    /// ScheduleKeyDeletion.
    async fn schedule_key_deletion(&self, key: &str, pending_days: i32) -> Result<(), ApiError>;

    /// CancelKeyDeletion.
    async fn cancel_key_deletion(&self, key: &str) -> Result<(), ApiError>;

    /// RotateKeyOnDemand.
    async fn rotate_key_on_demand(&self, key: &str) -> Result<(), ApiError>;
}
