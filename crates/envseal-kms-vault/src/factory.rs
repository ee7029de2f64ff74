//! Vault / OpenBao Transit as a registered backend (`vault-transit://HOST[:PORT]/MOUNT/KEY`,
//! `vault-transit+http://...` for plain HTTP). Environment: `VAULT_ADDR`, `VAULT_TOKEN` (or
//! `BAO_ADDR`, `BAO_TOKEN`) and the rest of [`crate::VaultConfig::from_env`].

use std::sync::Arc;

use envseal_core::backend::{BackendFactory, OpenEnv, OpenError, Opened};

use crate::config::{URI_SCHEME, URI_SCHEME_HTTP};
use crate::kms::{BACKEND, VaultKms};

/// Transit's [`BackendFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct VaultFactory;

impl BackendFactory for VaultFactory {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn claims(&self, uri: &str) -> bool {
        [URI_SCHEME, URI_SCHEME_HTTP].iter().any(|s| uri.strip_prefix(s).is_some_and(|r| r.starts_with("://")))
    }

    fn usage(&self) -> &'static str {
        "vault-transit://HOST[:PORT]/MOUNT/KEY"
    }

    fn key_in_uri(&self, uri: &str) -> Option<String> {
        crate::config::TransitUri::parse(uri).ok().map(|u| u.key)
    }

    fn open(&self, uri: &str, _env: &OpenEnv) -> Result<Opened, OpenError> {
        let (kms, key) = VaultKms::from_uri(uri)?;
        Ok(Opened { kms: Arc::new(kms), key: Some(key), store: None })
    }

    fn open_default(&self, _env: &OpenEnv) -> Result<Option<Opened>, OpenError> {
        Ok(Some(Opened { kms: Arc::new(VaultKms::from_env()?), key: None, store: None }))
    }
}
