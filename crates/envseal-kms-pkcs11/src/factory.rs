//! PKCS#11 tokens as a registered backend (`pkcs11:token=LABEL;object=KEY[?module-path=...]`,
//! RFC 7512). Environment: `ENVSEAL_PKCS11_MODULE`, `ENVSEAL_PKCS11_PIN` (else the prompter asks),
//! and `ENVSEAL_PKCS11_URI`, the token to open entries of this backend with when no URI is given.

use std::sync::Arc;

use envseal_core::backend::{BackendFactory, OpenEnv, OpenError, Opened};

use crate::blob::BACKEND;
use crate::kms::{Pkcs11Kms, Pkcs11Options};
use crate::pin::Pin;
use crate::uri::Pkcs11Uri;

/// URI scheme of PKCS#11 (RFC 7512).
pub const SCHEME: &str = "pkcs11:";
/// The variable naming the token for entries opened without a URI.
pub const URI_ENV: &str = "ENVSEAL_PKCS11_URI";

/// PKCS#11's [`BackendFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Pkcs11Factory;

impl BackendFactory for Pkcs11Factory {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn claims(&self, uri: &str) -> bool {
        uri.starts_with(SCHEME)
    }

    fn usage(&self) -> &'static str {
        "pkcs11:token=LABEL;object=KEY"
    }

    fn key_in_uri(&self, uri: &str) -> Option<String> {
        uri.parse::<Pkcs11Uri>().ok().and_then(|u| u.object().map(str::to_string))
    }

    fn open(&self, uri: &str, env: &OpenEnv) -> Result<Opened, OpenError> {
        let parsed: Pkcs11Uri = uri
            .parse()
            .map_err(|e| envseal_core::KmsError::InvalidRequest { message: format!("invalid PKCS#11 URI: {e}") })?;
        let prompter = env.prompter.clone();
        let options = Pkcs11Options::from_env().pin_prompt(move |req| {
            prompter.secret(&format!("PIN for PKCS#11 token {:?}: ", req.token_label)).map(|p| Pin::new(p.as_str()))
        });
        let kms = Pkcs11Kms::open_with(parsed, options)?;
        let key = kms.default_key().map(str::to_string);
        Ok(Opened { kms: Arc::new(kms), key, store: None })
    }

    fn open_default(&self, env: &OpenEnv) -> Result<Option<Opened>, OpenError> {
        // A token cannot be found from a key name alone.
        match std::env::var(URI_ENV) {
            Ok(u) => self.open(&u, env).map(Some),
            Err(_) => Ok(None),
        }
    }
}
