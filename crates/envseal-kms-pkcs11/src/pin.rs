//! The token's user PIN: a secret, zeroized on drop, never printed.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// Environment variable holding the user PIN.
pub const PIN_ENV: &str = "ENVSEAL_PKCS11_PIN";

/// A PKCS#11 user PIN.
///
/// Not `Clone`; zeroized when dropped; `Debug` prints `Pin([REDACTED])`. The only way in is
/// [`Pin::expose_secret`].
///
/// ```compile_fail
/// let pin = envseal_kms_pkcs11::Pin::new("1234");
/// let _copy = pin.clone();
/// ```
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Takes ownership of the PIN text.
    pub fn new(pin: impl Into<String>) -> Self {
        Self(Zeroizing::new(pin.into()))
    }

    /// The PIN from `ENVSEAL_PKCS11_PIN`, if set and not empty.
    ///
    /// The variable stays in the process environment (removing it would need `unsafe` in a
    /// multi-threaded process); the copy made here is zeroized when dropped.
    pub fn from_env() -> Option<Self> {
        let v = Zeroizing::new(std::env::var(PIN_ENV).ok()?);
        (!v.is_empty()).then(|| Self::new(v.as_str()))
    }

    /// The PIN text.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin([REDACTED])")
    }
}

/// What a PIN prompt is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PinRequest {
    /// The label of the token that needs the PIN.
    pub token_label: String,
}

/// A caller-supplied PIN prompt: returns the PIN, or `None` to give up.
///
/// Called at most once per [`Pkcs11Kms`](crate::Pkcs11Kms), at the first login, from a
/// blocking thread; the answer is kept (zeroizing) for later re-logins.
pub type PinPrompt = Arc<dyn Fn(&PinRequest) -> Option<Pin> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = Pin::new("hunter2-pin");
        assert_eq!(format!("{p:?}"), "Pin([REDACTED])");
        assert_eq!(p.expose_secret(), "hunter2-pin");
    }
}
