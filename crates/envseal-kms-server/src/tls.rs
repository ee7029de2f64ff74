//! TLS for the emulator (`--tls`): many SDK request classes hard-code `https`.
//!
//! Either a certificate and key the user gives (PEM), or a fresh local CA and a server
//! certificate for `127.0.0.1`, `::1` and `localhost` signed by it, written to a directory:
//! `ca.pem` (the bundle clients trust: `AWS_CA_BUNDLE`, `REQUESTS_CA_BUNDLE`,
//! `NODE_EXTRA_CA_CERTS`), `cert.pem`, and `key.pem` (mode 0600). The CA's own key is never
//! written: nothing else can be signed with it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use envseal_support::atomic::{self, Mode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The certificate or key is not usable PEM.
    #[error("{0}")]
    Invalid(String),
}

/// A server certificate and key, ready to serve.
#[derive(Clone)]
pub struct TlsIdentity {
    pub(crate) config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// Files written by [`TlsIdentity::generate`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GeneratedFiles {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server certificate (chain: server, then CA).
    pub cert: PathBuf,
    /// The server key (mode 0600).
    pub key: PathBuf,
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    std::fs::read(path).map(Zeroizing::new).map_err(|source| TlsError::Io { path: path.to_owned(), source })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    atomic::write(path, bytes, Mode::Fixed(mode))
        .map(drop)
        .map_err(|source| TlsError::Io { path: path.to_owned(), source })
}

impl TlsIdentity {
    /// From a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// [`TlsError::Invalid`] for PEM that holds no certificate or no key, or a key that does
    /// not match.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsIdentity, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Invalid(format!("the certificate is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(TlsError::Invalid("the certificate file holds no CERTIFICATE".into()));
        }
        // The parser's error names the PEM section, never key bytes.
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsError::Invalid(format!("the key is not a PEM private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Invalid(format!("the certificate and key do not go together: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity { config: Arc::new(config) })
    }

    /// From PEM files.
    ///
    /// # Errors
    /// [`TlsError`].
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
        Self::from_pem(&read(cert)?, &read(key)?)
    }

    /// A new local CA and a server certificate for 127.0.0.1, ::1 and localhost, written to
    /// `dir` (created, mode 0700).
    ///
    /// # Errors
    /// [`TlsError`].
    pub fn generate(dir: &Path) -> Result<(TlsIdentity, GeneratedFiles), TlsError> {
        let io_err = |source| TlsError::Io { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
        }
        let bad = |e: rcgen::Error| TlsError::Invalid(format!("cannot make the certificate: {e}"));
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "envseal kms serve local CA");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().map_err(bad)?).map_err(bad)?;
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])
                .map_err(bad)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "envseal kms serve");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().map_err(bad)?;
        let cert = params.signed_by(&key, &ca).map_err(bad)?;
        let files = GeneratedFiles { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        let chain = format!("{}{}", cert.pem(), ca.pem());
        let key_pem = Zeroizing::new(key.serialize_pem());
        write(&files.ca, ca.pem().as_bytes(), 0o644)?;
        write(&files.cert, chain.as_bytes(), 0o644)?;
        write(&files.key, key_pem.as_bytes(), 0o600)?;
        Ok((Self::from_pem(chain.as_bytes(), key_pem.as_bytes())?, files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_and_bad_pem() {
        let dir = std::env::temp_dir().join(format!("envseal-tls-{}", crate::wire::uuid_v4()));
        let (_, files) = TlsIdentity::generate(&dir).unwrap();
        assert!(TlsIdentity::from_files(&files.cert, &files.key).is_ok());
        let key = std::fs::read(&files.key).unwrap();
        assert!(TlsIdentity::from_pem(b"nope", &key).is_err());
        let ca = std::fs::read(&files.ca).unwrap();
        let e =
            TlsIdentity::from_pem(&ca, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap_err();
        assert!(!e.to_string().contains("AAAA"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
