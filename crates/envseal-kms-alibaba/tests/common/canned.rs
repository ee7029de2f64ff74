//! Canned KMS answers for the HTTP tests, and helpers to read a received request.

#![allow(dead_code)]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use crate::http::Recorded;

pub const KEY_ID: &str = "key-e2e0123456789abc";
pub const VERSION: &str = "v-e2e-0001";
pub const DATA_KEY: [u8; 32] = [0x42; 32];

/// The blob every canned ciphertext answer carries.
pub fn blob() -> String {
    B64.encode(b"canned-kms-blob-0123456789")
}

/// Percent-decodes a query component.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 query")
}

/// The query parameters of a request, decoded.
pub fn params(r: &Recorded) -> BTreeMap<String, String> {
    r.query()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The API action of a request (V3 header, or V2 parameter).
pub fn action(r: &Recorded) -> String {
    r.header("x-acs-action").map(str::to_owned).or_else(|| params(r).get("Action").cloned()).unwrap_or_default()
}

fn metadata() -> serde_json::Value {
    json!({
        "KeyId": KEY_ID, "KeyState": "Enabled", "Description": "canned", "CreationDate": "2024-01-02T03:04:05Z",
        "DeleteDate": "", "ProtectionLevel": "SOFTWARE", "PrimaryKeyVersion": VERSION,
        "Arn": format!("acs:kms:cn-hangzhou:1234567890123456:key/{KEY_ID}"), "KeySpec": "Aliyun_AES_256",
        "KeyUsage": "ENCRYPT/DECRYPT", "AutomaticRotation": "Disabled"
    })
}

/// A successful answer to `action`, as KMS shapes it.
pub fn success(action: &str) -> String {
    let rid = "4C467B38-3910-447D-87BC-AC049166F216";
    let v = match action {
        "GenerateDataKey" => json!({
            "KeyId": KEY_ID, "KeyVersionId": VERSION, "Plaintext": B64.encode(DATA_KEY),
            "CiphertextBlob": blob(), "RequestId": rid
        }),
        "Decrypt" => {
            json!({"KeyId": KEY_ID, "KeyVersionId": VERSION, "Plaintext": B64.encode(DATA_KEY), "RequestId": rid})
        }
        "Encrypt" | "ReEncrypt" => {
            json!({"KeyId": KEY_ID, "KeyVersionId": VERSION, "CiphertextBlob": blob(), "RequestId": rid})
        }
        "CreateKey" | "DescribeKey" => json!({"KeyMetadata": metadata(), "RequestId": rid}),
        "ListKeys" => json!({
            "Keys": {"Key": [{"KeyId": KEY_ID, "KeyArn": "acs:kms:cn-hangzhou:1:key/x"}]},
            "TotalCount": 1, "PageNumber": 1, "PageSize": 100, "RequestId": rid
        }),
        "ListKeyVersions" => json!({
            "KeyVersions": {"KeyVersion": [{"KeyId": KEY_ID, "KeyVersionId": VERSION, "CreationDate": "2024-01-02T03:04:05Z"}]},
            "TotalCount": 1, "PageNumber": 1, "PageSize": 100, "RequestId": rid
        }),
        "ListAliases" | "ListAliasesByKeyId" => json!({
            "Aliases": {"Alias": [{"AliasName": "alias/app", "KeyId": KEY_ID, "AliasArn": "acs:kms:cn-hangzhou:1:alias/app"}]},
            "TotalCount": 1, "PageNumber": 1, "PageSize": 100, "RequestId": rid
        }),
        "ListResourceTags" => {
            json!({"Tags": {"Tag": [{"KeyId": KEY_ID, "TagKey": "team", "TagValue": "a"}]}, "RequestId": rid})
        }
        "CreateKeyVersion" => json!({
            "KeyVersion": {"KeyId": KEY_ID, "KeyVersionId": "v-e2e-0002", "CreationDate": "2024-01-03T03:04:05Z"},
            "RequestId": rid
        }),
        _ => json!({"RequestId": rid}),
    };
    v.to_string()
}

/// An error answer, as KMS shapes it.
pub fn error(code: &str, message: &str) -> String {
    json!({
        "RequestId": "5D7C3B9A-0000-4000-8000-000000000000", "HostId": "kms.cn-hangzhou.aliyuncs.com",
        "Code": code, "Message": message, "Recommend": "https://api.aliyun.com/troubleshoot?q=x"
    })
    .to_string()
}
