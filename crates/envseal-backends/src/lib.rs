#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use envseal_core::backend::{BackendFactory, OpenEnv, OpenError, Opened};

/// A URI no registered backend claims.
#[derive(Debug, thiserror::Error)]
#[error("unknown or unsupported backend {scheme:?} in {uri:?} (supported: {supported})")]
pub struct UnknownBackend {
    /// The scheme part of the URI.
    pub scheme: String,
    /// The URI.
    pub uri: String,
    /// The URI forms this build supports.
    pub supported: String,
}

/// The backends of this build.
pub struct Registry {
    factories: Vec<Box<dyn BackendFactory>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.iter().map(|b| b.name())).finish()
    }
}

impl Registry {
    /// Every backend envseal ships (AWS KMS with the `aws` feature).
    pub fn standard() -> Self {
        let factories: Vec<Box<dyn BackendFactory>> = vec![
            Box::new(envseal_kms_local::LocalFactory),
            Box::new(envseal_kms_vault::VaultFactory),
            #[cfg(feature = "aws")]
            Box::new(envseal_kms_aws::AwsFactory),
            Box::new(envseal_kms_pkcs11::Pkcs11Factory),
            Box::new(envseal_kms_alibaba::AlibabaFactory),
            Box::new(envseal_kms_mock::MemFactory),
        ];
        Self { factories }
    }

    /// The backend a URI names.
    ///
    /// # Errors
    /// [`UnknownBackend`] when no backend of this build claims it.
    pub fn for_uri(&self, uri: &str) -> Result<&dyn BackendFactory, UnknownBackend> {
        self.factories.iter().find(|b| b.claims(uri)).map(|b| b.as_ref()).ok_or_else(|| UnknownBackend {
            scheme: uri.split(':').next().unwrap_or(uri).to_string(),
            uri: uri.to_string(),
            supported: self.usage(),
        })
    }

    /// The backend whose wrapped-key entries carry `name`.
    pub fn named(&self, name: &str) -> Option<&dyn BackendFactory> {
        self.factories.iter().find(|b| b.name() == name).map(|b| b.as_ref())
    }

    /// Opens the backend a URI names.
    ///
    /// # Errors
    /// [`UnknownBackend`], and the backend's own errors.
    pub fn open(&self, uri: &str, env: &OpenEnv) -> Result<Opened, OpenError> {
        self.for_uri(uri)?.open(uri, env)
    }

    /// The URI forms of this build, for messages.
    pub fn usage(&self) -> String {
        self.factories.iter().map(|b| b.usage()).collect::<Vec<_>>().join(", ")
    }

    /// The entry names of this build.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.iter().map(|b| b.name())
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::standard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_claims_its_own_uris_only() {
        let r = Registry::standard();
        for (uri, name) in [
            ("local:", "local"),
            ("local:/tmp/ks", "local"),
            ("vault-transit://vault:8200/transit/app", "vault-transit"),
            ("vault-transit+http://127.0.0.1:8200/transit/app", "vault-transit"),
            ("alibaba-kms:cn-hangzhou/alias/app", "alibaba-kms"),
            ("pkcs11:token=t;object=k", "pkcs11"),
            ("mem", "mock"),
            #[cfg(feature = "aws")]
            ("aws-kms:alias/app", "aws-kms"),
        ] {
            assert_eq!(r.for_uri(uri).map(|b| b.name()).ok(), Some(name), "{uri}");
            assert!(r.named(name).is_some());
        }
        for bad in ["localx:", "vault-transit:x", "gcp-kms:projects/x", "alibaba-kmsx:a/b", "memory"] {
            let e = r.for_uri(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("unknown or unsupported backend") && e.contains("local:[DIR]"), "{bad}: {e}");
        }
        let names: Vec<_> = r.names().collect();
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(names.len(), dedup.len(), "one factory per entry name");
    }
}
