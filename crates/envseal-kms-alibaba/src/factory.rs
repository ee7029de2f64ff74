//! Alibaba Cloud KMS as a registered backend (`alibaba-kms:REGION/KEY_ID_OR_ALIAS`).
//! Environment: the credentials chain and endpoint settings of [`crate::AlibabaConfig`].

use std::sync::Arc;

use envseal_core::backend::{BackendFactory, OpenEnv, OpenError, Opened};

use crate::kms::{AlibabaKms, BACKEND};
use crate::uri::SCHEME;

/// Alibaba Cloud KMS's [`BackendFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AlibabaFactory;

impl BackendFactory for AlibabaFactory {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn claims(&self, uri: &str) -> bool {
        uri.strip_prefix(SCHEME).is_some_and(|r| r.starts_with(':'))
    }

    fn usage(&self) -> &'static str {
        "alibaba-kms:REGION/KEY"
    }

    fn key_in_uri(&self, uri: &str) -> Option<String> {
        crate::uri::AlibabaKeyUri::parse(uri).ok().map(|u| u.key().to_string())
    }

    fn open(&self, uri: &str, _env: &OpenEnv) -> Result<Opened, OpenError> {
        let (kms, key) = AlibabaKms::from_uri(uri)?;
        Ok(Opened { kms: Arc::new(kms), key: Some(key), store: None })
    }

    fn open_default(&self, _env: &OpenEnv) -> Result<Option<Opened>, OpenError> {
        Ok(Some(Opened { kms: Arc::new(AlibabaKms::from_env()?), key: None, store: None }))
    }
}
