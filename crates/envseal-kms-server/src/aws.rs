//! The AWS KMS JSON 1.1 API (`X-Amz-Target: TrentService.<Action>`), after botocore's
//! data/kms/2014-11-01/service-2.json: request members, response members, error types.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use envseal_core::EncryptionContext;
use envseal_core::kms::{KeyMetadata, KeySpec, KeyState, ProtectionLevel};
use serde_json::{Map, Value, json};

use envseal_core::kms::KeyUpdate;
use envseal_iam::{CONTEXT_OPERATIONS, GRANT_OPERATIONS, Grant, GrantConstraints};

use crate::backend;
use crate::error::{Class, Fault};
use crate::hook::{self, context_json};
use crate::request::{Call, Incoming};
use crate::sigv4;
use crate::wire;

/// AWS's limit for Encrypt's `Plaintext`.
const MAX_ENCRYPT: usize = 4096;
/// AWS's limit for a `CiphertextBlob`.
const MAX_BLOB: usize = 6144;
/// The only symmetric algorithm.
const ALGORITHM: &str = "SYMMETRIC_DEFAULT";

/// Every request member the AWS API of the emulator reads, for the look-alike check
/// ([`crate::lookalike`]).
const KNOWN: &[&str] = &[
    "KeyId",
    "KeySpec",
    "NumberOfBytes",
    "EncryptionContext",
    "Plaintext",
    "CiphertextBlob",
    "EncryptionAlgorithm",
    "SourceEncryptionContext",
    "DestinationEncryptionContext",
    "SourceKeyId",
    "DestinationKeyId",
    "SourceEncryptionAlgorithm",
    "DestinationEncryptionAlgorithm",
    "KeyUsage",
    "CustomerMasterKeySpec",
    "Origin",
    "Description",
    "Tags",
    "TagKeys",
    "Policy",
    "PolicyName",
    "BypassPolicyLockoutSafetyCheck",
    "AliasName",
    "TargetKeyId",
    "Limit",
    "Marker",
    "PendingWindowInDays",
    "RotationPeriodInDays",
    "GrantTokens",
    "GranteePrincipal",
    "RetiringPrincipal",
    "Operations",
    "Constraints",
    "Name",
    "GrantId",
    "GrantToken",
    "CustomKeyStoreId",
    "Recipient",
    "DryRun",
    "MultiRegion",
    "XksKeyId",
    "IncludeKeyMaterial",
];

/// The request body, a JSON object.
struct Body(Map<String, Value>);

impl Body {
    fn str(&self, name: &str) -> Result<Option<&str>, Fault> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Fault::new(Class::MalformedBody, format!("{name} must be a string"))),
        }
    }

    fn required(&self, name: &str) -> Result<&str, Fault> {
        match self.str(name)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(Fault::missing(name)),
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>, Fault> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| Fault::new(Class::MalformedBody, format!("{name} must be an integer"))),
        }
    }

    fn blob(&self, name: &str, max: usize) -> Result<Vec<u8>, Fault> {
        let s = self.required(name)?;
        let bytes =
            STANDARD.decode(s).map_err(|_| Fault::new(Class::MalformedBody, format!("{name} is not valid base64")))?;
        if bytes.is_empty() || bytes.len() > max {
            return Err(Fault::invalid(format!("{name} must be 1 to {max} bytes")));
        }
        Ok(bytes)
    }

    fn context(&self, name: &str) -> Result<EncryptionContext, Fault> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(EncryptionContext::new()),
            Some(Value::Object(m)) => {
                let mut pairs = Vec::with_capacity(m.len());
                for (k, v) in m {
                    let v = v
                        .as_str()
                        .ok_or_else(|| Fault::new(Class::MalformedBody, format!("{name} values must be strings")))?;
                    pairs.push((k.as_str(), v));
                }
                backend::wire_context(pairs)
            }
            Some(_) => Err(Fault::new(Class::MalformedBody, format!("{name} must be a map of strings"))),
        }
    }

    fn algorithm(&self, name: &str) -> Result<(), Fault> {
        match self.str(name)? {
            None | Some(ALGORITHM) => Ok(()),
            Some(_) => Err(Fault::new(Class::Unsupported, format!("{name}: only {ALGORITHM} is supported"))),
        }
    }
}

/// State for one AWS request.
struct Aws<'c, 'a> {
    call: &'c mut Call<'a>,
    region: String,
}

impl Aws<'_, '_> {
    fn account(&self) -> &str {
        &self.call.app.cfg.aws_account
    }

    fn arn(&self, key_id: &str) -> String {
        format!("arn:aws:kms:{}:{}:key/{key_id}", self.region, self.account())
    }

    fn alias_arn(&self, alias: &str) -> String {
        format!("arn:aws:kms:{}:{}:{alias}", self.region, self.account())
    }

    /// A `KeyId` (id, key ARN, alias name or alias ARN) → what the backend takes.
    fn key_ref(&self, s: &str) -> Result<String, Fault> {
        if s.len() > 2048 {
            return Err(Fault::invalid("KeyId is longer than 2048 characters"));
        }
        let Some(rest) = s.strip_prefix("arn:") else { return Ok(s.to_owned()) };
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [_partition, service, _region, account, resource] = parts[..] else {
            return Err(Fault::new(Class::KeyNotFound, format!("Invalid keyId {s}")));
        };
        // Keys are not partitioned by region in the emulator: any region's ARN names them.
        if service != "kms" || account != self.account() {
            return Err(Fault::new(Class::KeyNotFound, format!("Key '{s}' does not exist")));
        }
        if let Some(id) = resource.strip_prefix("key/") {
            return Ok(id.to_owned());
        }
        if resource.starts_with("alias/") {
            return Ok(resource.to_owned());
        }
        Err(Fault::new(Class::KeyNotFound, format!("Invalid keyId {s}")))
    }

    /// Resolves a `KeyId` to the canonical key id and authorizes the action on it.
    async fn key(&mut self, s: &str) -> Result<String, Fault> {
        let r = self.key_ref(s)?;
        let id = self.call.app.backend.resolve(&r).await?;
        self.call.authorize(Some(&id)).await?;
        Ok(id)
    }

    fn metadata(&self, m: &KeyMetadata) -> Value {
        let hsm = m.protection_level == ProtectionLevel::Hsm;
        let mut v = json!({
            "AWSAccountId": self.account(),
            "KeyId": m.key_id,
            "Arn": self.arn(&m.key_id),
            "CreationDate": wire::epoch_seconds(m.created_at),
            "Enabled": m.state == KeyState::Enabled,
            "Description": m.description,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": m.state.as_str(),
            "Origin": if hsm { "AWS_CLOUDHSM" } else { "AWS_KMS" },
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": ALGORITHM,
            "KeySpec": ALGORITHM,
            "EncryptionAlgorithms": [ALGORITHM],
            "MultiRegion": false,
            "CurrentKeyMaterialId": m.current_version,
        });
        if let Value::Object(o) = &mut v {
            if let Some(d) = m.deletion_date {
                o.insert("DeletionDate".into(), json!(wire::epoch_seconds(d)));
            }
            if hsm {
                o.insert("CustomKeyStoreId".into(), json!("cks-envseal-emulator"));
            }
        }
        v
    }
}

/// Handles one AWS request: target, signature, body, action.
pub(crate) async fn handle(call: &mut Call<'_>, req: &Incoming) -> Result<Value, Fault> {
    if req.header("x-amz-target").is_none()
        && req.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return crate::sts::handle_aws(call, req).await;
    }
    let target = req.header("x-amz-target").unwrap_or("");
    let action = target.strip_prefix("TrentService.").filter(|a| !a.is_empty()).ok_or_else(|| {
        Fault::new(Class::UnknownAction, format!("unknown target {target:?}: expected TrentService.<Action>"))
    })?;
    call.action = action.to_owned();
    if req.method != "POST" {
        return Err(Fault::new(Class::UnknownAction, "AWS KMS requests are POST /"));
    }
    let verified = sigv4::verify(req, &call.app.cfg.credentials, call.app.cfg.max_clock_skew, "kms")?;
    call.principal = verified.key.principal().to_owned();
    call.access_key_id = verified.key.id().to_owned();
    call.signature = "sigv4";
    let content_type = req.header("content-type").unwrap_or("");
    if !content_type.starts_with("application/x-amz-json-1.") {
        return Err(Fault::new(Class::MalformedBody, "Content-Type must be application/x-amz-json-1.1"));
    }
    let body = if req.body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) => m,
            _ => return Err(Fault::new(Class::MalformedBody, "the body must be a JSON object")),
        }
    };
    call.region = verified.region.clone();
    call.security_token = req.header("x-amz-security-token").is_some();
    call.params = hook::safe_params(body.iter().map(|(k, v)| (k.as_str(), v)));
    crate::lookalike::check(body.keys().map(String::as_str), KNOWN)?;
    call.app.throttle.check("aws", &call.app.cfg.aws_account, action)?;
    let mut aws = Aws { call, region: verified.region };
    let b = Body(body);
    check_grant_tokens(&aws, &b)?;
    dispatch(&mut aws, action, &b).await
}

/// `GrantTokens`: at most 10, each naming a grant (the emulator's grants take effect at once,
/// so a token adds nothing, but one that names no grant is refused as AWS does).
fn check_grant_tokens(aws: &Aws<'_, '_>, b: &Body) -> Result<(), Fault> {
    let Some(v) = b.0.get("GrantTokens") else { return Ok(()) };
    let list = v.as_array().ok_or_else(|| Fault::new(Class::MalformedBody, "GrantTokens must be a list"))?;
    if list.len() > 10 {
        return Err(Fault::invalid("at most 10 GrantTokens"));
    }
    for t in list {
        let t = t.as_str().ok_or_else(|| Fault::new(Class::MalformedBody, "GrantTokens must be strings"))?;
        if aws.call.app.keys.by_token(t).is_none() {
            return Err(Fault::new(Class::InvalidGrantToken, "The grant token is not valid."));
        }
    }
    Ok(())
}

/// A list of strings member.
/// `AliasName` and `TargetKeyId` of CreateAlias/UpdateAlias, checked as AWS does: a
/// customer alias (`alias/`, not `alias/aws/`) pointing at a key id or ARN, never an alias.
fn alias_and_target<'b>(aws: &Aws<'_, '_>, b: &'b Body) -> Result<(&'b str, &'b str), Fault> {
    let alias = b.required("AliasName")?;
    if !alias.starts_with("alias/") || alias.starts_with("alias/aws/") {
        return Err(Fault::invalid("AliasName must start with alias/ (and not alias/aws/)"));
    }
    let target = b.required("TargetKeyId")?;
    if aws.key_ref(target)?.starts_with("alias/") {
        return Err(Fault::invalid("TargetKeyId must be a key id or key ARN, not an alias"));
    }
    Ok((alias, target))
}

fn string_list(b: &Body, name: &str) -> Result<Option<Vec<String>>, Fault> {
    match b.0.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Fault::new(Class::MalformedBody, format!("{name} must be a list of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(Fault::new(Class::MalformedBody, format!("{name} must be a list of strings"))),
    }
}

/// `Tags`: `[{"TagKey": k, "TagValue": v}]`.
fn tag_list(b: &Body) -> Result<std::collections::BTreeMap<String, String>, Fault> {
    let mut tags = std::collections::BTreeMap::new();
    if let Some(list) = b.0.get("Tags") {
        for t in list.as_array().ok_or_else(|| Fault::new(Class::MalformedBody, "Tags must be a list"))? {
            let (Some(k), Some(v)) =
                (t.get("TagKey").and_then(Value::as_str), t.get("TagValue").and_then(Value::as_str))
            else {
                return Err(Fault::new(Class::MalformedBody, "each tag needs TagKey and TagValue"));
            };
            tags.insert(k.to_owned(), v.to_owned());
        }
    }
    Ok(tags)
}

/// A context map member of `Constraints`.
fn constraint_map(c: &Value, name: &str) -> Result<Option<std::collections::BTreeMap<String, String>>, Fault> {
    match c.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str().map(|v| (k.clone(), v.to_owned())).ok_or_else(|| {
                    Fault::new(Class::MalformedBody, format!("Constraints.{name} values must be strings"))
                })
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(Fault::new(Class::MalformedBody, format!("Constraints.{name} must be a map"))),
    }
}

/// A grant as ListGrants shows it.
fn grant_json(aws: &Aws<'_, '_>, g: &Grant) -> Value {
    let mut v = json!({
        "KeyId": aws.arn(&g.key_id),
        "GrantId": g.grant_id,
        "Name": g.name,
        "CreationDate": g.created,
        "GranteePrincipal": g.grantee_principal,
        "IssuingAccount": format!("arn:aws:iam::{}:root", g.issuing_account),
        "Operations": g.operations,
    });
    if let Value::Object(o) = &mut v {
        if let Some(r) = &g.retiring_principal {
            o.insert("RetiringPrincipal".into(), json!(r));
        }
        if !g.constraints.is_empty() {
            let mut c = Map::new();
            if let Some(s) = &g.constraints.encryption_context_subset {
                c.insert("EncryptionContextSubset".into(), json!(s));
            }
            if let Some(e) = &g.constraints.encryption_context_equals {
                c.insert("EncryptionContextEquals".into(), json!(e));
            }
            o.insert("Constraints".into(), Value::Object(c));
        }
    }
    v
}

async fn dispatch(aws: &mut Aws<'_, '_>, action: &str, b: &Body) -> Result<Value, Fault> {
    let app = aws.call.app;
    let be = &app.backend;
    match action {
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            let len = match (b.str("KeySpec")?, b.int("NumberOfBytes")?) {
                (Some("AES_256"), None) => 32,
                (Some("AES_128"), None) => 16,
                (None, Some(n)) if (1..=1024).contains(&n) => n as usize,
                (None, Some(_)) => return Err(Fault::invalid("NumberOfBytes must be between 1 and 1024")),
                (None, None) => return Err(Fault::invalid("specify either KeySpec or NumberOfBytes")),
                (Some(_), Some(_)) => return Err(Fault::invalid("specify either KeySpec or NumberOfBytes, not both")),
                (Some(_), None) => return Err(Fault::invalid("KeySpec must be AES_256 or AES_128")),
            };
            let ctx = b.context("EncryptionContext")?;
            aws.call.note_context(&ctx);
            let id = aws.key(b.required("KeyId")?).await?;
            let (plaintext, wrapped) = be.data_key(&id, len, &ctx).await?;
            let mut out = json!({
                "CiphertextBlob": STANDARD.encode(&wrapped.blob),
                "KeyId": aws.arn(&wrapped.key_id),
                "KeyMaterialId": wrapped.key_version,
            });
            if action == "GenerateDataKey"
                && let Value::Object(o) = &mut out
            {
                o.insert("Plaintext".into(), json!(aws.call.secrets.base64(plaintext)));
            }
            Ok(out)
        }
        "Encrypt" => {
            b.algorithm("EncryptionAlgorithm")?;
            let plaintext = zeroize::Zeroizing::new(b.blob("Plaintext", MAX_ENCRYPT)?);
            let ctx = b.context("EncryptionContext")?;
            aws.call.note_context(&ctx);
            let id = aws.key(b.required("KeyId")?).await?;
            let wrapped = be.encrypt(&id, &plaintext, &ctx, MAX_ENCRYPT).await?;
            Ok(json!({
                "CiphertextBlob": STANDARD.encode(&wrapped.blob),
                "KeyId": aws.arn(&wrapped.key_id),
                "EncryptionAlgorithm": ALGORITHM,
            }))
        }
        "Decrypt" => {
            b.algorithm("EncryptionAlgorithm")?;
            let blob = b.blob("CiphertextBlob", MAX_BLOB)?;
            let ctx = b.context("EncryptionContext")?;
            aws.call.note_context(&ctx);
            let named = match b.str("KeyId")? {
                Some(k) => Some(be.resolve(&aws.key_ref(k)?).await?),
                None => None,
            };
            let opened = be.open(blob, &ctx).await?;
            if named.as_ref().is_some_and(|n| *n != opened.key_id) {
                return Err(Fault::new(
                    Class::IncorrectKey,
                    "The key ID in the request does not identify a KMS key that can perform this operation.",
                ));
            }
            // The plaintext is dropped, never sent, if the hook refuses.
            aws.call.authorize(Some(&opened.key_id)).await?;
            Ok(json!({
                "KeyId": aws.arn(&opened.key_id),
                "Plaintext": aws.call.secrets.base64(opened.plaintext),
                "EncryptionAlgorithm": ALGORITHM,
                "KeyMaterialId": opened.key_version,
            }))
        }
        "ReEncrypt" => {
            b.algorithm("SourceEncryptionAlgorithm")?;
            b.algorithm("DestinationEncryptionAlgorithm")?;
            let blob = b.blob("CiphertextBlob", MAX_BLOB)?;
            let source_ctx = b.context("SourceEncryptionContext")?;
            aws.call.note_context(&source_ctx);
            let destination_ctx = b.context("DestinationEncryptionContext")?;
            aws.call.param("DestinationEncryptionContext", context_json(&destination_ctx));
            let named = match b.str("SourceKeyId")? {
                Some(k) => Some(be.resolve(&aws.key_ref(k)?).await?),
                None => None,
            };
            let destination = be.resolve(&aws.key_ref(b.required("DestinationKeyId")?)?).await?;
            let (source, wrapped) = be.re_encrypt(blob, &source_ctx, &destination, &destination_ctx).await?;
            if named.as_ref().is_some_and(|n| *n != source.key_id) {
                return Err(Fault::new(
                    Class::IncorrectKey,
                    "SourceKeyId does not identify the key that encrypted the ciphertext.",
                ));
            }
            aws.call.authorize_as(Some("ReEncryptFrom"), Some(&source.key_id)).await?;
            aws.call.authorize_as(Some("ReEncryptTo"), Some(&destination)).await?;
            Ok(json!({
                "CiphertextBlob": STANDARD.encode(&wrapped.blob),
                "SourceKeyId": aws.arn(&source.key_id),
                "KeyId": aws.arn(&wrapped.key_id),
                "SourceEncryptionAlgorithm": ALGORITHM,
                "DestinationEncryptionAlgorithm": ALGORITHM,
                "SourceKeyMaterialId": source.key_version,
                "DestinationKeyMaterialId": wrapped.key_version,
            }))
        }
        "CreateKey" => {
            match b.str("KeyUsage")? {
                None | Some("ENCRYPT_DECRYPT") => {}
                Some(_) => return Err(Fault::new(Class::Unsupported, "only ENCRYPT_DECRYPT keys are supported")),
            }
            for name in ["KeySpec", "CustomerMasterKeySpec"] {
                b.algorithm(name)?;
            }
            let protection_level = match b.str("Origin")? {
                None | Some("AWS_KMS") => ProtectionLevel::Software,
                Some("AWS_CLOUDHSM") => ProtectionLevel::Hsm,
                Some(_) => return Err(Fault::new(Class::Unsupported, "Origin must be AWS_KMS or AWS_CLOUDHSM")),
            };
            let description = b.str("Description")?.unwrap_or("").to_owned();
            let tags = tag_list(b)?;
            let policy = b.str("Policy")?.map(crate::keypolicy::parse).transpose()?;
            aws.call.authorize(None).await?;
            let m = be.km()?.create_key(&KeySpec { description, protection_level, tags }).await?;
            aws.call.resource = Some(m.key_id.clone());
            if let Some(p) = policy {
                let bypass = b.0.get("BypassPolicyLockoutSafetyCheck").and_then(Value::as_bool).unwrap_or(false);
                aws.call.action = "PutKeyPolicy".into();
                let checked = crate::keypolicy::check_lockout(aws.call, &m.key_id, &p, bypass);
                aws.call.action = "CreateKey".into();
                if let Err(e) = checked {
                    // The key exists, but unusable: schedule it away as a failed create.
                    let _ = be.km()?.schedule_key_deletion(&m.key_id, 7).await;
                    return Err(e);
                }
                app.keys.set_policy(&m.key_id, p);
                app.persist();
            }
            Ok(json!({ "KeyMetadata": aws.metadata(&m) }))
        }
        "DescribeKey" => {
            let id = aws.key(b.required("KeyId")?).await?;
            let m = be.describe(&id).await?;
            Ok(json!({ "KeyMetadata": aws.metadata(&m) }))
        }
        "ListKeys" => {
            aws.call.authorize(None).await?;
            let keys = be.km()?.list_keys().await?;
            let (page, next) = paginate(keys, b)?;
            let keys: Vec<Value> =
                page.iter().map(|m| json!({"KeyId": m.key_id, "KeyArn": aws.arn(&m.key_id)})).collect();
            Ok(listing("Keys", keys, next))
        }
        "ListAliases" => {
            let filter = match b.str("KeyId")? {
                Some(k) => Some(aws.key(k).await?),
                None => {
                    aws.call.authorize(None).await?;
                    None
                }
            };
            let aliases: Vec<_> = be
                .km()?
                .list_aliases()
                .await?
                .into_iter()
                .filter(|a| filter.as_ref().is_none_or(|f| *f == a.key_id))
                .collect();
            let (page, next) = paginate(aliases, b)?;
            let aliases: Vec<Value> = page
                .iter()
                .map(|a| json!({"AliasName": a.name, "AliasArn": aws.alias_arn(&a.name), "TargetKeyId": a.key_id}))
                .collect();
            Ok(listing("Aliases", aliases, next))
        }
        "CreateAlias" => {
            let (alias, target) = alias_and_target(aws, b)?;
            let id = aws.key(target).await?;
            be.km()?.create_alias(alias, &id).await?;
            Ok(json!({}))
        }
        "DeleteAlias" => {
            let alias = b.required("AliasName")?;
            let target = be.resolve(alias).await?;
            aws.call.authorize(Some(&target)).await?;
            be.km()?.delete_alias(alias).await?;
            Ok(json!({}))
        }
        "EnableKey" | "DisableKey" | "CancelKeyDeletion" | "RotateKeyOnDemand" => {
            let id = aws.key(b.required("KeyId")?).await?;
            let km = be.km()?;
            match action {
                "EnableKey" => km.enable_key(&id).await?,
                "DisableKey" => km.disable_key(&id).await?,
                "CancelKeyDeletion" => km.cancel_key_deletion(&id).await?,
                _ => drop(km.rotate_key(&id).await?),
            }
            Ok(match action {
                "EnableKey" | "DisableKey" => json!({}),
                _ => json!({ "KeyId": aws.arn(&id) }),
            })
        }
        "ScheduleKeyDeletion" => {
            let days = b.int("PendingWindowInDays")?.unwrap_or(30);
            let days = u32::try_from(days).map_err(|_| Fault::invalid("PendingWindowInDays must be 7 to 30"))?;
            let id = aws.key(b.required("KeyId")?).await?;
            let m = be.km()?.schedule_key_deletion(&id, days).await?;
            Ok(json!({
                "KeyId": aws.arn(&id),
                "DeletionDate": m.deletion_date.map(wire::epoch_seconds),
                "KeyState": m.state.as_str(),
                "PendingWindowInDays": days,
            }))
        }
        "EnableKeyRotation" | "DisableKeyRotation" => {
            let days = b.int("RotationPeriodInDays")?.unwrap_or(365);
            if !(90..=2560).contains(&days) {
                return Err(Fault::invalid("RotationPeriodInDays must be 90 to 2560"));
            }
            let id = aws.key(b.required("KeyId")?).await?;
            let period = std::time::Duration::from_secs(days as u64 * 86_400);
            be.set_rotation(&id, (action == "EnableKeyRotation").then_some(period)).await?;
            Ok(json!({}))
        }
        "GetKeyRotationStatus" => {
            let id = aws.key(b.required("KeyId")?).await?;
            let m = be.describe(&id).await?;
            let period = be.rotation_period(&m);
            let mut out = json!({
                "KeyId": aws.arn(&id),
                "KeyRotationEnabled": period.is_some(),
            });
            if let (Some(p), Value::Object(o)) = (period, &mut out) {
                o.insert("RotationPeriodInDays".into(), json!((p.as_secs_f64() / 86_400.0).round() as u64));
                o.insert("NextRotationDate".into(), json!(be.next_rotation(&m).map(wire::epoch_seconds)));
            }
            Ok(out)
        }
        "ListKeyRotations" => {
            let id = aws.key(b.required("KeyId")?).await?;
            let m = be.describe(&id).await?;
            let rotations: Vec<Value> = m
                .versions
                .iter()
                .map(|v| {
                    json!({
                        "KeyId": aws.arn(&id),
                        "KeyMaterialId": v.id,
                        "RotationDate": wire::epoch_seconds(v.created_at),
                        "RotationType": if be.rotated_automatically(&id, &v.id) { "AUTOMATIC" } else { "ON_DEMAND" },
                    })
                })
                .collect();
            let (page, next) = paginate(rotations, b)?;
            Ok(listing("Rotations", page, next))
        }
        "ListResourceTags" => {
            let id = aws.key(b.required("KeyId")?).await?;
            let m = be.describe(&id).await?;
            let tags: Vec<Value> = m.tags.iter().map(|(k, v)| json!({"TagKey": k, "TagValue": v})).collect();
            let (page, next) = paginate(tags, b)?;
            Ok(listing("Tags", page, next))
        }
        "TagResource" | "UntagResource" => {
            let id = aws.key(b.required("KeyId")?).await?;
            let mut update = KeyUpdate::default();
            if action == "TagResource" {
                let tags = tag_list(b)?;
                if tags.is_empty() {
                    return Err(Fault::missing("Tags"));
                }
                for (k, v) in tags {
                    update = update.tag(k, v);
                }
            } else {
                for k in string_list(b, "TagKeys")?.ok_or_else(|| Fault::missing("TagKeys"))? {
                    update = update.untag(k);
                }
            }
            be.km()?.update_key(&id, &update).await?;
            Ok(json!({}))
        }
        "UpdateKeyDescription" => {
            let description = b.str("Description")?.ok_or_else(|| Fault::missing("Description"))?.to_owned();
            let id = aws.key(b.required("KeyId")?).await?;
            be.km()?.update_key(&id, &KeyUpdate::default().description(description)).await?;
            Ok(json!({}))
        }
        "UpdateAlias" => {
            let (alias, target) = alias_and_target(aws, b)?;
            let current = be.resolve(alias).await?;
            let target = be.resolve(&aws.key_ref(target)?).await?;
            aws.call.authorize(Some(&current)).await?;
            aws.call.authorize(Some(&target)).await?;
            be.km()?.update_alias(alias, &target).await?;
            Ok(json!({}))
        }
        "GenerateRandom" => {
            if b.str("CustomKeyStoreId")?.is_some() || b.0.get("Recipient").is_some() {
                return Err(Fault::new(Class::Unsupported, "CustomKeyStoreId and Recipient are not supported"));
            }
            let n = b.int("NumberOfBytes")?.ok_or_else(|| Fault::missing("NumberOfBytes"))?;
            let n = usize::try_from(n)
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| Fault::invalid("NumberOfBytes must be between 1 and 1024"))?;
            aws.call.authorize(None).await?;
            let mut bytes = vec![0u8; n];
            envseal_core::random::fill(&mut bytes);
            Ok(json!({"Plaintext": aws.call.secrets.base64(envseal_core::SecretBytes::new(bytes))}))
        }
        "GetPublicKey" => {
            aws.key(b.required("KeyId")?).await?;
            Err(Fault::new(
                Class::Unsupported,
                "GetPublicKey needs an asymmetric key; this emulator has symmetric keys only (SYMMETRIC_DEFAULT)",
            ))
        }
        "GetKeyPolicy" | "PutKeyPolicy" | "ListKeyPolicies" => {
            if b.str("PolicyName")?.is_some_and(|n| n != envseal_iam::KEY_POLICY_NAME) {
                return Err(Fault::new(Class::KeyNotFound, "the only key policy is named default"));
            }
            let id = aws.key(b.required("KeyId")?).await?;
            match action {
                "ListKeyPolicies" => Ok(json!({"PolicyNames": [envseal_iam::KEY_POLICY_NAME], "Truncated": false})),
                "GetKeyPolicy" => {
                    let policy = match app.keys.get(&id).policy {
                        Some(p) => p.to_string(),
                        None => envseal_iam::default_key_policy(aws.account(), envseal_iam::Flavor::Aws),
                    };
                    Ok(json!({"Policy": policy, "PolicyName": envseal_iam::KEY_POLICY_NAME}))
                }
                _ => {
                    let policy = crate::keypolicy::parse(b.required("Policy")?)?;
                    let bypass = b.0.get("BypassPolicyLockoutSafetyCheck").and_then(Value::as_bool).unwrap_or(false);
                    crate::keypolicy::check_lockout(aws.call, &id, &policy, bypass)?;
                    app.keys.set_policy(&id, policy);
                    app.persist();
                    Ok(json!({}))
                }
            }
        }
        "CreateGrant" => {
            let grantee = b.required("GranteePrincipal")?.to_owned();
            let retiring = b.str("RetiringPrincipal")?.map(str::to_owned);
            let operations =
                string_list(b, "Operations")?.filter(|o| !o.is_empty()).ok_or_else(|| Fault::missing("Operations"))?;
            if let Some(bad) = operations.iter().find(|o| !GRANT_OPERATIONS.contains(&o.as_str())) {
                return Err(Fault::invalid(format!("{bad:?} is not a grant operation")));
            }
            let constraints = match b.0.get("Constraints") {
                None | Some(Value::Null) => GrantConstraints::default(),
                Some(c) => GrantConstraints::new(
                    constraint_map(c, "EncryptionContextSubset")?,
                    constraint_map(c, "EncryptionContextEquals")?,
                ),
            };
            if !constraints.is_empty() && operations.iter().any(|o| !CONTEXT_OPERATIONS.contains(&o.as_str())) {
                return Err(Fault::invalid(
                    "a grant with an encryption context constraint may only list operations that take a context",
                ));
            }
            for p in std::iter::once(&grantee).chain(retiring.as_ref()) {
                if !(p.starts_with("arn:") || p.starts_with("acs:")) {
                    return Err(Fault::invalid("grantee and retiring principals must be ARNs"));
                }
            }
            let name = b.str("Name")?.unwrap_or("").to_owned();
            let id = aws.key(b.required("KeyId")?).await?;
            let grant = Grant::new(
                hex::encode(envseal_core::random::array::<32>()),
                hex::encode(envseal_core::random::array::<48>()),
                id,
                name,
                grantee,
                retiring,
                operations,
                constraints,
                aws.account().to_owned(),
                wire::epoch_seconds(std::time::SystemTime::now()) as u64,
            );
            let g = app.keys.add_grant(grant);
            app.persist();
            Ok(json!({"GrantToken": g.grant_token, "GrantId": g.grant_id}))
        }
        "ListGrants" => {
            let id = aws.key(b.required("KeyId")?).await?;
            let (want_id, want_grantee) = (b.str("GrantId")?, b.str("GranteePrincipal")?);
            let grants: Vec<Value> = app
                .keys
                .get(&id)
                .grants
                .iter()
                .filter(|g| want_id.is_none_or(|w| g.grant_id == w))
                .filter(|g| want_grantee.is_none_or(|w| g.grantee_principal == w))
                .map(|g| grant_json(aws, g))
                .collect();
            let (page, next) = paginate(grants, b)?;
            Ok(listing("Grants", page, next))
        }
        "ListRetirableGrants" => {
            let who = b.required("RetiringPrincipal")?.to_owned();
            aws.call.authorize(None).await?;
            let grants: Vec<Value> = app
                .keys
                .all_grants()
                .iter()
                .filter(|g| g.retiring_principal.as_deref() == Some(who.as_str()))
                .map(|g| grant_json(aws, g))
                .collect();
            let (page, next) = paginate(grants, b)?;
            Ok(listing("Grants", page, next))
        }
        "RevokeGrant" => {
            let grant_id = b.required("GrantId")?.to_owned();
            let id = aws.key(b.required("KeyId")?).await?;
            app.keys
                .remove_grant(&id, &grant_id)
                .ok_or_else(|| Fault::new(Class::GrantNotFound, "Grant ID not found"))?;
            app.persist();
            Ok(json!({}))
        }
        "RetireGrant" => {
            let grant = match (b.str("GrantToken")?, b.str("KeyId")?, b.str("GrantId")?) {
                (Some(t), _, _) => app
                    .keys
                    .by_token(t)
                    .ok_or_else(|| Fault::new(Class::InvalidGrantToken, "The grant token is not valid."))?,
                (None, Some(k), Some(g)) => {
                    let id = be.resolve(&aws.key_ref(k)?).await?;
                    app.keys
                        .get(&id)
                        .grants
                        .iter()
                        .find(|x| x.grant_id == g)
                        .cloned()
                        .ok_or_else(|| Fault::new(Class::GrantNotFound, "Grant ID not found"))?
                }
                _ => return Err(Fault::invalid("specify GrantToken, or KeyId and GrantId")),
            };
            // Who may retire: the retiring principal, the grantee when the grant lists
            // RetireGrant, and the account (its root).
            let info = aws.call.info();
            let names = app
                .cfg
                .hook
                .caller_names(&info)
                .unwrap_or_else(|| vec![format!("arn:aws:iam::{}:root", aws.account())]);
            let root = names.iter().any(|n| n.ends_with(":root"));
            let may = root
                || grant.retiring_principal.as_ref().is_some_and(|r| names.contains(r))
                || (grant.operations.iter().any(|o| o == "RetireGrant") && names.contains(&grant.grantee_principal));
            aws.call.resource = Some(grant.key_id.clone());
            if !may {
                return Err(Fault::new(
                    Class::AccessDenied,
                    "only the grant's retiring principal, its grantee (with RetireGrant) or the account may retire it",
                ));
            }
            app.keys.remove_grant(&grant.key_id, &grant.grant_id);
            app.persist();
            Ok(json!({}))
        }
        _ => Err(Fault::new(Class::UnknownAction, format!("operation {action} is not supported by this emulator"))),
    }
}

/// `Limit` and `Marker` (the index of the next item, as text).
fn paginate<T>(items: Vec<T>, b: &Body) -> Result<(Vec<T>, Option<String>), Fault> {
    let limit = b.int("Limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Fault::invalid("Limit must be 1 to 1000"));
    }
    let start = match b.str("Marker")? {
        Some(m) => m.parse::<usize>().map_err(|_| Fault::invalid("invalid Marker"))?,
        None => 0,
    };
    let total = items.len();
    let end = start.saturating_add(limit as usize).min(total);
    let page: Vec<T> = items.into_iter().skip(start).take(end.saturating_sub(start)).collect();
    Ok((page, (end < total).then(|| end.to_string())))
}

fn listing(name: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut o = Map::new();
    o.insert(name.into(), Value::Array(items));
    o.insert("Truncated".into(), Value::Bool(next.is_some()));
    if let Some(n) = next {
        o.insert("NextMarker".into(), Value::String(n));
    }
    Value::Object(o)
}
