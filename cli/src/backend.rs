//! Backend URIs → KMS instances. One place maps a URI scheme to a backend crate.
//!
//! | URI | backend |
//! | --- | --- |
//! | `local:` / `local:/path/to/dir` | the local keystore (default dir, or that dir) |
//! | `vault-transit://HOST[:PORT]/MOUNT/KEY` (`vault-transit+http://` for plain HTTP) | Vault / OpenBao Transit |
//! | `aws-kms:arn:aws:kms:...`, `aws-kms:alias/NAME`, `aws-kms:KEY_ID` | AWS KMS (cargo feature `aws`) |
//! | `pkcs11:token=LABEL;object=KEY[?module-path=...]` (RFC 7512) | a PKCS#11 HSM |
//! | `alibaba-kms:REGION/KEY_ID_OR_ALIAS` | Alibaba Cloud KMS |

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use envseal_core::Kms;
use envseal_kms_local::{LocalError, LocalKms, Unlock, UnlockMode};

use crate::exit;

/// The default backend URI.
pub const DEFAULT_URI: &str = "local:";
/// The default key.
pub const DEFAULT_KEY: &str = "alias/default";

/// A parsed backend URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// The local keystore, in the default or a given directory.
    Local(Option<PathBuf>),
    /// Vault / OpenBao Transit (the whole URI, parsed by the backend).
    Vault(String),
    /// AWS KMS: the key reference after `aws-kms:`.
    Aws(String),
    /// A PKCS#11 token (the whole RFC 7512 URI).
    Pkcs11(String),
    /// Alibaba Cloud KMS (the whole URI, parsed by the backend).
    Alibaba(String),
}

impl Uri {
    /// Parses a URI.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("local:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            return Ok(Uri::Local((!rest.is_empty()).then(|| PathBuf::from(rest))));
        }
        if s.starts_with("vault-transit://") || s.starts_with("vault-transit+http://") {
            return Ok(Uri::Vault(s.to_string()));
        }
        if let Some(key) = s.strip_prefix("aws-kms:") {
            return Ok(Uri::Aws(key.to_string()));
        }
        if s.starts_with("pkcs11:") {
            return Ok(Uri::Pkcs11(s.to_string()));
        }
        if s.starts_with("alibaba-kms:") {
            return Ok(Uri::Alibaba(s.to_string()));
        }
        let scheme = s.split(':').next().unwrap_or(s);
        Err(exit::fail(
            2,
            format!("unknown or unsupported backend {scheme:?} in {s:?}"),
            Some(
                "supported: local:[DIR], vault-transit://HOST/MOUNT/KEY, aws-kms:KEY, pkcs11:token=...;object=..., alibaba-kms:REGION/KEY (see docs/CLI.md)",
            ),
        ))
    }

    /// The backend name recorded in wrapped-key entries.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Uri::Local(_) => "local",
            Uri::Vault(_) => "vault-transit",
            Uri::Aws(_) => "aws-kms",
            Uri::Pkcs11(_) => "pkcs11",
            Uri::Alibaba(_) => "alibaba-kms",
        }
    }
}

/// How to unlock the local keystore, from the environment: the passphrase when the keystore
/// uses one, else the master key file (`ENVSEAL_MASTER_KEY_FILE` or the default).
fn local_unlock(dir: &std::path::Path) -> Result<Unlock> {
    if LocalKms::exists(dir) && LocalKms::unlock_mode(dir)? == UnlockMode::Passphrase {
        return passphrase("Keystore passphrase: ");
    }
    Ok(Unlock::MasterKeyFile(std::env::var_os("ENVSEAL_MASTER_KEY_FILE").map(PathBuf::from)))
}

/// The passphrase from `ENVSEAL_PASSPHRASE`, else a prompt on the terminal.
pub fn passphrase(prompt: &str) -> Result<Unlock> {
    if let Ok(p) = std::env::var("ENVSEAL_PASSPHRASE") {
        return Ok(Unlock::passphrase(p));
    }
    let p = rpassword::prompt_password(prompt).map_err(|_| {
        exit::fail(14, "the keystore needs a passphrase", Some("set ENVSEAL_PASSPHRASE or run envseal from a terminal"))
    })?;
    Ok(Unlock::passphrase(p))
}

/// The local keystore directory for a URI.
pub fn local_dir(uri: &Uri) -> Result<PathBuf> {
    match uri {
        Uri::Local(Some(d)) => Ok(d.clone()),
        _ => Ok(LocalKms::default_dir()?),
    }
}

/// An opened backend, and the key its URI names (if it names one).
pub struct Opened {
    /// The backend.
    pub kms: Arc<dyn Kms>,
    /// The key named in the URI.
    pub key: Option<String>,
}

/// Opens a local keystore without its governance (for `kms serve`, which applies its own).
pub fn open_local_ungoverned(uri: &Uri) -> Result<Arc<dyn Kms>> {
    let dir = local_dir(uri)?;
    let unlock = local_unlock(&dir)?;
    Ok(Arc::new(LocalKms::open_or_create(&dir, unlock)?))
}

/// Opens a backend (the local keystore is created on first use).
pub fn open(uri: &Uri) -> Result<Arc<dyn Kms>> {
    Ok(open_with_key(uri)?.kms)
}

/// Opens a backend, also returning the key its URI names.
pub fn open_with_key(uri: &Uri) -> Result<Opened> {
    match uri {
        Uri::Local(_) => {
            let dir = local_dir(uri)?;
            let unlock = local_unlock(&dir)?;
            let kms: Arc<dyn Kms> = Arc::new(LocalKms::open_or_create(&dir, unlock)?);
            // The keystore's own governance (policies for --profile, its audit trail).
            let kms = crate::governance::wrap_local(kms, &dir, crate::governance::profile())?;
            Ok(Opened { kms, key: None })
        }
        Uri::Vault(u) => {
            let (kms, key) = envseal_kms_vault::VaultKms::from_uri(u)?;
            Ok(Opened { kms: Arc::new(kms), key: Some(key) })
        }
        Uri::Aws(key) => Ok(Opened { kms: aws()?, key: (!key.is_empty()).then(|| key.clone()) }),
        Uri::Alibaba(u) => {
            let (kms, key) = envseal_kms_alibaba::AlibabaKms::from_uri(u)?;
            Ok(Opened { kms: Arc::new(kms), key: Some(key) })
        }
        Uri::Pkcs11(u) => {
            let kms = pkcs11(u)?;
            let key = kms.default_key().map(str::to_string);
            Ok(Opened { kms: Arc::new(kms), key })
        }
    }
}

/// A PKCS#11 token: module from the URI or `ENVSEAL_PKCS11_MODULE`, PIN from
/// `ENVSEAL_PKCS11_PIN` or a prompt on the terminal.
fn pkcs11(uri: &str) -> Result<envseal_kms_pkcs11::Pkcs11Kms> {
    use envseal_kms_pkcs11::{Pin, Pkcs11Kms, Pkcs11Options, Pkcs11Uri};
    let parsed: Pkcs11Uri = uri.parse().map_err(|e| exit::fail(2, format!("invalid PKCS#11 URI: {e}"), None))?;
    let options = Pkcs11Options::from_env().pin_prompt(|req| {
        rpassword::prompt_password(format!("PIN for PKCS#11 token {:?}: ", req.token_label)).ok().map(Pin::new)
    });
    Ok(Pkcs11Kms::open_with(parsed, options)?)
}

/// AWS KMS from the SDK's default chain (credentials, region, `AWS_ENDPOINT_URL[_KMS]`).
#[cfg(feature = "aws")]
fn aws() -> Result<Arc<dyn Kms>> {
    // The SDK's loader is async; it runs on a private runtime so that opening a backend stays
    // synchronous. The client it returns works on any Tokio runtime.
    let kms = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(envseal_kms_aws::AwsKms::from_env()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the AWS configuration loader panicked"))??;
    Ok(Arc::new(kms))
}

#[cfg(not(feature = "aws"))]
fn aws() -> Result<Arc<dyn Kms>> {
    Err(exit::fail(
        6,
        "this envseal was built without AWS KMS support",
        Some("rebuild with `cargo build --release -p envseal-cli --features aws`"),
    ))
}

/// Opens the backend named `backend` from its usual environment (for opening files whose
/// entries name it when no URI was given).
pub fn open_by_name(backend: &str) -> Result<Option<Arc<dyn Kms>>> {
    Ok(match backend {
        "local" => Some(open(&Uri::Local(None))?),
        "vault-transit" => Some(Arc::new(envseal_kms_vault::VaultKms::from_env()?)),
        "aws-kms" => Some(aws()?),
        // Region and endpoint from ALIBABA_CLOUD_REGION_ID / ENVSEAL_ALIBABA_KMS_ENDPOINT.
        "alibaba-kms" => Some(Arc::new(envseal_kms_alibaba::AlibabaKms::from_env()?)),
        // A token cannot be found from a key name alone: ENVSEAL_PKCS11_URI names it.
        "pkcs11" => match std::env::var("ENVSEAL_PKCS11_URI") {
            Ok(u) => Some(Arc::new(pkcs11(&u)?)),
            Err(_) => None,
        },
        _ => None,
    })
}

/// Exit code and hint for backend-specific errors.
pub fn classify(cause: &(dyn std::error::Error + 'static)) -> Option<(u8, Option<String>)> {
    let e = cause.downcast_ref::<LocalError>()?;
    Some((14, Some(local_hint(e))))
}

fn local_hint(e: &LocalError) -> String {
    match e {
        LocalError::WrongPassphrase { .. } => "check ENVSEAL_PASSPHRASE".into(),
        LocalError::WrongMasterKey { .. } => {
            "check ENVSEAL_MASTER_KEY_FILE (the master key file created with the keystore)".into()
        }
        LocalError::NotFound { .. } => "run `envseal init`, or check ENVSEAL_HOME".into(),
        LocalError::InsecurePermissions { .. } => "restrict the permissions as the message says".into(),
        _ => "see docs/CLI.md, section Keystore".into(),
    }
}
