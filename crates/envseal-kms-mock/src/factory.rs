//! The in-memory mock as a registered backend (`mem`): keys live in this process only and are
//! lost when it exits, so it serves `envseal kms serve` and tests, never sealed files.

use std::sync::Arc;

use envseal_core::backend::{BackendFactory, OpenEnv, OpenError, Opened};

use crate::{BACKEND, MockKms};

/// URI of the in-memory mock.
pub const SCHEME: &str = "mem";

/// The mock's [`BackendFactory`]: each [`BackendFactory::open`] is a new, empty store with one
/// key, aliased [`DEFAULT_ALIAS`](crate::DEFAULT_ALIAS), which the URI names.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemFactory;

impl BackendFactory for MemFactory {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn claims(&self, uri: &str) -> bool {
        uri == SCHEME || uri == "mem:"
    }

    fn usage(&self) -> &'static str {
        "mem"
    }

    fn key_in_uri(&self, _uri: &str) -> Option<String> {
        // Each open makes a new key; the URI cannot name it.
        None
    }

    fn open(&self, _uri: &str, _env: &OpenEnv) -> Result<Opened, OpenError> {
        let mock = MockKms::new();
        let key = mock.create_default_key();
        mock.alias_default(&key);
        Ok(Opened { kms: Arc::new(mock), key: Some(key), store: None })
    }

    fn open_default(&self, _env: &OpenEnv) -> Result<Option<Opened>, OpenError> {
        // A fresh in-memory store holds no one's keys.
        Ok(None)
    }
}
