//! AWS KMS as a registered backend (`aws-kms:arn:aws:kms:...`, `aws-kms:alias/NAME`,
//! `aws-kms:KEY_ID`). Credentials, region and endpoint come from the SDK's default chain.

use std::sync::Arc;

use envseal_core::backend::{BackendFactory, OpenEnv, OpenError, Opened};

use crate::BACKEND;
use crate::kms::AwsKms;

/// URI prefix of AWS KMS.
pub const SCHEME: &str = "aws-kms:";

/// AWS KMS's [`BackendFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AwsFactory;

/// The SDK's configuration loader is async; it runs on a private runtime on its own thread so
/// that opening stays synchronous and works inside or outside a caller's runtime. The client
/// it returns works on any Tokio runtime.
fn from_env() -> Result<AwsKms, OpenError> {
    let loaded = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().map(|rt| rt.block_on(AwsKms::from_env()))
    })
    .join()
    .map_err(|_| OpenError::from("the AWS configuration loader panicked"))?;
    Ok(loaded?)
}

impl BackendFactory for AwsFactory {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn claims(&self, uri: &str) -> bool {
        uri.starts_with(SCHEME)
    }

    fn usage(&self) -> &'static str {
        "aws-kms:KEY_ARN_OR_ALIAS"
    }

    fn key_in_uri(&self, uri: &str) -> Option<String> {
        uri.strip_prefix(SCHEME).filter(|k| !k.is_empty()).map(str::to_string)
    }

    fn open(&self, uri: &str, _env: &OpenEnv) -> Result<Opened, OpenError> {
        Ok(Opened { kms: Arc::new(from_env()?), key: self.key_in_uri(uri), store: None })
    }

    fn open_default(&self, _env: &OpenEnv) -> Result<Option<Opened>, OpenError> {
        Ok(Some(Opened { kms: Arc::new(from_env()?), key: None, store: None }))
    }
}
