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

use std::fmt;

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

/// Called for every request: authorization before effects, then the outcome.
pub trait RequestHook: Send + Sync + fmt::Debug {
    /// Allows or refuses `request`. Called once per resource (see the module documentation).
    ///
    /// # Errors
    /// [`Denied`]: the client gets the API's access-denied error.
    fn authorize(&self, request: &RequestInfo<'_>) -> Result<(), Denied>;

    /// Called once per request with its outcome (for an audit trail). `request.resource` is
    /// the last resource authorized, if any.
    fn completed(&self, request: &RequestInfo<'_>, outcome: &Outcome<'_>) {
        let _ = (request, outcome);
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
