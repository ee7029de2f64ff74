//! Records: what one line of the log holds, and the builder callers use.

use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::AuditKey;

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// A policy refused it.
    Denied,
    /// It failed for another reason.
    Error,
}

/// Who made a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalRecord {
    /// `User`, `AssumedRole`, `Root`, `Anonymous`, `Local`.
    #[serde(rename = "type")]
    pub kind: String,
    /// User name, `ROLE/SESSION`, or the OS user for `Local`.
    pub name: String,
    /// The principal's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// Access key id used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// STS session name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Format version (1).
    pub v: u32,
    /// Sequence number: 1 for the first line, +1 per line.
    pub seq: u64,
    /// RFC 3339 UTC time with milliseconds.
    pub time: String,
    /// Event name.
    pub event: String,
    /// `kms`, `sts`, `iam` or `log`.
    pub source: String,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<PrincipalRecord>,
    /// Client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// Client software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Request id returned to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `alibaba`, `aws` or `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// Key the operation applied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Request parameters (never secrets: see [`Event::param`]).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// Outcome (absent on `log` records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The API's error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The policy statement that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Checkpoints: first sequence number covered since the previous checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// Checkpoints: last sequence number covered (the one before this record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// Checkpoints: id of the audit key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_key_id: Option<String>,
    /// Checkpoints: HMAC-SHA-256 over (seq, prev), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// SHA-256 of the previous line, hex.
    pub prev: String,
}

/// Hex SHA-256 of a line's bytes (without its newline): the next record's `prev`.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The MAC of a checkpoint: HMAC-SHA-256(key, "envseal-audit-checkpoint-v1" || 0x00 ||
/// seq as 8 bytes big-endian || prev as 64 ASCII hex digits), hex.
pub fn checkpoint_mac(key: &AuditKey, seq: u64, prev: &str) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("HMAC takes any key length");
    m.update(b"envseal-audit-checkpoint-v1\0");
    m.update(&seq.to_be_bytes());
    m.update(prev.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Words that mark a parameter as secret material; such parameters are dropped (a size,
/// `...Bytes` with a number, is kept).
const SECRET_WORDS: &[&str] =
    &["plaintext", "ciphertextblob", "secret", "token", "password", "passphrase", "pin", "datakey", "signature"];

pub(crate) fn is_secret_param(name: &str, value: &Value) -> bool {
    let n = name.to_ascii_lowercase();
    let size = n.ends_with("bytes") && value.is_number();
    !size && SECRET_WORDS.iter().any(|w| n.contains(w))
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// What a caller records: a record without `v`, `seq`, `time` and `prev`, which the log adds.
#[derive(Clone, Debug)]
pub struct Event {
    pub(crate) record: Record,
}

impl Event {
    /// An event named `name` (`GenerateDataKey`, `CreateAccessKey`, ...) from `source`
    /// (`kms`, `sts`, `iam`, `log`).
    pub fn new(name: &str, source: &str) -> Self {
        Self {
            record: Record {
                v: crate::FORMAT_VERSION,
                seq: 0,
                time: String::new(),
                event: name.to_owned(),
                source: source.to_owned(),
                principal: None,
                source_ip: None,
                user_agent: None,
                request_id: None,
                api: None,
                key_id: None,
                params: Map::new(),
                outcome: None,
                error_code: None,
                error_message: None,
                decision: None,
                first_seq: None,
                last_seq: None,
                mac_key_id: None,
                mac: None,
                prev: String::new(),
            },
        }
    }

    /// Who: type (`User`, `AssumedRole`, `Root`, `Anonymous`), name, ARN, access key id, session.
    pub fn principal(
        mut self,
        kind: &str,
        name: &str,
        arn: Option<&str>,
        access_key_id: Option<&str>,
        session_name: Option<&str>,
    ) -> Self {
        self.record.principal = Some(PrincipalRecord {
            kind: kind.to_owned(),
            name: name.to_owned(),
            arn: arn.map(str::to_owned),
            access_key_id: access_key_id.filter(|s| !s.is_empty()).map(str::to_owned),
            session_name: session_name.map(str::to_owned),
        });
        self
    }

    /// A local OS user (IAM changes made with the CLI).
    pub fn principal_local(self, os_user: &str) -> Self {
        self.principal("Local", os_user, None, None, None)
    }

    /// The API (`alibaba`, `aws`, `local`).
    pub fn api(mut self, api: &str) -> Self {
        self.record.api = Some(api.to_owned());
        self
    }

    /// The request id.
    pub fn request_id(mut self, id: &str) -> Self {
        self.record.request_id = Some(id.to_owned()).filter(|s| !s.is_empty());
        self
    }

    /// The client's software.
    pub fn user_agent(mut self, ua: &str) -> Self {
        self.record.user_agent = Some(ua.chars().take(512).collect()).filter(|s: &String| !s.is_empty());
        self
    }

    /// The client's address.
    pub fn source_ip(mut self, ip: &str) -> Self {
        self.record.source_ip = Some(ip.to_owned());
        self
    }

    /// The key the operation applied to.
    pub fn key_id(mut self, key: &str) -> Self {
        self.record.key_id = Some(key.to_owned());
        self
    }

    /// A request parameter. Parameters named like secret material (plaintext, ciphertext blob,
    /// secret, token, password, PIN, data key) are dropped, whatever the caller passes; sizes
    /// (`PlaintextBytes`: a number) are kept.
    pub fn param(mut self, name: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        if !is_secret_param(name, &value) {
            self.record.params.insert(name.to_owned(), value);
        }
        self
    }

    /// The statement that decided.
    pub fn decision(mut self, d: &str) -> Self {
        self.record.decision = Some(d.to_owned());
        self
    }

    /// The operation succeeded.
    pub fn succeeded(mut self) -> Self {
        self.record.outcome = Some(Outcome::Success);
        self
    }

    /// A policy refused it, with the API's error code.
    pub fn denied(mut self, code: &str) -> Self {
        self.record.outcome = Some(Outcome::Denied);
        self.record.error_code = Some(code.to_owned());
        self
    }

    /// It failed with `code` (and a message, which must not hold secrets).
    pub fn failed(mut self, code: &str, message: &str) -> Self {
        self.record.outcome = Some(Outcome::Error);
        self.record.error_code = Some(code.to_owned());
        self.record.error_message = Some(message.to_owned()).filter(|m| !m.is_empty());
        self
    }

    /// The event name.
    pub fn name(&self) -> &str {
        &self.record.event
    }
}
