//! The conformance suite against the in-memory mock.

use std::sync::Arc;

use envseal_core::kms::{Decrypted, GeneratedDataKey};
use envseal_core::{EncryptionContext, KeyManager, Kms, KmsError, WrappedKey};
use envseal_kms_mock::MockKms;
use envseal_testkit::{run_conformance, run_key_management_conformance};

#[tokio::test]
async fn mock_conforms() {
    let kms = Arc::new(MockKms::new());
    let key = kms.create_default_key();
    run_conformance(kms, &key).await;
}

#[tokio::test]
async fn mock_conforms_through_an_alias() {
    let kms = Arc::new(MockKms::new());
    let key = kms.create_default_key();
    kms.create_alias("alias/conformance", &key).await.unwrap();
    run_conformance(kms, "alias/conformance").await;
}

#[tokio::test]
async fn seeded_mock_conforms() {
    let kms = Arc::new(MockKms::with_seed(7));
    let key = kms.create_default_key();
    run_conformance(kms.clone(), &key).await;
    run_key_management_conformance(kms).await;
}

#[tokio::test]
async fn mock_key_management_conforms() {
    let kms = Arc::new(MockKms::new());
    run_key_management_conformance(kms.clone()).await;
    // The suite cleans up after itself: its key is pending deletion, its alias gone.
    assert!(kms.list_aliases().await.unwrap().is_empty());
}

/// A backend built on the mock but without a `KeyManager` (and with the default, client-side
/// `re_encrypt`); with `drop_context`, one that forgets to send the encryption context.
#[derive(Debug)]
struct Wrapper {
    inner: MockKms,
    drop_context: bool,
}

impl Wrapper {
    fn ctx<'a>(&self, c: &'a EncryptionContext) -> std::borrow::Cow<'a, EncryptionContext> {
        if self.drop_context {
            std::borrow::Cow::Owned(EncryptionContext::new())
        } else {
            std::borrow::Cow::Borrowed(c)
        }
    }
}

#[async_trait::async_trait]
impl Kms for Wrapper {
    fn backend(&self) -> &str {
        self.inner.backend()
    }
    async fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<GeneratedDataKey, KmsError> {
        self.inner.generate_data_key(key, &self.ctx(context)).await
    }
    async fn decrypt(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        self.inner.decrypt(wrapped, &self.ctx(context)).await
    }
    async fn encrypt(&self, key: &str, plaintext: &[u8], context: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        self.inner.encrypt(key, plaintext, &self.ctx(context)).await
    }
}

fn wrapper(drop_context: bool) -> (Arc<Wrapper>, String) {
    let inner = MockKms::new();
    let key = inner.create_default_key();
    (Arc::new(Wrapper { inner, drop_context }), key)
}

#[tokio::test]
async fn default_re_encrypt_conforms() {
    let (kms, key) = wrapper(false);
    run_conformance(kms, &key).await;
}

#[tokio::test]
#[should_panic(expected = "key_manager() is None")]
async fn key_management_needs_a_key_manager() {
    let (kms, _) = wrapper(false);
    run_key_management_conformance(kms).await;
}

#[tokio::test]
#[should_panic(expected = "decrypt with a wrong context")]
async fn a_backend_ignoring_the_context_fails() {
    let (kms, key) = wrapper(true);
    run_conformance(kms, &key).await;
}
