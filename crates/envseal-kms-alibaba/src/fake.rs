//! An in-memory Alibaba Cloud KMS behind the [`Transport`] seam, for unit tests: it checks
//! every request's signature (V3 or V2) with the crate's own signer over what it received,
//! keeps just enough state (keys, versions, aliases, blobs) for the conformance suites to run,
//! answers with the API's JSON shapes and error codes, records every call, and fails on
//! demand.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::credentials::AccessKeySecret;
use crate::signer::{EMPTY_SHA256, sign_v2, sign_v3};
use crate::time::format_utc;
use envseal_http::{Request, Response, Transport, TransportError};
use envseal_support::percent;

pub(crate) const AK_ID: &str = "LTAIfakeAccessKey";
pub(crate) const AK_SECRET: &str = "fake-secret-0123456789";

/// One recorded call.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub action: String,
    pub params: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
}

struct Key {
    state: &'static str,
    description: String,
    protection: String,
    created: String,
    versions: Vec<(String, String)>,
    delete_date: Option<String>,
    tags: Vec<(String, String)>,
}

struct Blob {
    key_id: String,
    version: String,
    context: BTreeMap<String, String>,
    plaintext: Zeroizing<Vec<u8>>,
}

#[derive(Default)]
struct State {
    keys: BTreeMap<String, Key>,
    aliases: BTreeMap<String, String>,
    blobs: HashMap<Vec<u8>, Blob>,
    calls: Vec<Call>,
    faults: VecDeque<Result<(u16, String), TransportError>>,
}

/// The fake server. Cheap to share through `Arc`.
#[derive(Default)]
pub(crate) struct FakeKms {
    state: Mutex<State>,
}

/// An error answer: HTTP status, code, message.
type Fail = (u16, &'static str, String);
type Answer = Result<Value, Fail>;
/// A verified request: action, parameters, headers.
type Verified = (String, BTreeMap<String, String>, BTreeMap<String, String>);

fn err(status: u16, code: &'static str, message: impl Into<String>) -> Fail {
    (status, code, message.into())
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    envseal_core::random::fill(&mut b);
    hex::encode(b)
}

impl FakeKms {
    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// A new enabled key; returns its id.
    pub(crate) fn add_key(&self) -> String {
        let mut st = self.st();
        Self::create(&mut st, "", "SOFTWARE", Vec::new())
    }

    pub(crate) fn add_alias(&self, alias: &str, key: &str) {
        self.st().aliases.insert(alias.to_owned(), key.to_owned());
    }

    /// The next answers are these failures (HTTP status and error code), in order.
    pub(crate) fn fail_next(&self, faults: Vec<(u16, &str)>) {
        self.st().faults.extend(faults.into_iter().map(|(s, c)| Ok((s, c.to_owned()))));
    }

    /// The next sends fail in transport with these errors.
    pub(crate) fn transport_fail_next(&self, e: TransportError) {
        self.st().faults.push_back(Err(e));
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.st().calls.clone()
    }

    fn create(st: &mut State, description: &str, protection: &str, tags: Vec<(String, String)>) -> String {
        let id = format!("key-fake{}", random_hex(8));
        let now = format_utc(SystemTime::now());
        let key = Key {
            state: "Enabled",
            description: description.to_owned(),
            protection: protection.to_owned(),
            created: now.clone(),
            versions: vec![(format!("v-{}", random_hex(8)), now)],
            delete_date: None,
            tags,
        };
        st.keys.insert(id.clone(), key);
        id
    }

    fn metadata(id: &str, k: &Key) -> Value {
        json!({
            "KeyId": id, "Arn": format!("acs:kms:cn-hangzhou:1234567890123456:key/{id}"),
            "KeyState": k.state, "Description": k.description, "CreationDate": k.created,
            "DeleteDate": k.delete_date.clone().unwrap_or_default(), "ProtectionLevel": k.protection,
            "PrimaryKeyVersion": k.versions.last().map(|v| v.0.clone()).unwrap_or_default(),
            "KeySpec": "Aliyun_AES_256", "KeyUsage": "ENCRYPT/DECRYPT", "Creator": "1234567890123456",
            "AutomaticRotation": "Disabled", "Origin": "Aliyun_KMS",
        })
    }

    fn lookup(st: &State, key: &str) -> Result<String, Fail> {
        let key = match key.strip_prefix("acs:kms:") {
            Some(rest) => rest.splitn(3, ':').nth(2).unwrap_or_default(),
            None => key,
        };
        if let Some(id) = key.strip_prefix("key/") {
            return Self::lookup(st, id);
        }
        if key.starts_with("alias/") {
            return match st.aliases.get(key) {
                Some(id) => Ok(id.clone()),
                None => Err(err(404, "Forbidden.AliasNotFound", "The specified Alias is not found.")),
            };
        }
        if st.keys.contains_key(key) {
            Ok(key.to_owned())
        } else {
            Err(err(404, "Forbidden.KeyNotFound", "The specified Key is not found."))
        }
    }

    fn usable(k: &Key) -> Result<(), Fail> {
        match k.state {
            "Enabled" => Ok(()),
            "PendingDeletion" => Err(err(400, "Rejected.PendingDeletion", "The key is pending deletion.")),
            _ => Err(err(400, "Rejected.Disabled", "The key is disabled.")),
        }
    }

    fn context(p: &BTreeMap<String, String>, name: &str) -> Result<BTreeMap<String, String>, Fail> {
        match p.get(name) {
            None => Ok(BTreeMap::new()),
            Some(s) => serde_json::from_str(s)
                .map_err(|_| err(400, "InvalidParameter", format!("The {name} is not a valid JSON object"))),
        }
    }

    fn seal(
        st: &mut State,
        key_id: &str,
        plaintext: Zeroizing<Vec<u8>>,
        context: BTreeMap<String, String>,
    ) -> (String, String) {
        let version = st.keys[key_id].versions.last().map(|v| v.0.clone()).unwrap_or_default();
        let mut blob = b"fk1".to_vec();
        let mut r = [0u8; 32];
        envseal_core::random::fill(&mut r);
        blob.extend_from_slice(&r);
        st.blobs.insert(blob.clone(), Blob { key_id: key_id.to_owned(), version: version.clone(), context, plaintext });
        (B64.encode(blob), version)
    }

    fn open(
        st: &State,
        p: &BTreeMap<String, String>,
        ctx_param: &str,
    ) -> Result<(String, String, Zeroizing<Vec<u8>>), Fail> {
        let bad = || err(400, "InvalidCiphertext", "The CiphertextBlob is invalid.");
        let raw = B64.decode(p.get("CiphertextBlob").map(String::as_str).unwrap_or_default()).map_err(|_| bad())?;
        let blob = st.blobs.get(&raw).ok_or_else(bad)?;
        let key = st.keys.get(&blob.key_id).ok_or_else(|| err(404, "Forbidden.KeyNotFound", "gone"))?;
        Self::usable(key)?;
        if Self::context(p, ctx_param)? != blob.context {
            return Err(bad());
        }
        Ok((blob.key_id.clone(), blob.version.clone(), Zeroizing::new(blob.plaintext.to_vec())))
    }

    fn page<T: Clone>(items: &[T], p: &BTreeMap<String, String>) -> (Vec<T>, usize) {
        let n: usize = p.get("PageNumber").and_then(|v| v.parse().ok()).unwrap_or(1);
        let size: usize = p.get("PageSize").and_then(|v| v.parse().ok()).unwrap_or(10);
        (items.iter().skip((n - 1) * size).take(size).cloned().collect(), items.len())
    }

    fn handle(&self, action: &str, p: &BTreeMap<String, String>) -> Answer {
        let mut guard = self.st();
        let st = &mut *guard;
        let need = |name: &str| {
            p.get(name).cloned().ok_or_else(|| err(400, "MissingParameter", format!("{name} is mandatory")))
        };
        let ok = |mut v: Value| {
            v["RequestId"] = json!(format!("req-{}", random_hex(4)));
            Ok(v)
        };
        match action {
            "GenerateDataKey" => {
                let id = Self::lookup(st, &need("KeyId")?)?;
                Self::usable(&st.keys[&id])?;
                if p.get("KeySpec").map(String::as_str) != Some("AES_256") {
                    return Err(err(400, "InvalidParameter", "KeySpec"));
                }
                let mut dk = Zeroizing::new(vec![0u8; 32]);
                envseal_core::random::fill(&mut dk);
                let plaintext = B64.encode(&*dk);
                let context = Self::context(p, "EncryptionContext")?;
                let (blob, version) = Self::seal(st, &id, dk, context);
                ok(json!({"KeyId": id, "KeyVersionId": version, "Plaintext": plaintext, "CiphertextBlob": blob}))
            }
            "Encrypt" => {
                let id = Self::lookup(st, &need("KeyId")?)?;
                Self::usable(&st.keys[&id])?;
                let pt = Zeroizing::new(
                    B64.decode(need("Plaintext")?)
                        .map_err(|_| err(400, "InvalidParameter", "Plaintext is not base64"))?,
                );
                if pt.len() > 6144 {
                    return Err(err(400, "InvalidParameter", "Plaintext too long"));
                }
                let context = Self::context(p, "EncryptionContext")?;
                let (blob, version) = Self::seal(st, &id, pt, context);
                ok(json!({"KeyId": id, "KeyVersionId": version, "CiphertextBlob": blob}))
            }
            "Decrypt" => {
                let (id, version, pt) = Self::open(st, p, "EncryptionContext")?;
                ok(json!({"KeyId": id, "KeyVersionId": version, "Plaintext": B64.encode(&*pt)}))
            }
            "ReEncrypt" => {
                let (_, _, pt) = Self::open(st, p, "SourceEncryptionContext")?;
                let id = Self::lookup(st, &need("DestinationKeyId")?)?;
                Self::usable(&st.keys[&id])?;
                let context = Self::context(p, "DestinationEncryptionContext")?;
                let (blob, version) = Self::seal(st, &id, pt, context);
                ok(json!({"KeyId": id, "KeyVersionId": version, "CiphertextBlob": blob}))
            }
            "CreateKey" => {
                let tags: Vec<(String, String)> = match p.get("Tags") {
                    None => Vec::new(),
                    Some(t) => serde_json::from_str::<Vec<BTreeMap<String, String>>>(t)
                        .map_err(|_| err(400, "InvalidParameter", "Tags"))?
                        .into_iter()
                        .map(|m| (m["TagKey"].clone(), m["TagValue"].clone()))
                        .collect(),
                };
                let id = Self::create(
                    st,
                    p.get("Description").map(String::as_str).unwrap_or_default(),
                    p.get("ProtectionLevel").map(String::as_str).unwrap_or("SOFTWARE"),
                    tags,
                );
                ok(json!({"KeyMetadata": Self::metadata(&id, &st.keys[&id])}))
            }
            "DescribeKey" => {
                let id = Self::lookup(st, &need("KeyId")?)?;
                ok(json!({"KeyMetadata": Self::metadata(&id, &st.keys[&id])}))
            }
            "ListKeys" => {
                let ids: Vec<Value> =
                    st.keys.keys().map(|id| json!({"KeyId": id, "KeyArn": format!("acs:kms:x:1:key/{id}")})).collect();
                let (page, total) = Self::page(&ids, p);
                ok(json!({"Keys": {"Key": page}, "TotalCount": total}))
            }
            "ListKeyVersions" => {
                let id = Self::lookup(st, &need("KeyId")?)?;
                let vs: Vec<Value> = st.keys[&id]
                    .versions
                    .iter()
                    .map(|(v, c)| json!({"KeyId": id, "KeyVersionId": v, "CreationDate": c}))
                    .collect();
                let (page, total) = Self::page(&vs, p);
                ok(json!({"KeyVersions": {"KeyVersion": page}, "TotalCount": total}))
            }
            "ListAliases" | "ListAliasesByKeyId" => {
                let only = match p.get("KeyId") {
                    Some(k) if action == "ListAliasesByKeyId" => Some(Self::lookup(st, k)?),
                    _ => None,
                };
                let items: Vec<Value> = st
                    .aliases
                    .iter()
                    .filter(|(_, id)| only.as_ref().is_none_or(|o| o == *id))
                    .map(|(a, id)| json!({"AliasName": a, "KeyId": id, "AliasArn": format!("acs:kms:x:1:{a}")}))
                    .collect();
                let (page, total) = Self::page(&items, p);
                ok(json!({"Aliases": {"Alias": page}, "TotalCount": total}))
            }
            "ListResourceTags" => {
                let id = Self::lookup(st, &need("KeyId")?)?;
                let tags: Vec<Value> =
                    st.keys[&id].tags.iter().map(|(k, v)| json!({"KeyId": id, "TagKey": k, "TagValue": v})).collect();
                ok(json!({"Tags": {"Tag": tags}}))
            }
            "CreateAlias" => {
                let alias = need("AliasName")?;
                let id = Self::lookup(st, &need("KeyId")?)?;
                if st.aliases.contains_key(&alias) {
                    return Err(err(409, "Rejected.ResourceExist", "The resource already exists."));
                }
                st.aliases.insert(alias, id);
                ok(json!({}))
            }
            "DeleteAlias" => match st.aliases.remove(&need("AliasName")?) {
                Some(_) => ok(json!({})),
                None => Err(err(404, "Forbidden.AliasNotFound", "The specified Alias is not found.")),
            },
            "CreateKeyVersion" => {
                let id = Self::lookup(st, &need("KeyId")?)?;
                Self::usable(&st.keys[&id])?;
                let v = (format!("v-{}", random_hex(8)), format_utc(SystemTime::now()));
                st.keys.get_mut(&id).unwrap().versions.push(v.clone());
                ok(json!({"KeyVersion": {"KeyId": id, "KeyVersionId": v.0, "CreationDate": v.1}}))
            }
            "EnableKey" | "DisableKey" => {
                let id = Self::lookup(st, &need("KeyId")?)?;
                let k = st.keys.get_mut(&id).unwrap();
                if k.state == "PendingDeletion" {
                    return Err(err(400, "Rejected.PendingDeletion", "The key is pending deletion."));
                }
                k.state = if action == "EnableKey" { "Enabled" } else { "Disabled" };
                ok(json!({}))
            }
            "ScheduleKeyDeletion" => {
                let id = Self::lookup(st, &need("KeyId")?)?;
                let days: u64 =
                    need("PendingWindowInDays")?.parse().map_err(|_| err(400, "InvalidParameter", "days"))?;
                if !(7..=30).contains(&days) {
                    return Err(err(400, "InvalidParameter", "PendingWindowInDays must be 7 to 30"));
                }
                let k = st.keys.get_mut(&id).unwrap();
                k.state = "PendingDeletion";
                k.delete_date = Some(format_utc(SystemTime::now() + Duration::from_secs(days * 86_400)));
                ok(json!({}))
            }
            "CancelKeyDeletion" => {
                let id = Self::lookup(st, &need("KeyId")?)?;
                let k = st.keys.get_mut(&id).unwrap();
                if k.state != "PendingDeletion" {
                    return Err(err(400, "Rejected.NotPendingDeletion", "The key is not pending deletion."));
                }
                k.state = "Disabled";
                k.delete_date = None;
                ok(json!({}))
            }
            "UpdateRotationPolicy" => {
                Self::lookup(st, &need("KeyId")?)?;
                ok(json!({}))
            }
            _ => Err(err(400, "InvalidApi.NotFound", format!("unknown action {action}"))),
        }
    }

    /// Checks the signature over what was received; returns the action and parameters.
    fn verify(&self, request: &Request) -> Result<Verified, Fail> {
        let mut params = BTreeMap::new();
        let query = request.target.strip_prefix('?').unwrap_or_default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(decode(k), decode(v));
        }
        let headers: BTreeMap<String, String> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let secret = AccessKeySecret::new(AK_SECRET);
        let denied = || err(400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation.");
        if let Some(auth) = headers.get("authorization") {
            let signed = auth.split("SignedHeaders=").nth(1).and_then(|s| s.split(',').next()).ok_or_else(denied)?;
            let signed_headers: Vec<(&str, &str)> =
                signed.split(';').map(|n| (n, headers.get(n).map(String::as_str).unwrap_or_default())).collect();
            if headers.get("x-acs-content-sha256").map(String::as_str) != Some(EMPTY_SHA256)
                || !signed.contains("host")
                || !auth.contains(&format!("Credential={AK_ID},"))
            {
                return Err(denied());
            }
            let expected = sign_v3("POST", "/", &params, &signed_headers, EMPTY_SHA256, AK_ID, &secret);
            if &expected.authorization != auth {
                return Err(denied());
            }
            let action = headers.get("x-acs-action").cloned().unwrap_or_default();
            Ok((action, params, headers))
        } else {
            let signature = params.remove("Signature").ok_or_else(denied)?;
            if params.get("AccessKeyId").map(String::as_str) != Some(AK_ID)
                || sign_v2("POST", &params, &secret).signature != signature
            {
                return Err(denied());
            }
            let action = params.get("Action").cloned().unwrap_or_default();
            for common in [
                "Action",
                "Version",
                "Format",
                "Timestamp",
                "SignatureNonce",
                "SignatureMethod",
                "SignatureVersion",
                "AccessKeyId",
                "SecurityToken",
            ] {
                params.remove(common);
            }
            Ok((action, params, headers))
        }
    }
}

fn decode(s: &str) -> String {
    percent::decode(s, false).expect("the client sends valid percent-encoding")
}

#[async_trait]
impl Transport for FakeKms {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        if let Some(fault) = self.st().faults.pop_front() {
            let (status, code) = fault?;
            let body = serde_json::to_vec(&json!({"Code": code, "Message": "injected", "RequestId": "fault"})).unwrap();
            return Ok(Response::new(status, body));
        }
        let (status, body) = match self.verify(&request) {
            Err((status, code, message)) => (status, json!({"Code": code, "Message": message, "RequestId": "r"})),
            Ok((action, params, headers)) => {
                self.st().calls.push(Call { action: action.clone(), params: params.clone(), headers });
                match self.handle(&action, &params) {
                    Ok(v) => (200, v),
                    Err((status, code, message)) => (
                        status,
                        json!({"Code": code, "Message": message, "RequestId": "r", "HostId": "kms.fake", "Recommend": ""}),
                    ),
                }
            }
        };
        Ok(Response::new(status, serde_json::to_vec(&body).unwrap()))
    }
}
