//! An in-memory [`KmsApi`] for unit tests: records every call, fails on demand, and keeps just
//! enough state (blobs, one key description, lists) to round-trip.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use envseal_core::SecretBytes;

use crate::api::{
    AliasOut, ApiError, AwsContext, CipherOut, DataKeyOut, DecryptOut, KeyDesc, KmsApi, Page, RotationOut,
};

/// The data key every GenerateDataKey returns, so tests can look for it in `Debug` output.
pub(crate) const FIXTURE_DATA_KEY: [u8; 32] = [0xA7; 32];
pub(crate) const ACCOUNT_PREFIX: &str = "arn:aws:kms:us-east-1:111122223333";
pub(crate) const KEY_ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

pub(crate) fn arn(id: &str) -> String {
    format!("{ACCOUNT_PREFIX}:key/{id}")
}

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    pub op: &'static str,
    pub key: String,
    pub context: Option<AwsContext>,
    pub extra: String,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    fail: HashMap<&'static str, ApiError>,
    material: Option<String>,
    blobs: HashMap<Vec<u8>, (String, Vec<u8>, AwsContext)>,
    counter: u64,
    rotations: Vec<RotationOut>,
    aliases: Vec<AliasOut>,
    tags: Vec<(String, String)>,
    keys: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct FakeApi {
    state: Mutex<State>,
}

impl FakeApi {
    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Every later call of `op` fails with `e`.
    pub(crate) fn fail(&self, op: &'static str, e: ApiError) {
        self.st().fail.insert(op, e);
    }

    /// The `KeyMaterialId` reported from now on.
    pub(crate) fn set_material(&self, id: Option<&str>) {
        self.st().material = id.map(str::to_owned);
    }

    pub(crate) fn set_lists(&self, keys: Vec<String>, aliases: Vec<AliasOut>, rotations: Vec<RotationOut>) {
        let mut s = self.st();
        s.keys = keys;
        s.aliases = aliases;
        s.rotations = rotations;
    }

    pub(crate) fn set_tags(&self, tags: Vec<(String, String)>) {
        self.st().tags = tags;
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.st().calls.clone()
    }

    pub(crate) fn ops(&self) -> Vec<&'static str> {
        self.st().calls.iter().map(|c| c.op).collect()
    }

    fn record(&self, op: &'static str, key: &str, context: Option<&AwsContext>, extra: String) -> Result<(), ApiError> {
        let mut s = self.st();
        s.calls.push(Call { op, key: key.to_owned(), context: context.cloned(), extra });
        match s.fail.get(op) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The ARN a reference names (aliases all point at [`KEY_ID`]).
    fn resolve(key: &str) -> String {
        if key.starts_with("arn:") && key.contains(":key/") {
            key.to_owned()
        } else if key.contains("alias/") {
            arn(KEY_ID)
        } else {
            arn(key)
        }
    }

    fn wrap(&self, key: &str, plaintext: &[u8], context: &AwsContext) -> (String, Vec<u8>) {
        let mut s = self.st();
        s.counter += 1;
        let blob = format!("fake-blob-{}", s.counter).into_bytes();
        let arn = Self::resolve(key);
        s.blobs.insert(blob.clone(), (arn.clone(), plaintext.to_vec(), context.clone()));
        (arn, blob)
    }

    fn unwrap(&self, key: &str, blob: &[u8], context: &AwsContext) -> Result<(String, Vec<u8>), ApiError> {
        let s = self.st();
        let Some((arn, pt, ctx)) = s.blobs.get(blob) else {
            return Err(ApiError::service("InvalidCiphertextException", "", 400));
        };
        if ctx != context {
            return Err(ApiError::service("InvalidCiphertextException", "", 400));
        }
        if Self::resolve(key) != *arn {
            return Err(ApiError::service("IncorrectKeyException", "the key is not the one that encrypted", 400));
        }
        Ok((arn.clone(), pt.clone()))
    }

    fn desc(&self, key: &str) -> KeyDesc {
        let arn = Self::resolve(key);
        let id = arn.rsplit('/').next().unwrap_or_default().to_owned();
        KeyDesc {
            arn,
            key_id: id,
            description: "fake".into(),
            state: "Enabled".into(),
            origin: "AWS_KMS".into(),
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            deletion_date: None,
            current_key_material_id: self.st().material.clone(),
        }
    }
}

/// Pages of one item, to exercise pagination.
fn page<T: Clone>(items: &[T], marker: Option<String>) -> Page<T> {
    let i: usize = marker.map_or(0, |m| m.parse().unwrap());
    Page {
        items: items.get(i).cloned().into_iter().collect(),
        next_marker: (i + 1 < items.len()).then(|| (i + 1).to_string()),
    }
}

#[async_trait]
impl KmsApi for FakeApi {
    fn region(&self) -> Option<String> {
        Some("us-east-1".into())
    }

    fn endpoint_url_set(&self) -> bool {
        false
    }

    async fn generate_data_key(&self, key: &str, context: &AwsContext) -> Result<DataKeyOut, ApiError> {
        self.record("GenerateDataKey", key, Some(context), String::new())?;
        let (key_id, blob) = self.wrap(key, &FIXTURE_DATA_KEY, context);
        Ok(DataKeyOut {
            key_id,
            blob,
            plaintext: SecretBytes::copy_from(&FIXTURE_DATA_KEY),
            key_material_id: self.st().material.clone(),
        })
    }

    async fn decrypt(&self, key: &str, blob: &[u8], context: &AwsContext) -> Result<DecryptOut, ApiError> {
        self.record("Decrypt", key, Some(context), String::new())?;
        let (key_id, pt) = self.unwrap(key, blob, context)?;
        Ok(DecryptOut { key_id, plaintext: SecretBytes::new(pt), key_material_id: self.st().material.clone() })
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &AwsContext) -> Result<CipherOut, ApiError> {
        self.record("Encrypt", key, Some(context), plaintext.len().to_string())?;
        let (key_id, blob) = self.wrap(key, plaintext, context);
        Ok(CipherOut { key_id, blob, key_material_id: None })
    }

    async fn re_encrypt(
        &self,
        source_key: &str,
        blob: &[u8],
        source_context: &AwsContext,
        destination_key: &str,
        destination_context: &AwsContext,
    ) -> Result<CipherOut, ApiError> {
        self.record("ReEncrypt", source_key, Some(source_context), destination_key.to_owned())?;
        let (_, pt) = self.unwrap(source_key, blob, source_context)?;
        let (key_id, blob) = self.wrap(destination_key, &pt, destination_context);
        Ok(CipherOut { key_id, blob, key_material_id: self.st().material.clone() })
    }

    async fn create_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
        custom_key_store: Option<&str>,
    ) -> Result<KeyDesc, ApiError> {
        let extra = format!("{description}|{tags:?}|{custom_key_store:?}");
        self.record("CreateKey", "", None, extra)?;
        let mut d = self.desc("0000aaaa-12ab-34cd-56ef-1234567890ab");
        d.description = description.to_owned();
        if custom_key_store.is_some() {
            d.origin = "AWS_CLOUDHSM".into();
        }
        Ok(d)
    }

    async fn describe_key(&self, key: &str) -> Result<KeyDesc, ApiError> {
        self.record("DescribeKey", key, None, String::new())?;
        Ok(self.desc(key))
    }

    async fn list_keys(&self, marker: Option<String>) -> Result<Page<String>, ApiError> {
        self.record("ListKeys", "", None, String::new())?;
        Ok(page(&self.st().keys, marker))
    }

    async fn list_aliases(&self, key: Option<&str>, marker: Option<String>) -> Result<Page<AliasOut>, ApiError> {
        self.record("ListAliases", key.unwrap_or(""), None, String::new())?;
        Ok(page(&self.st().aliases, marker))
    }

    async fn list_key_rotations(&self, key: &str, marker: Option<String>) -> Result<Page<RotationOut>, ApiError> {
        self.record("ListKeyRotations", key, None, String::new())?;
        Ok(page(&self.st().rotations, marker))
    }

    async fn list_resource_tags(&self, key: &str, marker: Option<String>) -> Result<Page<(String, String)>, ApiError> {
        self.record("ListResourceTags", key, None, String::new())?;
        Ok(page(&self.st().tags, marker))
    }

    async fn create_alias(&self, alias: &str, target_key: &str) -> Result<(), ApiError> {
        self.record("CreateAlias", target_key, None, alias.to_owned())
    }

    async fn delete_alias(&self, alias: &str) -> Result<(), ApiError> {
        self.record("DeleteAlias", alias, None, String::new())
    }

    async fn enable_key(&self, key: &str) -> Result<(), ApiError> {
        self.record("EnableKey", key, None, String::new())
    }

    async fn disable_key(&self, key: &str) -> Result<(), ApiError> {
        self.record("DisableKey", key, None, String::new())
    }

    async fn schedule_key_deletion(&self, key: &str, pending_days: i32) -> Result<(), ApiError> {
        self.record("ScheduleKeyDeletion", key, None, pending_days.to_string())
    }

    async fn cancel_key_deletion(&self, key: &str) -> Result<(), ApiError> {
        self.record("CancelKeyDeletion", key, None, String::new())
    }

    async fn rotate_key_on_demand(&self, key: &str) -> Result<(), ApiError> {
        self.record("RotateKeyOnDemand", key, None, String::new())
    }
}
