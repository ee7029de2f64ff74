//! The per-request seam for policies and audit (implemented by another layer; this crate only
//! calls it).
//!
//! Every authenticated request calls [`RequestHook::authorize`] once per key it touches, with
//! the canonical key id as the resource, before any effect is visible to the client:
//!
//! | action | resources authorized |
//! | --- | --- |
//! | GenerateDataKey, Encrypt, DescribeKey, EnableKey, DisableKey, ScheduleKeyDeletion, CancelKeyDeletion, rotation, versions, CreateAlias (target), DeleteAlias (target) | the key named |
//! | Decrypt | the key that wrapped the blob (known once the backend opened it; the plaintext is dropped if refused) |
//! | ReEncrypt | the source key, then the destination key |
//! | CreateKey, ListKeys, ListAliases | none (`resource` is `None`) |
//!
//! [`RequestHook::completed`] is then called once with the outcome, success or failure,
//! including requests refused before authentication (with an empty principal).
//!
//! What a hook sees of a request's parameters is decided here too (`safe_params`): key ids,
//! names and options as sent, the sizes of plaintexts and blobs, never their bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// Which API a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Api {
    /// Alibaba Cloud KMS RPC API, version 2016-01-20.
    Alibaba,
    /// AWS KMS JSON 1.1 (`TrentService`).
    Aws,
}

impl Api {
    /// `alibaba` or `aws`.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Alibaba => "alibaba",
            Api::Aws => "aws",
        }
    }
}

/// What a request is about to do.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RequestInfo<'a> {
    /// The API.
    pub api: Api,
    /// The authenticated principal (empty before authentication).
    pub principal: &'a str,
    /// The access key id used (empty before authentication).
    pub access_key_id: &'a str,
    /// The API's action name (`GenerateDataKey`, `CreateKeyVersion`, ...).
    pub action: &'a str,
    /// Canonical key id the action applies to, if any.
    pub resource: Option<&'a str>,
    /// The key's tags (for attribute-based policies), when [`RequestHook::wants_resource_tags`]
    /// asked for them and the key exists.
    pub resource_tags: Option<&'a BTreeMap<String, String>>,
    /// Region the request named (Alibaba `RegionId`, the AWS SigV4 scope).
    pub region: &'a str,
    /// The client's address.
    pub source_ip: Option<IpAddr>,
    /// The `User-Agent` header, if any.
    pub user_agent: &'a str,
    /// The request id returned to the client.
    pub request_id: &'a str,
    /// Whether the request carried an STS security token.
    pub security_token: bool,
    /// The encryption context the request carried (the source context for ReEncrypt).
    pub encryption_context: &'a BTreeMap<String, String>,
    /// Request parameters that are safe to record: key ids, sizes, key specs; never
    /// plaintext, ciphertext blobs, secrets or tokens.
    pub params: &'a Map<String, Value>,
    /// The permission being checked, when it is not the action name: `ReEncryptFrom` /
    /// `ReEncryptTo` for the two keys of a ReEncrypt, `UpdateAlias` on both keys, ...
    pub operation: Option<&'a str>,
    /// The key policy of `resource`; `None` is the default policy (the account may do
    /// everything: identity policies decide).
    pub key_policy: Option<&'a envseal_iam::Policy>,
    /// The grants of `resource`.
    pub grants: &'a [envseal_iam::Grant],
    /// The server's account id for this API (ARNs of its keys).
    pub account: &'a str,
    /// Whether the request came over TLS (`aws:SecureTransport`).
    pub secure_transport: bool,
}

/// Who a caller is, for STS `GetCallerIdentity` ([`RequestHook::caller_identity`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallerIdentity {
    /// The caller's ARN in the request's cloud spelling (`arn:aws:iam::ACCOUNT:user/NAME`,
    /// `acs:ram::ACCOUNT:assumed-role/ROLE/SESSION`, `...:root`).
    pub arn: String,
    /// AWS `UserId` / Alibaba `PrincipalId`: a stable id (`ROLEID:SESSION` for a session, the
    /// account id for the root).
    pub user_id: String,
    /// What kind of principal.
    pub kind: CallerKind,
}

impl CallerIdentity {
    /// An identity from its parts.
    pub fn new(arn: String, user_id: String, kind: CallerKind) -> Self {
        Self { arn, user_id, kind }
    }
}

/// The kind of a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallerKind {
    /// The account itself (Alibaba `Account`).
    Root,
    /// A user (Alibaba `RAMUser`).
    User,
    /// A role session (Alibaba `AssumedRoleUser`).
    AssumedRole,
}

/// How a request ended.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Outcome<'a> {
    /// HTTP status sent.
    pub status: u16,
    /// The API's error code, on failure.
    pub error_code: Option<&'a str>,
}

/// A refusal by the hook; the message is returned to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// Why (never secret).
    pub message: String,
}

/// An STS `AssumeRole` request, as either API sends it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AssumeRoleInput<'a> {
    /// The role's ARN (`acs:ram::ACCOUNT:role/NAME` or `arn:aws:iam::ACCOUNT:role/NAME`).
    pub role_arn: &'a str,
    /// `RoleSessionName`.
    pub session_name: &'a str,
    /// `DurationSeconds`, if sent.
    pub duration_seconds: Option<u64>,
    /// The inline session policy (JSON), if sent.
    pub policy: Option<&'a str>,
}

/// Temporary credentials issued by [`RequestHook::assume_role`].
#[non_exhaustive]
pub struct IssuedCredentials {
    /// `STS.…` access key id.
    pub access_key_id: String,
    /// The secret (sent once, in the response).
    pub secret: Zeroizing<String>,
    /// The security token requests must carry.
    pub security_token: Zeroizing<String>,
    /// When the credentials stop working.
    pub expiration: SystemTime,
    /// ARN of the assumed-role session.
    pub assumed_role_arn: String,
    /// `ROLEID:SESSION`.
    pub assumed_role_id: String,
}

impl IssuedCredentials {
    /// Credentials from their parts.
    pub fn new(
        access_key_id: String,
        secret: Zeroizing<String>,
        security_token: Zeroizing<String>,
        expiration: SystemTime,
        assumed_role_arn: String,
        assumed_role_id: String,
    ) -> Self {
        Self { access_key_id, secret, security_token, expiration, assumed_role_arn, assumed_role_id }
    }
}

impl fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish_non_exhaustive()
    }
}

/// Why an `AssumeRole` was refused; each maps onto the API's error code.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StsRefusal {
    /// The trust policy or the caller's policies do not allow it.
    AccessDenied(String),
    /// No such role.
    NoSuchRole(String),
    /// A parameter is invalid (`DurationSeconds`, `RoleSessionName`, ...): (parameter, why).
    InvalidParameter(&'static str, String),
    /// The session policy is not a valid policy document.
    MalformedPolicy(String),
    /// The session policy is too large.
    PolicyTooLarge(String),
    /// This server issues no temporary credentials (no IAM file).
    Unsupported,
}

/// Called for every request: authorization before effects, then the outcome.
pub trait RequestHook: Send + Sync + fmt::Debug {
    /// Allows or refuses `request`. Called once per resource (see the module documentation).
    ///
    /// # Errors
    /// [`Denied`]: the client gets the API's access-denied error.
    fn authorize(&self, request: &RequestInfo<'_>) -> Result<(), Denied>;

    /// Called once per request with its outcome (for an audit trail). `request.resource` is
    /// the last resource authorized, if any.
    ///
    /// # Errors
    /// A [`Denied`] fails the request with the API's internal error, after the fact: for an
    /// audit trail that cannot be written (fail closed). The response to the client is replaced
    /// by the error, so a data key or plaintext is never returned unrecorded.
    fn completed(&self, request: &RequestInfo<'_>, outcome: &Outcome<'_>) -> Result<(), Denied> {
        let _ = (request, outcome);
        Ok(())
    }

    /// Whether [`RequestInfo::resource_tags`] should be filled in (costs a key lookup).
    fn wants_resource_tags(&self) -> bool {
        false
    }

    /// Who `request`'s caller is (STS `GetCallerIdentity`); `None` lets the server answer from
    /// the principal name (the account root for a key of the fixed set, an assumed role for
    /// a temporary one).
    fn caller_identity(&self, request: &RequestInfo<'_>) -> Option<CallerIdentity> {
        let _ = request;
        None
    }

    /// The ARNs `request`'s caller answers to (its own and, for a role session, its role's),
    /// for grant retirement; `None`: the server's own guess (the root).
    fn caller_names(&self, request: &RequestInfo<'_>) -> Option<Vec<String>> {
        let _ = request;
        None
    }

    /// Issues temporary credentials for `request.principal` (STS `AssumeRole`).
    ///
    /// # Errors
    /// [`StsRefusal`], returned to the client in the API's error shape.
    fn assume_role(
        &self,
        request: &RequestInfo<'_>,
        input: &AssumeRoleInput<'_>,
    ) -> Result<IssuedCredentials, StsRefusal> {
        let _ = (request, input);
        Err(StsRefusal::Unsupported)
    }
}

/// The default hook: every authenticated principal may do everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl RequestHook for AllowAll {
    fn authorize(&self, _request: &RequestInfo<'_>) -> Result<(), Denied> {
        Ok(())
    }
}

/// Request parameters recorded as sent (key ids, names, sizes, options); anything else is
/// left out of what hooks and the audit trail see.
const SAFE_PARAMS: &[&str] = &[
    "KeyId",
    "AliasName",
    "TargetKeyId",
    "SourceKeyId",
    "DestinationKeyId",
    "KeyVersionId",
    "NumberOfBytes",
    "KeySpec",
    "KeyUsage",
    "ProtectionLevel",
    "Origin",
    "PendingWindowInDays",
    "RotationInterval",
    "RotationPeriodInDays",
    "EnableAutomaticRotation",
    "MinDecryptionVersion",
    "EncryptionAlgorithm",
    "DryRun",
    "RoleArn",
    "RoleSessionName",
    "DurationSeconds",
    "Limit",
    "PageSize",
    "PageNumber",
];

/// Parameters whose size (not value) is recorded, as `<Name>Bytes` (base64-decoded length).
const SIZED_PARAMS: &[&str] = &["Plaintext", "CiphertextBlob", "Policy"];

/// The recordable part of a request's parameters: [`SAFE_PARAMS`] as sent, and the sizes of
/// [`SIZED_PARAMS`].
pub(crate) fn safe_params<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (name, value) in params {
        if SAFE_PARAMS.contains(&name) {
            let v = match value {
                serde_json::Value::String(s) if s.len() > 256 => {
                    let end = (0..=256).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                    serde_json::Value::String(format!("{}…", &s[..end]))
                }
                serde_json::Value::String(_) | serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                    value.clone()
                }
                _ => continue,
            };
            out.insert(name.to_owned(), v);
        } else if SIZED_PARAMS.contains(&name)
            && let serde_json::Value::String(s) = value
        {
            let len = if name == "Policy" { s.len() } else { s.trim_end_matches('=').len() * 3 / 4 };
            out.insert(format!("{name}Bytes"), serde_json::Value::from(len));
        }
    }
    out
}

/// An encryption context as a JSON object (for hooks and the audit trail).
pub(crate) fn context_json(ctx: &envseal_core::EncryptionContext) -> serde_json::Value {
    serde_json::Value::Object(
        ctx.iter().map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned()))).collect(),
    )
}
