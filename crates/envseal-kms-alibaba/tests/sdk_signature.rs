//! envseal's request signing against the OFFICIAL Alibaba Cloud Python SDK
//! (`alibabacloud-kms20160120` on `alibabacloud-tea-openapi`), through tests/sdk_signature.py:
//!
//! - `pinned_known_answers_come_from_the_sdk`: the known answers pinned in tests/data/
//!   sdk_kat.json (and checked by the signer's unit tests without Python) are what the SDK
//!   computes today for the same inputs;
//! - `sdk_requests_match_ours`: for KMS calls made with the SDK's own KMS client (fixed AccessKey,
//!   secret, STS token, nonce and timestamp; V3 and V2), our signer gives byte-identical
//!   canonical requests, strings to sign and signatures over the SDK's request, and our request
//!   builder gives the same parameters (the same `EncryptionContext` string included);
//! - `our_client_matches_the_sdk_end_to_end`: every request our client actually sent (to a
//!   local server) is what the SDK sends for the same call, nonce and time, and the SDK's signer
//!   computes the signature we sent.
//!
//! Python is `ENVSEAL_PYTHON` or `python3`. Without Python or the SDK each test prints a loud
//! `SKIPPED:` line and passes, unless `ENVSEAL_REQUIRE_SERVERS=1`, where it fails. CI installs
//! the SDK with `pip install alibabacloud-kms20160120`.

#[path = "common/canned.rs"]
mod canned;
#[path = "common/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use envseal_core::kms::{KeyManager, KeySpec, Kms};
use envseal_core::{EncryptionContext, WrappedKey};
use envseal_kms_alibaba::signer::{EMPTY_SHA256, RpcCall, SignatureVersion, sign_rpc_call, sign_v2, sign_v3};
use envseal_kms_alibaba::{
    AccessKeySecret, AlibabaConfig, AlibabaKms, CredentialSource, Credentials, Endpoint, RetryPolicy, SecurityToken,
};
use http::{Recorded, Reply, TestServer};
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_signature.py");
const AK: &str = "LTAI5tSdkCompareKey";
const SECRET: &str = "SdkCompareSecret+/=0123456789";
const TOKEN: &str = "CAIS+sdk/compare==token";

fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn require() -> bool {
    std::env::var("ENVSEAL_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

fn python() -> String {
    std::env::var("ENVSEAL_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".to_owned())
}

/// Runs the SDK script on `cases`; `Err` when Python or the SDK is not there.
fn run_sdk(cases: &[Value]) -> Result<Vec<Value>, String> {
    let mut child = Command::new(python())
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    let input = serde_json::to_vec(&json!({ "cases": cases })).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(3) {
        return Err(format!("the SDK is not installed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    assert!(out.status.success(), "the SDK script failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON from the SDK script");
    Ok(v["results"].as_array().unwrap().clone())
}

/// The SDK's answers, or `None` after a loud skip notice (a panic when required).
fn sdk_or_skip(test: &str, cases: &[Value]) -> Option<Vec<Value>> {
    match run_sdk(cases) {
        Ok(r) => {
            loud(&format!("[{test}] compared {} case(s) with the official Alibaba Cloud Python SDK", cases.len()));
            Some(r)
        }
        Err(why) if require() => {
            panic!("[{test}] ENVSEAL_REQUIRE_SERVERS=1 but {why} (pip install alibabacloud-kms20160120)")
        }
        Err(why) => {
            loud(&format!(
                "SKIPPED: [{test}] Alibaba Cloud SDK signature comparison not run: {why}. Install it with \
                 `pip install alibabacloud-kms20160120` (or set ENVSEAL_PYTHON)."
            ));
            None
        }
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_else(|| panic!("missing {k} in {v}")).to_owned()
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect()
}

fn credentials(sts: bool) -> Credentials {
    let c = Credentials::new(AK, AccessKeySecret::new(SECRET));
    if sts { c.with_security_token(SecurityToken::new(TOKEN)) } else { c }
}

/// Our parameters as the SDK's request model takes them: snake_case names, contexts as objects.
fn sdk_args(params: &BTreeMap<String, String>) -> Value {
    let mut args = serde_json::Map::new();
    for (k, v) in params {
        let mut name = String::new();
        for (i, c) in k.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_lowercase());
        }
        let value = if k.ends_with("EncryptionContext") { serde_json::from_str(v).unwrap() } else { json!(v) };
        args.insert(name, value);
    }
    Value::Object(args)
}

fn client_case(
    version: SignatureVersion,
    sts: bool,
    host: &str,
    action: &str,
    params: &BTreeMap<String, String>,
    nonce: &str,
    timestamp: &str,
) -> Value {
    json!({
        "kind": "client", "action": action, "args": sdk_args(params),
        "access_key_id": AK, "access_key_secret": SECRET, "security_token": sts.then_some(TOKEN),
        "region": "cn-hangzhou", "endpoint": host,
        "signature_algorithm": (version == SignatureVersion::V2).then_some("v2"),
        "nonce": nonce, "timestamp": timestamp,
    })
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (canned::decode(k), canned::decode(v))
        })
        .collect()
}

#[test]
fn pinned_known_answers_come_from_the_sdk() {
    let kat: Value = serde_json::from_str(include_str!("data/sdk_kat.json")).unwrap();
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for (version, list) in [(SignatureVersion::V3, &kat["v3"]), (SignatureVersion::V2, &kat["v2"])] {
        for case in list.as_array().unwrap() {
            let params = str_map(&case["params"]);
            let mut creds =
                Credentials::new(s(case, "access_key_id"), AccessKeySecret::new(s(case, "access_key_secret")));
            if let Some(t) = case["security_token"].as_str() {
                creds = creds.with_security_token(SecurityToken::new(t));
            }
            let (host, action, nonce, ts) =
                (s(case, "host"), s(case, "action"), s(case, "nonce"), s(case, "timestamp"));
            let call = RpcCall { host: &host, action: &action, params: &params, nonce: &nonce, timestamp: &ts };
            let signed = sign_rpc_call(version, &call, &creds);
            if version == SignatureVersion::V3 {
                let headers: BTreeMap<&str, &str> = signed
                    .headers
                    .iter()
                    .filter(|(n, _)| *n != "authorization" && *n != "accept")
                    .map(|(n, v)| (*n, v.as_str()))
                    .collect();
                cases.push(json!({
                    "kind": "sign_v3", "method": "POST", "pathname": "/", "query": params, "headers": headers,
                    "payload_sha256": EMPTY_SHA256, "access_key_id": s(case, "access_key_id"),
                    "access_key_secret": s(case, "access_key_secret"),
                }));
            } else {
                let mut all = parse_query(&signed.query);
                all.remove("Signature");
                cases.push(json!({"kind": "sign_v2", "method": "POST", "params": all, "access_key_secret": s(case, "access_key_secret")}));
            }
            ours.push((version, case.clone(), signed));
        }
    }
    let Some(results) = sdk_or_skip("pinned_known_answers_come_from_the_sdk", &cases) else { return };
    for ((version, pinned, signed), sdk) in ours.into_iter().zip(results) {
        let name = s(&pinned, "name");
        match version {
            SignatureVersion::V3 => {
                for field in ["canonical_request", "string_to_sign", "authorization"] {
                    assert_eq!(s(&sdk, field), s(&pinned, field), "{name}: pinned {field} differs from the SDK's");
                }
                assert_eq!(signed.v3.unwrap().authorization, s(&sdk, "authorization"), "{name}");
            }
            _ => {
                for field in ["string_to_sign", "signature"] {
                    assert_eq!(s(&sdk, field), s(&pinned, field), "{name}: pinned {field} differs from the SDK's");
                }
                assert_eq!(signed.v2.unwrap().signature, s(&sdk, "signature"), "{name}");
            }
        }
    }
}

/// KMS calls with the parameters envseal sends, including contexts that exercise the JSON and
/// percent-encoding corners.
fn operations() -> Vec<(&'static str, BTreeMap<String, String>)> {
    let p = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let ctx = envseal_kms_alibaba::context::context_json(
        &EncryptionContext::from_pairs([
            ("app", "billing & co"),
            ("path/to", "a=b;c,d*e~f"),
            ("quote\"back\\slash", "new\nline\ttab"),
            ("tenant", "ü-東京-😀"),
        ])
        .unwrap(),
    )
    .unwrap();
    vec![
        ("GenerateDataKey", p(&[("KeyId", "alias/app"), ("KeySpec", "AES_256"), ("EncryptionContext", &ctx)])),
        ("Decrypt", p(&[("CiphertextBlob", "ZGVhZGJlZWYrLz0+Pz8/"), ("EncryptionContext", &ctx)])),
        (
            "Encrypt",
            p(&[
                ("KeyId", "key-abc"),
                ("Plaintext", "c2VjcmV0IHdpdGggc3BhY2Vz+/8="),
                ("EncryptionContext", "{\"a\":\"\"}"),
            ]),
        ),
        (
            "ReEncrypt",
            p(&[
                ("CiphertextBlob", "AAEC"),
                ("SourceEncryptionContext", &ctx),
                ("DestinationKeyId", "acs:kms:cn-hangzhou:1234567890123456:key/key-abc"),
                ("DestinationEncryptionContext", "{\"stage\":\"rewrapped\"}"),
            ]),
        ),
        ("DescribeKey", p(&[("KeyId", "key-abc")])),
        (
            "CreateKey",
            p(&[
                ("KeySpec", "Aliyun_AES_256"),
                ("KeyUsage", "ENCRYPT/DECRYPT"),
                ("ProtectionLevel", "HSM"),
                ("Description", "envseal key (team a) 100% *new*"),
                ("Tags", "[{\"TagKey\":\"team\",\"TagValue\":\"a b\"}]"),
            ]),
        ),
        ("ListKeys", p(&[("PageNumber", "2"), ("PageSize", "100")])),
        ("ScheduleKeyDeletion", p(&[("KeyId", "key-abc"), ("PendingWindowInDays", "7")])),
        (
            "UpdateRotationPolicy",
            p(&[("KeyId", "key-abc"), ("EnableAutomaticRotation", "true"), ("RotationInterval", "604800s")]),
        ),
        ("CreateAlias", p(&[("AliasName", "alias/team/app:prod"), ("KeyId", "key-abc")])),
    ]
}

#[test]
fn sdk_requests_match_ours() {
    let host = "kms.cn-hangzhou.aliyuncs.com";
    let (nonce, ts) = ("5e0f6c1d9a8b7c6d5e4f3a2b1c0d9e8f", "2025-06-07T08:09:10Z");
    let mut cases = Vec::new();
    let mut plan = Vec::new();
    for version in [SignatureVersion::V3, SignatureVersion::V2] {
        for sts in [false, true] {
            for (action, params) in operations() {
                cases.push(client_case(version, sts, host, action, &params, nonce, ts));
                plan.push((version, sts, action, params));
            }
        }
    }
    let Some(results) = sdk_or_skip("sdk_requests_match_ours", &cases) else { return };
    let secret = AccessKeySecret::new(SECRET);
    let mut second = Vec::new();
    let mut second_expect = Vec::new();
    for ((version, sts, action, params), sdk) in plan.iter().zip(&results) {
        let what = format!("{action} {version:?} sts={sts}");
        let sdk_query = str_map(&sdk["query"]);
        let call = RpcCall { host, action, params, nonce, timestamp: ts };
        let ours = sign_rpc_call(*version, &call, &credentials(*sts));
        let our_query = parse_query(&ours.query);
        match version {
            SignatureVersion::V3 => {
                // Our signer over the SDK's own request: byte-identical.
                let sdk_headers: Vec<(&str, &str)> = sdk["headers"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(n, _)| n.as_str() != "Authorization")
                    .map(|(n, v)| (n.as_str(), v.as_str().unwrap()))
                    .collect();
                let payload = sdk["headers"]["x-acs-content-sha256"].as_str().unwrap();
                let mine = sign_v3("POST", "/", &sdk_query, &sdk_headers, payload, AK, &secret);
                assert_eq!(mine.canonical_request, s(sdk, "canonical_request"), "{what}");
                assert_eq!(mine.string_to_sign, s(sdk, "string_to_sign"), "{what}");
                assert_eq!(mine.authorization, s(sdk, "authorization"), "{what}");
                // Our request: the same parameters and x-acs-* values as the SDK's.
                assert_eq!(our_query, sdk_query, "{what}: parameters");
                for (name, value) in &ours.headers {
                    if name.starts_with("x-acs-") || *name == "host" || *name == "accept" {
                        assert_eq!(sdk["headers"][*name].as_str(), Some(value.as_str()), "{what}: header {name}");
                    }
                }
                // And the SDK's signer over our request (our header set) gives our signature.
                let headers: BTreeMap<&str, &str> = ours
                    .headers
                    .iter()
                    .filter(|(n, _)| *n != "authorization" && *n != "accept")
                    .map(|(n, v)| (*n, v.as_str()))
                    .collect();
                second.push(json!({
                    "kind": "sign_v3", "method": "POST", "pathname": "/", "query": our_query, "headers": headers,
                    "payload_sha256": EMPTY_SHA256, "access_key_id": AK, "access_key_secret": SECRET,
                }));
                second_expect.push((what, ours.v3.unwrap()));
            }
            _ => {
                let mut unsigned = sdk_query.clone();
                let signature = unsigned.remove("Signature").unwrap();
                let mine = sign_v2("POST", &unsigned, &secret);
                assert_eq!(mine.string_to_sign, s(sdk, "string_to_sign"), "{what}");
                assert_eq!(mine.signature, signature, "{what}");
                // Our whole query, signature included, is the SDK's.
                assert_eq!(our_query, sdk_query, "{what}: query");
            }
        }
    }
    let results = run_sdk(&second).expect("the SDK ran a moment ago");
    for ((what, ours), sdk) in second_expect.into_iter().zip(results) {
        assert_eq!(ours.canonical_request, s(&sdk, "canonical_request"), "{what}: SDK signer over our request");
        assert_eq!(ours.authorization, s(&sdk, "authorization"), "{what}: SDK signer over our request");
    }
}

fn wrapped() -> WrappedKey {
    use base64::Engine as _;
    WrappedKey {
        backend: "alibaba-kms".into(),
        key_id: canned::KEY_ID.into(),
        key_version: canned::VERSION.into(),
        blob: base64::engine::general_purpose::STANDARD.decode(canned::blob()).unwrap(),
    }
}

#[tokio::test]
async fn our_client_matches_the_sdk_end_to_end() {
    if let Err(why) = run_sdk(&[]) {
        assert!(!require(), "ENVSEAL_REQUIRE_SERVERS=1 but {why}");
        loud(&format!("SKIPPED: [our_client_matches_the_sdk_end_to_end] {why} (pip install alibabacloud-kms20160120)"));
        return;
    }
    let mut cases = Vec::new();
    let mut received = Vec::new();
    for version in [SignatureVersion::V3, SignatureVersion::V2] {
        for sts in [false, true] {
            let server = TestServer::start(|r: &Recorded| Reply::json(200, canned::success(&canned::action(r)))).await;
            let config = AlibabaConfig::new("cn-hangzhou", CredentialSource::Static(credentials(sts)))
                .with_endpoint(Endpoint::Custom(server.url()))
                .with_signature_version(version)
                .with_timeout(Duration::from_secs(5))
                .with_retry(RetryPolicy::none());
            let kms = AlibabaKms::new(config).unwrap();
            let c = EncryptionContext::from_pairs([("app", "billing"), ("tenant", "ü \"1\"")]).unwrap();
            kms.generate_data_key("alias/app", &c).await.unwrap();
            kms.decrypt(&wrapped(), &c).await.unwrap();
            kms.encrypt(canned::KEY_ID, b"direct secret", &c).await.unwrap();
            kms.re_encrypt(&wrapped(), &c, canned::KEY_ID, &EncryptionContext::new()).await.unwrap();
            let spec = KeySpec {
                description: "e2e key".into(),
                tags: [("team".into(), "a".into())].into(),
                ..KeySpec::default()
            };
            kms.create_key(&spec).await.unwrap();
            kms.schedule_key_deletion(canned::KEY_ID, 30).await.unwrap();
            kms.list_aliases().await.unwrap();
            for r in server.requests() {
                let mut params = canned::params(&r);
                let host = r.header("host").unwrap().to_owned();
                let (action, nonce, ts) = match version {
                    SignatureVersion::V3 => (
                        r.header("x-acs-action").unwrap().to_owned(),
                        r.header("x-acs-signature-nonce").unwrap().to_owned(),
                        r.header("x-acs-date").unwrap().to_owned(),
                    ),
                    _ => {
                        let all = params.clone();
                        for common in [
                            "Action",
                            "Version",
                            "Format",
                            "SignatureMethod",
                            "SignatureVersion",
                            "AccessKeyId",
                            "SignatureNonce",
                            "Timestamp",
                            "SecurityToken",
                            "Signature",
                        ] {
                            params.remove(common);
                        }
                        (all["Action"].clone(), all["SignatureNonce"].clone(), all["Timestamp"].clone())
                    }
                };
                cases.push(client_case(version, sts, &host, &action, &params, &nonce, &ts));
                if version == SignatureVersion::V3 {
                    let auth = r.header("authorization").unwrap();
                    let signed = auth.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap();
                    let headers: BTreeMap<&str, &str> = signed.split(';').map(|n| (n, r.header(n).unwrap())).collect();
                    cases.push(json!({
                        "kind": "sign_v3", "method": "POST", "pathname": "/", "query": params, "headers": headers,
                        "payload_sha256": EMPTY_SHA256, "access_key_id": AK, "access_key_secret": SECRET,
                    }));
                }
                received.push((version, sts, action, r));
            }
        }
    }
    let Some(results) = sdk_or_skip("our_client_matches_the_sdk_end_to_end", &cases) else { return };
    let mut results = results.into_iter();
    for (version, sts, action, r) in received {
        let what = format!("{action} {version:?} sts={sts}");
        let sdk = results.next().unwrap();
        let sent = canned::params(&r);
        assert_eq!(str_map(&sdk["query"]), sent, "{what}: the SDK sends these parameters for the same call");
        if version == SignatureVersion::V3 {
            for name in
                ["x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256", "host"]
            {
                assert_eq!(sdk["headers"][name].as_str(), r.header(name), "{what}: header {name}");
            }
            assert_eq!(sdk["headers"]["x-acs-security-token"].as_str(), r.header("x-acs-security-token"), "{what}");
            let signer = results.next().unwrap();
            assert_eq!(Some(s(&signer, "authorization").as_str()), r.header("authorization"), "{what}: SDK signature");
        }
    }
}
