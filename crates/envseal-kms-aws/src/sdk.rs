//! [`KmsApi`] over the official `aws-sdk-kms` client.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::Region;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{DataKeySpec, KeyMetadata, OriginType, Tag};
use envseal_core::SecretBytes;

use crate::api::{
    AliasOut, ApiError, ApiErrorKind, AwsContext, CipherOut, DataKeyOut, DecryptOut, KeyDesc, KmsApi, Page, RotationOut,
};
use crate::context::request_context;
use crate::uri::AwsKeyUri;

/// Limits applied to every request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Attempts per operation, first one included (SDK standard retry mode).
    pub max_attempts: u32,
    /// Default per-attempt timeout, when the `SdkConfig` sets none.
    pub attempt_timeout: Duration,
    /// Default whole-operation timeout (all attempts and back-off), when the `SdkConfig` sets none.
    pub operation_timeout: Duration,
}

/// The SDK client for the configured region, and one per other region an ARN names (built on
/// first use from the same configuration: credentials, endpoint, retries and timeouts).
pub(crate) struct SdkApi {
    config: aws_sdk_kms::Config,
    default: Client,
    region: Option<String>,
    endpoint_url_set: bool,
    regional: Mutex<HashMap<String, Client>>,
}

impl SdkApi {
    pub(crate) fn new(sdk: &SdkConfig, limits: Limits) -> Self {
        // Standard retry mode (exponential back-off with jitter, retry quota), bounded.
        let retry = RetryConfig::standard().with_max_attempts(limits.max_attempts);
        // Timeouts the caller configured win; ours fill the gaps.
        // Unset (not disabled) fields keep the SDK defaults, such as the 3.1 s connect timeout.
        let mut timeouts = sdk.timeout_config().cloned().unwrap_or_else(|| TimeoutConfig::builder().build());
        timeouts.take_defaults_from(
            &TimeoutConfig::builder()
                .operation_attempt_timeout(limits.attempt_timeout)
                .operation_timeout(limits.operation_timeout)
                .build(),
        );
        // `From<&SdkConfig>` also applies service-specific settings such as AWS_ENDPOINT_URL_KMS.
        let config = aws_sdk_kms::config::Builder::from(sdk).retry_config(retry).timeout_config(timeouts).build();
        let region = config.region().map(|r| r.as_ref().to_owned());
        // AWS_ENDPOINT_URL_KMS (a service-specific override) is applied by the SDK but not
        // visible here; this flag is informational (Debug output).
        let endpoint_url_set = sdk.endpoint_url().is_some();
        Self {
            default: Client::from_conf(config.clone()),
            config,
            region,
            endpoint_url_set,
            regional: Mutex::new(HashMap::new()),
        }
    }

    /// The client for the region of `key` when it is an ARN in another region, else the default.
    /// KMS keys are regional: a request must go to the key's region.
    fn client(&self, key: &str) -> Client {
        let Some(region) = AwsKeyUri::parse_key(key).ok().and_then(|u| u.region().map(str::to_owned)) else {
            return self.default.clone();
        };
        if self.region.as_deref() == Some(region.as_str()) {
            return self.default.clone();
        }
        // Invariant: the lock is never held across an await or a panic point.
        let mut clients = self.regional.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(region)
            .or_insert_with_key(|r| Client::from_conf(self.config.to_builder().region(Region::new(r.clone())).build()))
            .clone()
    }
}

impl fmt::Debug for SdkApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials provider or the endpoint URL (which could carry user info).
        f.debug_struct("SdkApi")
            .field("region", &self.region)
            .field("endpoint_url_set", &self.endpoint_url_set)
            .finish()
    }
}

/// The key id to send to a key-management operation: the bare id of a key ARN. These
/// operations (EnableKey, DisableKey, ScheduleKeyDeletion, CancelKeyDeletion, RotateKeyOnDemand,
/// CreateAlias, ListKeyRotations, ListResourceTags, ListAliases) do not work across accounts, so
/// in the ARN's region (where [`SdkApi::client`] sends the request) the bare id names the same
/// key. moto 5.2 accepts only the bare id for several of them.
fn management_id(key: &str) -> &str {
    match key.split_once(":key/") {
        Some((prefix, id)) if prefix.starts_with("arn:") => id,
        _ => key,
    }
}

fn api_error<E>(e: SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let (kind, code, message) = match &e {
        SdkError::ServiceError(s) => (
            ApiErrorKind::Service,
            s.err().code().map(str::to_owned),
            s.err().message().map(str::to_owned).unwrap_or_default(),
        ),
        SdkError::TimeoutError(_) => (ApiErrorKind::Timeout, None, DisplayErrorContext(&e).to_string()),
        SdkError::DispatchFailure(d) => (
            ApiErrorKind::Dispatch { retryable: d.is_io() || d.is_timeout() },
            None,
            DisplayErrorContext(&e).to_string(),
        ),
        SdkError::ResponseError(_) => (ApiErrorKind::Response, None, DisplayErrorContext(&e).to_string()),
        _ => (ApiErrorKind::Construction, None, DisplayErrorContext(&e).to_string()),
    };
    ApiError { kind, code, message, status }
}

fn time(t: Option<&DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// A response without a field AWS always sends.
fn missing(field: &str) -> ApiError {
    ApiError {
        kind: ApiErrorKind::Response,
        code: None,
        message: format!("the response has no {field}"),
        status: Some(200),
    }
}

fn describe(m: Option<&KeyMetadata>) -> Result<KeyDesc, ApiError> {
    let m = m.ok_or_else(|| missing("KeyMetadata"))?;
    Ok(KeyDesc {
        arn: m.arn().unwrap_or(m.key_id()).to_owned(),
        key_id: m.key_id().to_owned(),
        description: m.description().unwrap_or_default().to_owned(),
        state: m.key_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        origin: m.origin().map(|o| o.as_str().to_owned()).unwrap_or_default(),
        created_at: time(m.creation_date()).unwrap_or(SystemTime::UNIX_EPOCH),
        deletion_date: time(m.deletion_date()),
        current_key_material_id: m.current_key_material_id().map(str::to_owned),
    })
}

#[async_trait]
impl KmsApi for SdkApi {
    fn region(&self) -> Option<String> {
        self.region.clone()
    }

    fn endpoint_url_set(&self) -> bool {
        self.endpoint_url_set
    }

    async fn generate_data_key(&self, key: &str, context: &AwsContext) -> Result<DataKeyOut, ApiError> {
        let mut out = self
            .client(key)
            .generate_data_key()
            .key_id(key)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(request_context(context))
            .send()
            .await
            .map_err(api_error)?;
        // Moved out of the SDK's Blob: the one copy we hold is zeroized on drop.
        let plaintext = SecretBytes::new(out.plaintext.take().ok_or_else(|| missing("Plaintext"))?.into_inner());
        Ok(DataKeyOut {
            key_id: out.key_id.take().ok_or_else(|| missing("KeyId"))?,
            blob: out.ciphertext_blob.take().ok_or_else(|| missing("CiphertextBlob"))?.into_inner(),
            plaintext,
            key_material_id: out.key_material_id.take(),
        })
    }

    async fn decrypt(&self, key: &str, blob: &[u8], context: &AwsContext) -> Result<DecryptOut, ApiError> {
        let mut out = self
            .client(key)
            .decrypt()
            .key_id(key)
            .ciphertext_blob(Blob::new(blob))
            .set_encryption_context(request_context(context))
            .send()
            .await
            .map_err(api_error)?;
        let plaintext = SecretBytes::new(out.plaintext.take().ok_or_else(|| missing("Plaintext"))?.into_inner());
        Ok(DecryptOut {
            key_id: out.key_id.take().ok_or_else(|| missing("KeyId"))?,
            plaintext,
            key_material_id: out.key_material_id.take(),
        })
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &AwsContext) -> Result<CipherOut, ApiError> {
        let mut out = self
            .client(key)
            .encrypt()
            .key_id(key)
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(request_context(context))
            .send()
            .await
            .map_err(api_error)?;
        Ok(CipherOut {
            key_id: out.key_id.take().ok_or_else(|| missing("KeyId"))?,
            blob: out.ciphertext_blob.take().ok_or_else(|| missing("CiphertextBlob"))?.into_inner(),
            // Encrypt's response has no KeyMaterialId.
            key_material_id: None,
        })
    }

    async fn re_encrypt(
        &self,
        source_key: &str,
        blob: &[u8],
        source_context: &AwsContext,
        destination_key: &str,
        destination_context: &AwsContext,
    ) -> Result<CipherOut, ApiError> {
        let mut out = self
            .client(source_key)
            .re_encrypt()
            .source_key_id(source_key)
            .ciphertext_blob(Blob::new(blob))
            .set_source_encryption_context(request_context(source_context))
            .destination_key_id(destination_key)
            .set_destination_encryption_context(request_context(destination_context))
            .send()
            .await
            .map_err(api_error)?;
        Ok(CipherOut {
            key_id: out.key_id.take().ok_or_else(|| missing("KeyId"))?,
            blob: out.ciphertext_blob.take().ok_or_else(|| missing("CiphertextBlob"))?.into_inner(),
            key_material_id: out.destination_key_material_id.take(),
        })
    }

    async fn create_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
        custom_key_store: Option<&str>,
    ) -> Result<KeyDesc, ApiError> {
        let mut req = self.default.create_key().description(description);
        for (k, v) in tags {
            let tag = Tag::builder().tag_key(k).tag_value(v).build().map_err(|e| ApiError {
                kind: ApiErrorKind::Construction,
                code: None,
                message: e.to_string(),
                status: None,
            })?;
            req = req.tags(tag);
        }
        if let Some(store) = custom_key_store {
            req = req.custom_key_store_id(store).origin(OriginType::AwsCloudhsm);
        }
        let out = req.send().await.map_err(api_error)?;
        describe(out.key_metadata())
    }

    async fn describe_key(&self, key: &str) -> Result<KeyDesc, ApiError> {
        let out = self.client(key).describe_key().key_id(key).send().await.map_err(api_error)?;
        describe(out.key_metadata())
    }

    async fn list_keys(&self, marker: Option<String>) -> Result<Page<String>, ApiError> {
        let out = self.default.list_keys().set_marker(marker).send().await.map_err(api_error)?;
        Ok(Page {
            items: out.keys().iter().filter_map(|k| k.key_arn().or(k.key_id()).map(str::to_owned)).collect(),
            next_marker: out.truncated().then(|| out.next_marker().map(str::to_owned)).flatten(),
        })
    }

    async fn list_aliases(&self, key: Option<&str>, marker: Option<String>) -> Result<Page<AliasOut>, ApiError> {
        let client = key.map_or_else(|| self.default.clone(), |k| self.client(k));
        let out =
            client.list_aliases().set_key_id(key.map(|k| management_id(k).to_owned())).set_marker(marker).send().await;
        let out = out.map_err(api_error)?;
        Ok(Page {
            items: out
                .aliases()
                .iter()
                .filter_map(|a| {
                    Some(AliasOut {
                        name: a.alias_name()?.to_owned(),
                        arn: a.alias_arn().map(str::to_owned),
                        target_key_id: a.target_key_id().map(str::to_owned),
                    })
                })
                .collect(),
            next_marker: out.truncated().then(|| out.next_marker().map(str::to_owned)).flatten(),
        })
    }

    async fn list_key_rotations(&self, key: &str, marker: Option<String>) -> Result<Page<RotationOut>, ApiError> {
        let out = self.client(key).list_key_rotations().key_id(management_id(key)).set_marker(marker).send().await;
        let out = out.map_err(api_error)?;
        Ok(Page {
            items: out
                .rotations()
                .iter()
                .map(|r| RotationOut {
                    key_material_id: r.key_material_id().map(str::to_owned),
                    rotation_date: time(r.rotation_date()),
                })
                .collect(),
            next_marker: out.truncated().then(|| out.next_marker().map(str::to_owned)).flatten(),
        })
    }

    async fn list_resource_tags(&self, key: &str, marker: Option<String>) -> Result<Page<(String, String)>, ApiError> {
        let out = self.client(key).list_resource_tags().key_id(management_id(key)).set_marker(marker).send().await;
        let out = out.map_err(api_error)?;
        Ok(Page {
            items: out.tags().iter().map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned())).collect(),
            next_marker: out.truncated().then(|| out.next_marker().map(str::to_owned)).flatten(),
        })
    }

    async fn create_alias(&self, alias: &str, target_key: &str) -> Result<(), ApiError> {
        let req = self.client(target_key).create_alias().alias_name(alias).target_key_id(management_id(target_key));
        req.send().await.map_err(api_error).map(drop)
    }

    async fn delete_alias(&self, alias: &str) -> Result<(), ApiError> {
        self.client(alias).delete_alias().alias_name(alias).send().await.map_err(api_error).map(drop)
    }

    async fn enable_key(&self, key: &str) -> Result<(), ApiError> {
        self.client(key).enable_key().key_id(management_id(key)).send().await.map_err(api_error).map(drop)
    }

    async fn disable_key(&self, key: &str) -> Result<(), ApiError> {
        self.client(key).disable_key().key_id(management_id(key)).send().await.map_err(api_error).map(drop)
    }

    async fn schedule_key_deletion(&self, key: &str, pending_days: i32) -> Result<(), ApiError> {
        let req =
            self.client(key).schedule_key_deletion().key_id(management_id(key)).pending_window_in_days(pending_days);
        req.send().await.map_err(api_error).map(drop)
    }

    async fn cancel_key_deletion(&self, key: &str) -> Result<(), ApiError> {
        self.client(key).cancel_key_deletion().key_id(management_id(key)).send().await.map_err(api_error).map(drop)
    }

    async fn rotate_key_on_demand(&self, key: &str) -> Result<(), ApiError> {
        self.client(key).rotate_key_on_demand().key_id(management_id(key)).send().await.map_err(api_error).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_ids() {
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(management_id(&format!("arn:aws:kms:eu-west-1:111122223333:key/{id}")), id);
        assert_eq!(management_id(id), id);
        assert_eq!(management_id("alias/app"), "alias/app");
    }
}
