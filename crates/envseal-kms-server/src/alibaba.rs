//! The Alibaba Cloud KMS RPC API, `Version=2016-01-20`: parameters from the query string and
//! the form body, `Action` from the `Action` parameter or the `x-acs-action` header, JSON
//! responses with a `RequestId` (added by the HTTP layer).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use envseal_core::kms::{KeyMetadata, KeySpec, KeyUpdate, KeyVersionInfo, ProtectionLevel};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::backend::{self, DEFAULT_ROTATION};
use crate::error::{Class, Fault};
use crate::hook::{self, context_json};
use crate::request::{Call, Incoming};
use crate::wire;
use crate::{DEFAULT_ALIBABA_REGION, acs};

/// The API version served.
pub(crate) const VERSION: &str = "2016-01-20";
/// Alibaba's Encrypt limit (6 KiB).
const MAX_ENCRYPT: usize = envseal_core::kms::MAX_DIRECT_ENCRYPT;
/// Longest ciphertext blob accepted (base64-decoded).
const MAX_BLOB: usize = 16 * 1024;
/// Every parameter name the Alibaba API of the emulator reads (`N`: a 1-based index), for the
/// look-alike check ([`crate::lookalike`]).
const KNOWN: &[&str] = &[
    // Common (RPC and V3).
    "Action",
    "Version",
    "Format",
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "SignatureType",
    "Timestamp",
    "RegionId",
    "SecurityToken",
    "DryRun",
    // Keys and cryptography.
    "KeyId",
    "KeySpec",
    "KeyUsage",
    "Origin",
    "ProtectionLevel",
    "Description",
    "Tags",
    "TagKeys",
    "EnableAutomaticRotation",
    "RotationInterval",
    "DKMSInstanceId",
    "NumberOfBytes",
    "EncryptionContext",
    "Plaintext",
    "CiphertextBlob",
    "SourceEncryptionContext",
    "DestinationEncryptionContext",
    "SourceKeyId",
    "SourceKeyVersionId",
    "SourceEncryptionAlgorithm",
    "DestinationKeyId",
    "AliasName",
    "PageNumber",
    "PageSize",
    "Filters",
    "PendingWindowInDays",
    "KeyVersionId",
    "Policy",
    "PolicyName",
    "ResourceType",
    "ResourceId.N",
    "Tag.N.Key",
    "Tag.N.Value",
    "TagKey.N",
    "All",
    "NextToken",
    "PasswordLength",
    "ExcludeCharacters",
    "ExcludeLowercase",
    "ExcludeUppercase",
    "ExcludeNumbers",
    "ExcludePunctuation",
    "RequireEachIncludedType",
    // STS.
    "RoleArn",
    "RoleSessionName",
    "DurationSeconds",
];

/// Regions DescribeRegions lists (one account, one key set for all: see emulator.md).
const REGIONS: &[&str] = &[
    "cn-hangzhou",
    "cn-shanghai",
    "cn-qingdao",
    "cn-beijing",
    "cn-zhangjiakou",
    "cn-huhehaote",
    "cn-shenzhen",
    "cn-chengdu",
    "cn-hongkong",
    "ap-southeast-1",
    "ap-southeast-3",
    "ap-southeast-5",
    "ap-northeast-1",
    "eu-central-1",
    "eu-west-1",
    "us-west-1",
    "us-east-1",
    "me-east-1",
];

/// Rotation interval bounds (7 to 365 days).
const MIN_ROTATION: Duration = Duration::from_secs(7 * 86_400);
const MAX_ROTATION: Duration = Duration::from_secs(365 * 86_400);

struct Params(BTreeMap<String, String>);

impl Params {
    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn required(&self, name: &str) -> Result<&str, Fault> {
        self.str(name).ok_or_else(|| Fault::missing(name))
    }

    fn int(&self, name: &str) -> Result<Option<i64>, Fault> {
        self.str(name)
            .map(|s| s.parse::<i64>().map_err(|_| Fault::invalid(format!("{name} must be an integer"))))
            .transpose()
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, Fault> {
        match self.str(name) {
            None => Ok(None),
            Some(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(Fault::invalid(format!("{name} must be true or false"))),
        }
    }

    fn context(&self, name: &str) -> Result<envseal_core::EncryptionContext, Fault> {
        match self.str(name) {
            None => Ok(envseal_core::EncryptionContext::new()),
            Some(s) => backend::context_from_json(s).map_err(|f| Fault::invalid(format!("{name}: {}", f.message))),
        }
    }

    fn blob(&self, name: &str) -> Result<Vec<u8>, Fault> {
        let bytes = STANDARD
            .decode(self.required(name)?)
            .map_err(|_| Fault::new(Class::InvalidCiphertext, format!("{name} is not valid base64")))?;
        if bytes.is_empty() || bytes.len() > MAX_BLOB {
            return Err(Fault::new(Class::InvalidCiphertext, format!("{name} must be 1 to {MAX_BLOB} bytes")));
        }
        Ok(bytes)
    }

    fn dry_run(&self) -> Result<bool, Fault> {
        Ok(self.bool("DryRun")?.unwrap_or(false))
    }
}

/// State for one Alibaba request.
struct Ali<'c, 'a> {
    call: &'c mut Call<'a>,
    region: String,
}

impl Ali<'_, '_> {
    fn account(&self) -> &str {
        &self.call.app.cfg.alibaba_account
    }

    fn arn(&self, key_id: &str) -> String {
        format!("acs:kms:{}:{}:key/{key_id}", self.region, self.account())
    }

    fn alias_arn(&self, alias: &str) -> String {
        format!("acs:kms:{}:{}:{alias}", self.region, self.account())
    }

    /// A `KeyId` (id, alias, or `acs:kms:REGION:ACCOUNT:key/ID` / `...:alias/NAME`) → what the
    /// backend takes.
    fn key_ref(&self, s: &str) -> Result<String, Fault> {
        let Some(rest) = s.strip_prefix("acs:") else { return Ok(s.to_owned()) };
        let parts: Vec<&str> = rest.splitn(4, ':').collect();
        let [service, _region, account, resource] = parts[..] else {
            return Err(Fault::new(Class::KeyNotFound, "The specified Key is not found."));
        };
        if service != "kms" || account != self.account() {
            return Err(Fault::new(Class::KeyNotFound, "The specified Key is not found."));
        }
        if let Some(id) = resource.strip_prefix("key/") {
            return Ok(id.to_owned());
        }
        if resource.starts_with("alias/") {
            return Ok(resource.to_owned());
        }
        Err(Fault::new(Class::KeyNotFound, "The specified Key is not found."))
    }

    async fn key(&mut self, s: &str) -> Result<String, Fault> {
        let r = self.key_ref(s)?;
        let id = self.call.app.backend.resolve(&r).await?;
        self.call.authorize(Some(&id)).await?;
        Ok(id)
    }

    fn metadata(&self, m: &KeyMetadata) -> Value {
        let be = &self.call.app.backend;
        let period = be.rotation_period(m);
        let enabled = period.is_some();
        let last = m.versions.iter().map(|v| v.created_at).max().unwrap_or(m.created_at);
        json!({
            "KeyId": m.key_id,
            "Arn": self.arn(&m.key_id),
            "CreationDate": wire::iso8601(m.created_at),
            "Creator": self.account(),
            "Description": m.description,
            "KeyState": m.state.as_str(),
            "KeySpec": "Aliyun_AES_256",
            "KeyUsage": "ENCRYPT/DECRYPT",
            "Origin": "Aliyun_KMS",
            "ProtectionLevel": m.protection_level.as_str(),
            "PrimaryKeyVersion": m.current_version,
            "DeleteDate": m.deletion_date.map(wire::iso8601).unwrap_or_default(),
            "MaterialExpireTime": "",
            "AutomaticRotation": if enabled { "Enabled" } else { "Disabled" },
            "RotationInterval": period.map(|p| format!("{}s", p.as_secs_f64().round() as u64)).unwrap_or_default(),
            "NextRotationDate": be.next_rotation(m).map(wire::iso8601).unwrap_or_default(),
            "LastRotationDate": wire::iso8601(last),
            "DeletionProtection": "Disabled",
        })
    }

    fn version(&self, key_id: &str, v: &KeyVersionInfo) -> Value {
        json!({"KeyId": key_id, "KeyVersionId": v.id, "CreationDate": wire::iso8601(v.created_at)})
    }
}

/// `365d` or `31536000s` (Alibaba's RotationInterval forms).
fn parse_interval(s: &str) -> Result<Duration, Fault> {
    let bad = || Fault::invalid("RotationInterval must be like 365d or 31536000s, between 7 and 365 days");
    // By suffix, never by byte index: the value is client input and may end in any character.
    let d = if let Some(days) = s.strip_suffix('d') {
        let n: u64 = days.parse().map_err(|_| bad())?;
        Duration::from_secs(n.checked_mul(86_400).ok_or_else(bad)?)
    } else if let Some(secs) = s.strip_suffix('s') {
        Duration::from_secs(secs.parse().map_err(|_| bad())?)
    } else {
        return Err(bad());
    };
    if !(MIN_ROTATION..=MAX_ROTATION).contains(&d) {
        return Err(bad());
    }
    Ok(d)
}

/// Handles one Alibaba request: action, version, signature, then the action.
pub(crate) async fn handle(call: &mut Call<'_>, req: &Incoming) -> Result<Value, Fault> {
    let p = Params(acs::params(req)?);
    let action = match (req.header("x-acs-action"), p.str("Action")) {
        (Some(h), Some(a)) if h != a => return Err(Fault::invalid("the Action parameter and x-acs-action disagree")),
        (Some(a), _) | (None, Some(a)) => a.to_owned(),
        (None, None) => return Err(Fault::missing("Action")),
    };
    call.action = action.clone();
    let version = req.header("x-acs-version").or(p.str("Version")).ok_or_else(|| Fault::missing("Version"))?;
    if version == crate::sts::ALIBABA_VERSION {
        return crate::sts::handle_alibaba(call, req, &p.0).await;
    }
    if version != VERSION {
        return Err(Fault::new(
            Class::UnsupportedVersion,
            format!("Specified parameter Version is not valid: this emulator serves {VERSION}"),
        ));
    }
    if p.str("Format").is_some_and(|f| !f.eq_ignore_ascii_case("json")) {
        return Err(Fault::invalid("this emulator answers in JSON only (Format=JSON)"));
    }
    let app = call.app;
    let verified = acs::verify(req, &p.0, &app.cfg.credentials, &app.nonces, app.cfg.max_clock_skew)?;
    call.principal = verified.key.principal().to_owned();
    call.access_key_id = verified.key.id().to_owned();
    call.signature = match verified.scheme {
        acs::Scheme::V3 => "acs3",
        acs::Scheme::V2 => "rpc-v2",
    };
    let region = p.str("RegionId").unwrap_or(DEFAULT_ALIBABA_REGION).to_owned();
    call.region = region.clone();
    call.security_token = req.header("x-acs-security-token").is_some() || p.str("SecurityToken").is_some();
    let values: Vec<(&str, Value)> = p.0.iter().map(|(k, v)| (k.as_str(), Value::String(v.clone()))).collect();
    call.params = hook::safe_params(values.iter().map(|(k, v)| (*k, v)));
    crate::lookalike::check(p.0.keys().map(String::as_str), KNOWN)?;
    app.throttle.check("alibaba", &app.cfg.alibaba_account, &action)?;
    let mut ali = Ali { call, region };
    dispatch(&mut ali, &action, &p).await
}

fn dry_run() -> Fault {
    Fault::new(Class::DryRun, "Request validation has been passed with DryRun flag set.")
}

async fn dispatch(ali: &mut Ali<'_, '_>, action: &str, p: &Params) -> Result<Value, Fault> {
    let be = &ali.call.app.backend;
    match action {
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            let len = match (p.int("NumberOfBytes")?, p.str("KeySpec")) {
                (Some(n), _) if (1..=1024).contains(&n) => n as usize,
                (Some(_), _) => return Err(Fault::invalid("NumberOfBytes must be between 1 and 1024")),
                (None, None | Some("AES_256")) => 32,
                (None, Some("AES_128")) => 16,
                (None, Some(_)) => return Err(Fault::invalid("KeySpec must be AES_256 or AES_128")),
            };
            let ctx = p.context("EncryptionContext")?;
            ali.call.note_context(&ctx);
            let id = ali.key(p.required("KeyId")?).await?;
            if p.dry_run()? {
                return Err(dry_run());
            }
            let (plaintext, wrapped) = be.data_key(&id, len, &ctx).await?;
            let mut out = json!({
                "KeyId": wrapped.key_id,
                "KeyVersionId": wrapped.key_version,
                "CiphertextBlob": STANDARD.encode(&wrapped.blob),
            });
            if action == "GenerateDataKey"
                && let Value::Object(o) = &mut out
            {
                o.insert("Plaintext".into(), json!(ali.call.secrets.base64(plaintext)));
            }
            Ok(out)
        }
        "Encrypt" => {
            let plaintext = Zeroizing::new(
                STANDARD
                    .decode(p.required("Plaintext")?)
                    .map_err(|_| Fault::invalid("Plaintext must be base64-encoded"))?,
            );
            let ctx = p.context("EncryptionContext")?;
            ali.call.note_context(&ctx);
            let id = ali.key(p.required("KeyId")?).await?;
            if p.dry_run()? {
                return Err(dry_run());
            }
            let wrapped = be.encrypt(&id, &plaintext, &ctx, MAX_ENCRYPT).await?;
            Ok(json!({
                "KeyId": wrapped.key_id,
                "KeyVersionId": wrapped.key_version,
                "CiphertextBlob": STANDARD.encode(&wrapped.blob),
            }))
        }
        "Decrypt" => {
            let blob = p.blob("CiphertextBlob")?;
            let ctx = p.context("EncryptionContext")?;
            ali.call.note_context(&ctx);
            let dry = p.dry_run()?;
            let opened = be.open(blob, &ctx).await?;
            ali.call.authorize(Some(&opened.key_id)).await?;
            if dry {
                return Err(dry_run());
            }
            Ok(json!({
                "KeyId": opened.key_id,
                "KeyVersionId": opened.key_version,
                "Plaintext": ali.call.secrets.base64(opened.plaintext),
            }))
        }
        "ReEncrypt" => {
            if p.str("SourceEncryptionAlgorithm").is_some() || p.str("SourceKeyVersionId").is_some() {
                return Err(Fault::new(
                    Class::Unsupported,
                    "asymmetric sources (SourceKeyVersionId, SourceEncryptionAlgorithm) are not supported",
                ));
            }
            let blob = p.blob("CiphertextBlob")?;
            let source_ctx = p.context("SourceEncryptionContext")?;
            ali.call.note_context(&source_ctx);
            let destination_ctx = p.context("DestinationEncryptionContext")?;
            ali.call.param("DestinationEncryptionContext", context_json(&destination_ctx));
            let named = match p.str("SourceKeyId") {
                Some(k) => Some(be.resolve(&ali.key_ref(k)?).await?),
                None => None,
            };
            let destination = be.resolve(&ali.key_ref(p.required("DestinationKeyId")?)?).await?;
            let dry = p.dry_run()?;
            let (source, wrapped) = be.re_encrypt(blob, &source_ctx, &destination, &destination_ctx).await?;
            if named.is_some_and(|n| n != source.key_id) {
                return Err(Fault::new(Class::IncorrectKey, "SourceKeyId does not identify the key of the ciphertext"));
            }
            ali.call.authorize(Some(&source.key_id)).await?;
            ali.call.authorize(Some(&destination)).await?;
            if dry {
                return Err(dry_run());
            }
            Ok(json!({
                "KeyId": wrapped.key_id,
                "KeyVersionId": wrapped.key_version,
                "CiphertextBlob": STANDARD.encode(&wrapped.blob),
            }))
        }
        "CreateKey" => {
            if p.str("KeySpec").is_some_and(|s| s != "Aliyun_AES_256") {
                return Err(Fault::new(
                    Class::Unsupported,
                    "only KeySpec=Aliyun_AES_256 is supported by this emulator",
                ));
            }
            if p.str("KeyUsage").is_some_and(|s| s != "ENCRYPT/DECRYPT") {
                return Err(Fault::new(
                    Class::Unsupported,
                    "only KeyUsage=ENCRYPT/DECRYPT is supported by this emulator",
                ));
            }
            if p.str("Origin").is_some_and(|s| s != "Aliyun_KMS") {
                return Err(Fault::new(Class::Unsupported, "only Origin=Aliyun_KMS is supported by this emulator"));
            }
            if p.str("DKMSInstanceId").is_some() {
                return Err(Fault::new(Class::Unsupported, "KMS instances (DKMSInstanceId) are not emulated"));
            }
            let protection_level = match p.str("ProtectionLevel") {
                None | Some("SOFTWARE") => ProtectionLevel::Software,
                Some("HSM") => ProtectionLevel::Hsm,
                Some(_) => return Err(Fault::invalid("ProtectionLevel must be SOFTWARE or HSM")),
            };
            let rotation = match p.bool("EnableAutomaticRotation")? {
                Some(true) => {
                    Some(p.str("RotationInterval").map(parse_interval).transpose()?.unwrap_or(DEFAULT_ROTATION))
                }
                _ => None,
            };
            let tags = p.str("Tags").map(json_tags).transpose()?.unwrap_or_default();
            let description = p.str("Description").unwrap_or("").to_owned();
            ali.call.authorize(None).await?;
            let mut m = be.km()?.create_key(&KeySpec { description, protection_level, tags }).await?;
            ali.call.resource = Some(m.key_id.clone());
            if let Some(r) = rotation {
                m = be.set_rotation(&m.key_id, Some(r)).await?;
            }
            Ok(json!({ "KeyMetadata": ali.metadata(&m) }))
        }
        "DescribeKey" => {
            let id = ali.key(p.required("KeyId")?).await?;
            let m = be.describe(&id).await?;
            Ok(json!({ "KeyMetadata": ali.metadata(&m) }))
        }
        "ListKeys" => {
            let filters = p.str("Filters").map(parse_filters).transpose()?.unwrap_or_default();
            ali.call.authorize(None).await?;
            let keys: Vec<KeyMetadata> =
                be.km()?.list_keys().await?.into_iter().filter(|m| filters.iter().all(|f| f.matches(m))).collect();
            let (page, total, number, size) = paginate(keys, p)?;
            let keys: Vec<Value> =
                page.iter().map(|m| json!({"KeyId": m.key_id, "KeyArn": ali.arn(&m.key_id)})).collect();
            Ok(json!({"Keys": {"Key": keys}, "TotalCount": total, "PageNumber": number, "PageSize": size}))
        }
        "ListAliases" | "ListAliasesByKeyId" => {
            let filter = if action == "ListAliasesByKeyId" {
                Some(ali.key(p.required("KeyId")?).await?)
            } else {
                ali.call.authorize(None).await?;
                None
            };
            let aliases: Vec<_> = be
                .km()?
                .list_aliases()
                .await?
                .into_iter()
                .filter(|a| filter.as_ref().is_none_or(|f| *f == a.key_id))
                .collect();
            let (page, total, number, size) = paginate(aliases, p)?;
            let aliases: Vec<Value> = page
                .iter()
                .map(|a| json!({"AliasName": a.name, "AliasArn": ali.alias_arn(&a.name), "KeyId": a.key_id}))
                .collect();
            Ok(json!({"Aliases": {"Alias": aliases}, "TotalCount": total, "PageNumber": number, "PageSize": size}))
        }
        "ListResourceTags" => {
            let id = ali.key(p.required("KeyId")?).await?;
            let m = be.describe(&id).await?;
            let tags: Vec<Value> =
                m.tags.iter().map(|(k, v)| json!({"KeyId": m.key_id, "TagKey": k, "TagValue": v})).collect();
            Ok(json!({"Tags": {"Tag": tags}}))
        }
        "CreateAlias" => {
            let alias = p.required("AliasName")?;
            if !alias.starts_with("alias/") {
                return Err(Fault::invalid("AliasName must start with alias/"));
            }
            let id = ali.key(p.required("KeyId")?).await?;
            be.km()?.create_alias(alias, &id).await?;
            Ok(json!({}))
        }
        "DeleteAlias" => {
            let alias = p.required("AliasName")?;
            let target = be.resolve(alias).await?;
            ali.call.authorize(Some(&target)).await?;
            be.km()?.delete_alias(alias).await?;
            Ok(json!({}))
        }
        "EnableKey" | "DisableKey" | "CancelKeyDeletion" => {
            let id = ali.key(p.required("KeyId")?).await?;
            let km = be.km()?;
            match action {
                "EnableKey" => km.enable_key(&id).await?,
                "DisableKey" => km.disable_key(&id).await?,
                _ => km.cancel_key_deletion(&id).await?,
            }
            Ok(json!({}))
        }
        "ScheduleKeyDeletion" => {
            let days = p.int("PendingWindowInDays")?.ok_or_else(|| Fault::missing("PendingWindowInDays"))?;
            let days = u32::try_from(days).map_err(|_| Fault::invalid("PendingWindowInDays must be 7 to 30"))?;
            let id = ali.key(p.required("KeyId")?).await?;
            be.km()?.schedule_key_deletion(&id, days).await?;
            Ok(json!({}))
        }
        "CreateKeyVersion" => {
            let id = ali.key(p.required("KeyId")?).await?;
            let m = be.km()?.rotate_key(&id).await?;
            let v = m
                .versions
                .iter()
                .find(|v| v.id == m.current_version)
                .cloned()
                .ok_or_else(|| Fault::new(Class::Internal, "the new version is not listed"))?;
            Ok(json!({ "KeyVersion": ali.version(&id, &v) }))
        }
        "ListKeyVersions" => {
            let id = ali.key(p.required("KeyId")?).await?;
            let m = be.describe(&id).await?;
            let (page, total, number, size) = paginate(m.versions, p)?;
            let versions: Vec<Value> = page.iter().map(|v| ali.version(&id, v)).collect();
            Ok(
                json!({"KeyVersions": {"KeyVersion": versions}, "TotalCount": total, "PageNumber": number, "PageSize": size}),
            )
        }
        "DescribeKeyVersion" => {
            let id = ali.key(p.required("KeyId")?).await?;
            let wanted = p.required("KeyVersionId")?;
            let m = be.describe(&id).await?;
            let v = m
                .versions
                .iter()
                .find(|v| v.id == wanted)
                .ok_or_else(|| Fault::new(Class::KeyVersionNotFound, "The specified Key version is not found."))?;
            Ok(json!({ "KeyVersion": ali.version(&id, v) }))
        }
        "UpdateRotationPolicy" => {
            let enabled =
                p.bool("EnableAutomaticRotation")?.ok_or_else(|| Fault::missing("EnableAutomaticRotation"))?;
            let given = p.str("RotationInterval").map(parse_interval).transpose()?;
            if enabled && given.is_none() {
                return Err(Fault::missing("RotationInterval"));
            }
            let id = ali.key(p.required("KeyId")?).await?;
            be.set_rotation(&id, if enabled { given } else { None }).await?;
            Ok(json!({}))
        }
        "UpdateAlias" => {
            let alias = p.required("AliasName")?;
            let current = be.resolve(&ali.key_ref(alias)?).await?;
            let target = be.resolve(&ali.key_ref(p.required("KeyId")?)?).await?;
            ali.call.authorize(Some(&current)).await?;
            ali.call.authorize(Some(&target)).await?;
            be.km()?.update_alias(alias, &target).await?;
            Ok(json!({}))
        }
        "UpdateKeyDescription" => {
            let description = p.0.get("Description").ok_or_else(|| Fault::missing("Description"))?.clone();
            let id = ali.key(p.required("KeyId")?).await?;
            be.km()?.update_key(&id, &KeyUpdate::default().description(description)).await?;
            Ok(json!({}))
        }
        "TagResource" | "UntagResource" => {
            if p.str("SecretName").is_some() || p.str("CertificateId").is_some() {
                return Err(Fault::new(Class::Unsupported, "only keys (KeyId) can be tagged by this emulator"));
            }
            let id = ali.key(p.required("KeyId")?).await?;
            let mut update = KeyUpdate::default();
            if action == "TagResource" {
                for (k, v) in json_tags(p.required("Tags")?)? {
                    update = update.tag(k, v);
                }
            } else {
                let keys: Vec<String> = serde_json::from_str(p.required("TagKeys")?)
                    .map_err(|_| Fault::invalid("TagKeys must be a JSON list of strings"))?;
                for k in keys {
                    update = update.untag(k);
                }
            }
            be.km()?.update_key(&id, &update).await?;
            Ok(json!({}))
        }
        "TagResources" | "UntagResources" | "ListTagResources" => {
            if p.str("ResourceType").is_some_and(|t| !t.eq_ignore_ascii_case("key")) {
                return Err(Fault::new(Class::Unsupported, "only ResourceType=key is supported by this emulator"));
            }
            let mut ids = Vec::new();
            for (_, r) in indexed(p, "ResourceId", "")? {
                ids.push(ali.key(&r).await?);
            }
            if action == "ListTagResources" {
                if ids.is_empty() {
                    ali.call.authorize(None).await?;
                    ids = be.km()?.list_keys().await?.into_iter().map(|m| m.key_id).collect();
                }
                let wanted: Vec<(String, String)> = indexed(p, "Tag", ".Key")?
                    .into_iter()
                    .map(|(n, k)| (k, p.str(&format!("Tag.{n}.Value")).unwrap_or("").to_owned()))
                    .collect();
                let mut out = Vec::new();
                for id in &ids {
                    let m = be.describe(id).await?;
                    for (k, v) in &m.tags {
                        if wanted.is_empty() || wanted.iter().any(|(wk, wv)| wk == k && (wv.is_empty() || wv == v)) {
                            out.push(json!({"ResourceId": id, "ResourceType": "key", "TagKey": k, "TagValue": v}));
                        }
                    }
                }
                return Ok(json!({"TagResources": {"TagResource": out}, "NextToken": ""}));
            }
            if ids.is_empty() {
                return Err(Fault::missing("ResourceId.1"));
            }
            let mut update = KeyUpdate::default();
            if action == "TagResources" {
                let tags = indexed(p, "Tag", ".Key")?;
                if tags.is_empty() {
                    return Err(Fault::missing("Tag.1.Key"));
                }
                for (n, k) in tags {
                    update = update.tag(k, p.str(&format!("Tag.{n}.Value")).unwrap_or(""));
                }
            } else if p.bool("All")? == Some(true) {
                for id in &ids {
                    let m = be.describe(id).await?;
                    let mut all = KeyUpdate::default();
                    for k in m.tags.keys() {
                        all = all.untag(k.clone());
                    }
                    be.km()?.update_key(id, &all).await?;
                }
                return Ok(json!({}));
            } else {
                for (_, k) in indexed(p, "TagKey", "")? {
                    update = update.untag(k);
                }
            }
            for id in &ids {
                be.km()?.update_key(id, &update).await?;
            }
            Ok(json!({}))
        }
        "GetKeyPolicy" | "SetKeyPolicy" => {
            if p.str("PolicyName").is_some_and(|n| n != envseal_iam::KEY_POLICY_NAME) {
                return Err(Fault::invalid("PolicyName must be default"));
            }
            let id = ali.key(p.required("KeyId")?).await?;
            let app = ali.call.app;
            if action == "GetKeyPolicy" {
                let policy = match app.keys.get(&id).policy {
                    Some(p) => p.to_string(),
                    None => envseal_iam::default_key_policy(ali.account(), envseal_iam::Flavor::Alibaba),
                };
                return Ok(json!({"Policy": policy}));
            }
            let policy = crate::keypolicy::parse(p.required("Policy")?)?;
            crate::keypolicy::check_lockout(ali.call, &id, &policy, false)?;
            app.keys.set_policy(&id, policy);
            app.persist();
            Ok(json!({}))
        }
        "GetRandomPassword" => {
            ali.call.authorize(None).await?;
            let length = p.int("PasswordLength")?.unwrap_or(32);
            let length = usize::try_from(length)
                .ok()
                .filter(|n| (8..=128).contains(n))
                .ok_or_else(|| Fault::invalid("PasswordLength must be 8 to 128"))?;
            let flag = |n: &str| p.bool(n).map(|b| b.unwrap_or(false));
            let options = crate::random::PasswordOptions {
                length,
                exclude: p.str("ExcludeCharacters").unwrap_or("").to_owned(),
                lowercase: !flag("ExcludeLowercase")?,
                uppercase: !flag("ExcludeUppercase")?,
                numbers: !flag("ExcludeNumbers")?,
                punctuation: !flag("ExcludePunctuation")?,
                each: p.bool("RequireEachIncludedType")?.unwrap_or(true),
            };
            let password = crate::random::password(&options)?;
            Ok(json!({"RandomPassword": ali.call.secrets.text(password)}))
        }
        "DescribeRegions" => {
            ali.call.authorize(None).await?;
            let regions: Vec<Value> = REGIONS.iter().map(|r| json!({"RegionId": r})).collect();
            Ok(json!({"Regions": {"Region": regions}}))
        }
        _ => Err(Fault::new(
            Class::UnknownAction,
            format!("Specified api {action} is not found (not supported by this emulator)"),
        )),
    }
}

/// `Name.1`, `Name.2`, ... (with `suffix` after the index, e.g. `.Key`): (index, value), in
/// index order. Indexes must run from 1 without gaps.
fn indexed(p: &Params, name: &str, suffix: &str) -> Result<Vec<(usize, String)>, Fault> {
    let mut out = Vec::new();
    for (k, v) in &p.0 {
        let Some(n) = k.strip_prefix(name).and_then(|r| r.strip_prefix('.')).and_then(|r| r.strip_suffix(suffix))
        else {
            continue;
        };
        if let Ok(n) = n.parse::<usize>() {
            out.push((n, v.clone()));
        }
    }
    out.sort();
    if out.iter().enumerate().any(|(i, (n, _))| *n != i + 1) {
        return Err(Fault::invalid(format!("{name}.N{suffix} must be numbered from 1 without gaps")));
    }
    if out.len() > 20 {
        return Err(Fault::invalid(format!("at most 20 {name}.N{suffix} parameters")));
    }
    Ok(out)
}

/// `[{"TagKey": "k", "TagValue": "v"}, ...]`.
fn json_tags(text: &str) -> Result<BTreeMap<String, String>, Fault> {
    let bad = || Fault::invalid("Tags must be a JSON list of {TagKey, TagValue}");
    let list: Vec<Value> = serde_json::from_str(text).map_err(|_| bad())?;
    let mut tags = BTreeMap::new();
    for t in list {
        let (Some(k), Some(v)) = (t.get("TagKey").and_then(Value::as_str), t.get("TagValue").and_then(Value::as_str))
        else {
            return Err(bad());
        };
        tags.insert(k.to_owned(), v.to_owned());
    }
    Ok(tags)
}

/// One ListKeys filter: a key attribute and the values it may have (values ORed, filters
/// ANDed).
struct Filter {
    key: String,
    values: Vec<String>,
}

impl Filter {
    fn matches(&self, m: &KeyMetadata) -> bool {
        let value = match self.key.as_str() {
            "KeyState" => m.state.as_str(),
            "ProtectionLevel" => m.protection_level.as_str(),
            "KeySpec" => "Aliyun_AES_256",
            "KeyUsage" => "ENCRYPT/DECRYPT",
            _ => "User", // CreatorType: every key is a user's
        };
        self.values.iter().any(|v| v == value)
    }
}

/// `Filters`: `[{"Key": "KeyState", "Values": ["Enabled"]}, ...]`.
fn parse_filters(text: &str) -> Result<Vec<Filter>, Fault> {
    let bad = || {
        Fault::invalid(
            "Filters must be a JSON list of {\"Key\": KeyState|KeySpec|KeyUsage|ProtectionLevel|CreatorType, \"Values\": [...]}",
        )
    };
    let list: Vec<Value> = serde_json::from_str(text).map_err(|_| bad())?;
    if list.len() > 10 {
        return Err(Fault::invalid("at most 10 Filters"));
    }
    list.into_iter()
        .map(|f| {
            let key = f.get("Key").and_then(Value::as_str).ok_or_else(bad)?;
            if !["KeyState", "KeySpec", "KeyUsage", "ProtectionLevel", "CreatorType"].contains(&key) {
                return Err(bad());
            }
            let values = f
                .get("Values")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty() && a.len() <= 10)
                .ok_or_else(bad)?
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
                .collect::<Result<_, _>>()?;
            Ok(Filter { key: key.to_owned(), values })
        })
        .collect()
}

/// `PageNumber` (from 1) and `PageSize` (1..=100, default 10): the page, the total, and the
/// page number and size used.
fn paginate<T>(items: Vec<T>, p: &Params) -> Result<(Vec<T>, usize, i64, i64), Fault> {
    let number = p.int("PageNumber")?.unwrap_or(1);
    let size = p.int("PageSize")?.unwrap_or(10);
    if number < 1 || !(1..=100).contains(&size) {
        return Err(Fault::invalid("PageNumber must be at least 1 and PageSize 1 to 100"));
    }
    let total = items.len();
    let start = usize::try_from((number - 1).saturating_mul(size)).unwrap_or(usize::MAX);
    let page = items.into_iter().skip(start).take(size as usize).collect();
    Ok((page, total, number, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_intervals() {
        assert_eq!(parse_interval("365d").unwrap(), Duration::from_secs(365 * 86_400));
        assert_eq!(parse_interval("604800s").unwrap(), Duration::from_secs(604_800));
        for bad in ["6d", "366d", "1s", "d", "", "7x", "-7d", "99999999999999999999d", "3\u{5db}", "30\u{e9}"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
