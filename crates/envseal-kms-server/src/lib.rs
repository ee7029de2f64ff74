#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod acs;
mod alibaba;
mod auth;
mod aws;
mod backend;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hook;
mod http;
mod keypolicy;
mod keys;
mod lookalike;
mod mac;
mod metrics;
mod random;
mod request;
mod secrets;
mod sigv4;
mod state;
mod sts;
mod throttle;
mod tls;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use envseal_core::Kms;

pub use crate::auth::{AccessKey, CredentialSource, Credentials, IamFileError, Lookup};
pub use crate::hook::{
    AllowAll, Api, AssumeRoleInput, CallerIdentity, CallerKind, Denied, IssuedCredentials, Outcome, RequestHook,
    RequestInfo, StsRefusal,
};
pub use crate::http::Server;
pub use crate::throttle::{ThrottleLimits, ThrottleSpecError};
pub use crate::tls::{GeneratedFiles, TlsError, TlsIdentity};

/// Which APIs a server answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiSelect {
    /// Both, told apart by the request's shape.
    #[default]
    Both,
    /// Only the Alibaba Cloud KMS RPC API.
    Alibaba,
    /// Only the AWS KMS JSON 1.1 API.
    Aws,
}

impl ApiSelect {
    /// Whether `api` is served.
    pub fn allows(self, api: Api) -> bool {
        matches!((self, api), (ApiSelect::Both, _) | (ApiSelect::Alibaba, Api::Alibaba) | (ApiSelect::Aws, Api::Aws))
    }
}

/// Default request body limit (64 KiB: a 6 KiB Encrypt is about 8 KiB of base64).
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Default time a request may take, from its first byte to the response.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest accepted distance between a request's signed time and the server's clock (both
/// clouds use 15 minutes).
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// Default AWS account id in ARNs.
pub const DEFAULT_AWS_ACCOUNT: &str = "111122223333";
/// Default Alibaba Cloud account (UID) in ARNs.
pub const DEFAULT_ALIBABA_ACCOUNT: &str = "1234567890123456";
/// Region used in Alibaba ARNs when a request names none (`RegionId`).
pub const DEFAULT_ALIBABA_REGION: &str = "cn-hangzhou";

/// Everything a server needs.
pub struct ServerConfig {
    /// The backend; its [`Kms::key_manager`] serves the key-management actions.
    pub kms: Arc<dyn Kms>,
    /// Access keys accepted.
    pub credentials: Credentials,
    /// APIs served.
    pub api: ApiSelect,
    /// Policy/audit seam, called for every request.
    pub hook: Arc<dyn RequestHook>,
    /// Largest request body accepted; larger gets 413 in the API's error shape.
    pub max_body: usize,
    /// Time limit per request (408 in the API's error shape after it).
    pub request_timeout: Duration,
    /// Largest accepted clock skew of signed requests.
    pub max_clock_skew: Duration,
    /// AWS account id used in ARNs.
    pub aws_account: String,
    /// Alibaba Cloud account id used in ARNs.
    pub alibaba_account: String,
    /// Write one line per request (no secrets) to stderr.
    pub access_log: bool,
    /// Keep key policies, grants and secrets in this directory across restarts
    /// (`state.json`; the keys themselves are the backend's).
    pub state_dir: Option<std::path::PathBuf>,
    /// How long one day of a rotation period lasts: a day, or less in tests
    /// (`--rotation-day`), so that automatic rotation can be watched.
    pub rotation_day: Duration,
    /// Request limits (`--throttle`); none by default.
    pub throttle: ThrottleLimits,
    /// Serve HTTPS with this identity instead of plain HTTP.
    pub tls: Option<TlsIdentity>,
}

impl ServerConfig {
    /// A configuration with the defaults: both APIs, [`AllowAll`], 64 KiB bodies, 30 s
    /// timeout, 15 min skew, no access log.
    pub fn new(kms: Arc<dyn Kms>, credentials: Credentials) -> Self {
        Self {
            kms,
            credentials,
            api: ApiSelect::Both,
            hook: Arc::new(AllowAll),
            max_body: DEFAULT_MAX_BODY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            aws_account: DEFAULT_AWS_ACCOUNT.to_owned(),
            alibaba_account: DEFAULT_ALIBABA_ACCOUNT.to_owned(),
            access_log: false,
            state_dir: None,
            rotation_day: Duration::from_secs(86_400),
            throttle: ThrottleLimits::default(),
            tls: None,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("kms", &self.kms)
            .field("access_keys", &self.credentials.len())
            .field("api", &self.api)
            .field("max_body", &self.max_body)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}
