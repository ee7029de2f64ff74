//! `pkcs11:` URIs (RFC 7512): which module, which token, which key.
//!
//! ```text
//! pkcs11:token=envseal;object=app-key?module-path=/usr/lib/softhsm/libsofthsm2.so
//! ```
//!
//! Path attributes (separated by `;`) select the token and the default key; query attributes
//! (after `?`, separated by `&`) say how to reach it. Values are percent-decoded (RFC 7512 §2.3).
//! The PIN never goes in the URI: `pin-value` and `pin-source` are refused with a hint to use
//! `ENVSEAL_PKCS11_PIN` (URIs end up in config files, shell history and logs).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a `pkcs11:` URI was refused. Messages name attributes, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The text does not start with `pkcs11:`.
    #[error("not a PKCS#11 URI: expected `pkcs11:` followed by attributes such as `token=LABEL;object=KEY`")]
    NotPkcs11,
    /// The URI carries the PIN (`pin-value`), which envseal refuses.
    #[error(
        "the URI contains `pin-value`: envseal does not accept a PIN in a URI (it would end up in config files and shell history); remove it and set ENVSEAL_PKCS11_PIN instead"
    )]
    PinInUri,
    /// An attribute is not `name=value`.
    #[error("malformed attribute in PKCS#11 URI: expected `name=value`, got an attribute without `=`")]
    MissingEquals,
    /// An attribute appears twice.
    #[error("attribute `{0}` appears more than once in the PKCS#11 URI")]
    Duplicate(String),
    /// An attribute is not one RFC 7512 defines (or a vendor `x-` attribute).
    #[error("unknown attribute `{0}` in PKCS#11 URI")]
    Unknown(String),
    /// A standard attribute envseal does not use.
    #[error("attribute `{attribute}` is not supported by envseal: {hint}")]
    Unsupported {
        /// The attribute.
        attribute: String,
        /// What to do instead.
        hint: &'static str,
    },
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding in the value of `{0}`")]
    BadPercentEncoding(String),
    /// An attribute value is not what it should be.
    #[error("invalid value for `{attribute}`: {reason}")]
    InvalidValue {
        /// The attribute.
        attribute: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl From<UriError> for envseal_core::KmsError {
    fn from(e: UriError) -> Self {
        envseal_core::KmsError::InvalidRequest { message: e.to_string() }
    }
}

/// A parsed `pkcs11:` URI.
///
/// Supported path attributes: `token`, `manufacturer`, `model`, `serial`, `slot-id` (select the
/// token; all given must match), `object` (the default key's label), `type` (must be
/// `secret-key`). Supported query attribute: `module-path` (absolute path of the PKCS#11
/// module). `pin-value`, `pin-source`, `module-name`, `id`, the `library-*` and `slot-*`
/// description attributes and vendor `x-*` attributes are refused with an explanation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    token: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    serial: Option<String>,
    slot_id: Option<u64>,
    object: Option<String>,
    module_path: Option<PathBuf>,
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The canonical text is the clearest form, and holds nothing secret.
        write!(f, "Pkcs11Uri({self})")
    }
}

impl Pkcs11Uri {
    /// A URI selecting the token labelled `label`.
    pub fn for_token(label: impl Into<String>) -> Self {
        Self { token: Some(label.into()), ..Self::default() }
    }

    /// Parses a URI (RFC 7512).
    ///
    /// # Errors
    /// [`UriError`] naming the offending attribute, e.g. [`UriError::PinInUri`] for
    /// `pin-value`.
    pub fn parse(s: &str) -> Result<Self, UriError> {
        let rest = match s.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("pkcs11:") => &s[7..],
            _ => return Err(UriError::NotPkcs11),
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Self::default();
        let mut seen: Vec<String> = Vec::new();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, raw) = attr.split_once('=').ok_or(UriError::MissingEquals)?;
            if seen.iter().any(|s| s == name) {
                return Err(UriError::Duplicate(name.to_string()));
            }
            seen.push(name.to_string());
            uri.set_path_attribute(name, raw)?;
        }
        if let Some(query) = query {
            for attr in query.split('&').filter(|a| !a.is_empty()) {
                let (name, raw) = attr.split_once('=').ok_or(UriError::MissingEquals)?;
                // Checked before anything else so that a PIN is never decoded or echoed.
                if name == "pin-value" {
                    return Err(UriError::PinInUri);
                }
                if seen.iter().any(|s| s == name) {
                    return Err(UriError::Duplicate(name.to_string()));
                }
                seen.push(name.to_string());
                uri.set_query_attribute(name, raw)?;
            }
        }
        Ok(uri)
    }

    fn set_path_attribute(&mut self, name: &str, raw: &str) -> Result<(), UriError> {
        match name {
            "token" => self.token = Some(decode_str(name, raw)?),
            "manufacturer" => self.manufacturer = Some(decode_str(name, raw)?),
            "model" => self.model = Some(decode_str(name, raw)?),
            "serial" => self.serial = Some(decode_str(name, raw)?),
            "object" => {
                let object = decode_str(name, raw)?;
                if object.is_empty() {
                    return Err(UriError::InvalidValue { attribute: name.into(), reason: "empty key label" });
                }
                self.object = Some(object);
            }
            "slot-id" => {
                let v = decode_str(name, raw)?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(UriError::InvalidValue { attribute: name.into(), reason: "expected a decimal number" });
                }
                let id = v
                    .parse()
                    .map_err(|_| UriError::InvalidValue { attribute: name.into(), reason: "number out of range" })?;
                self.slot_id = Some(id);
            }
            "type" => {
                if decode_str(name, raw)? != "secret-key" {
                    return Err(UriError::InvalidValue {
                        attribute: name.into(),
                        reason: "envseal keys are AES secret keys: use `type=secret-key` or leave it out",
                    });
                }
            }
            "id" => {
                return Err(UriError::Unsupported {
                    attribute: name.into(),
                    hint: "envseal uses CKA_ID to number key versions; name the key with `object=LABEL`",
                });
            }
            "library-manufacturer"
            | "library-description"
            | "library-version"
            | "slot-description"
            | "slot-manufacturer" => {
                return Err(UriError::Unsupported {
                    attribute: name.into(),
                    hint: "select the token with `token`, `serial`, `manufacturer`, `model` or `slot-id`",
                });
            }
            "pin-value" => return Err(UriError::PinInUri),
            _ => return Err(UriError::Unknown(name.to_string())),
        }
        Ok(())
    }

    fn set_query_attribute(&mut self, name: &str, raw: &str) -> Result<(), UriError> {
        match name {
            "module-path" => {
                let path = PathBuf::from(decode_str(name, raw)?);
                if !path.is_absolute() {
                    return Err(UriError::InvalidValue {
                        attribute: name.into(),
                        reason: "the module path must be absolute (a relative path would load a library from the current directory)",
                    });
                }
                self.module_path = Some(path);
            }
            "pin-source" => {
                return Err(UriError::Unsupported {
                    attribute: name.into(),
                    hint: "set the PIN in ENVSEAL_PKCS11_PIN (or let envseal prompt for it)",
                });
            }
            "module-name" => {
                return Err(UriError::Unsupported {
                    attribute: name.into(),
                    hint: "give the module's absolute path with `?module-path=...` or ENVSEAL_PKCS11_MODULE",
                });
            }
            _ => return Err(UriError::Unknown(name.to_string())),
        }
        Ok(())
    }

    /// `token=`: the token label (CKA token label, without its space padding).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `manufacturer=`: the token's manufacturer id.
    pub fn manufacturer(&self) -> Option<&str> {
        self.manufacturer.as_deref()
    }

    /// `model=`: the token's model.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// `serial=`: the token's serial number.
    pub fn serial(&self) -> Option<&str> {
        self.serial.as_deref()
    }

    /// `slot-id=`: the slot's numeric id.
    pub fn slot_id(&self) -> Option<u64> {
        self.slot_id
    }

    /// `object=`: the label of the default key.
    pub fn object(&self) -> Option<&str> {
        self.object.as_deref()
    }

    /// `?module-path=`: the PKCS#11 module to load.
    pub fn module_path(&self) -> Option<&Path> {
        self.module_path.as_deref()
    }

    /// Sets `object=`.
    pub fn with_object(mut self, label: impl Into<String>) -> Self {
        self.object = Some(label.into());
        self
    }

    /// Sets `slot-id=`.
    pub fn with_slot_id(mut self, id: u64) -> Self {
        self.slot_id = Some(id);
        self
    }

    /// Sets `?module-path=`.
    pub fn with_module_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.module_path = Some(path.into());
        self
    }

    /// Whether a token with these properties matches the URI's token attributes.
    pub(crate) fn matches_token(
        &self,
        slot_id: u64,
        label: &str,
        manufacturer: &str,
        model: &str,
        serial: &str,
    ) -> bool {
        self.slot_id.is_none_or(|id| id == slot_id)
            && self.token.as_deref().is_none_or(|t| t == label)
            && self.manufacturer.as_deref().is_none_or(|m| m == manufacturer)
            && self.model.as_deref().is_none_or(|m| m == model)
            && self.serial.as_deref().is_none_or(|s| s == serial)
    }
}

impl FromStr for Pkcs11Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Pkcs11Uri {
    /// The canonical form: attributes in a fixed order, values percent-encoded where needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pkcs11:")?;
        let mut sep = "";
        let mut attr = |f: &mut fmt::Formatter<'_>, name: &str, value: &str| -> fmt::Result {
            write!(f, "{sep}{name}={}", encode(value, false))?;
            sep = ";";
            Ok(())
        };
        if let Some(v) = &self.token {
            attr(f, "token", v)?;
        }
        if let Some(v) = &self.manufacturer {
            attr(f, "manufacturer", v)?;
        }
        if let Some(v) = &self.model {
            attr(f, "model", v)?;
        }
        if let Some(v) = &self.serial {
            attr(f, "serial", v)?;
        }
        if let Some(v) = self.slot_id {
            attr(f, "slot-id", &v.to_string())?;
        }
        if let Some(v) = &self.object {
            attr(f, "object", v)?;
        }
        if let Some(p) = &self.module_path {
            write!(f, "?module-path={}", encode(&p.to_string_lossy(), true))?;
        }
        Ok(())
    }
}

/// Percent-decodes `raw` (RFC 3986 §2.1) and requires UTF-8.
fn decode_str(attribute: &str, raw: &str) -> Result<String, UriError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(|| UriError::BadPercentEncoding(attribute.into()))?;
            let hi = hex_digit(hex[0]).ok_or_else(|| UriError::BadPercentEncoding(attribute.into()))?;
            let lo = hex_digit(hex[1]).ok_or_else(|| UriError::BadPercentEncoding(attribute.into()))?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::InvalidValue { attribute: attribute.into(), reason: "not UTF-8" })
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` in query values,
/// which RFC 7512's `pk11-qchar` allows).
fn encode(value: &str, query: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        let keep = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (query && b == b'/');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_form() {
        let u = Pkcs11Uri::parse("pkcs11:token=envseal-test;object=app?module-path=/usr/lib/softhsm/libsofthsm2.so")
            .unwrap();
        assert_eq!(u.token(), Some("envseal-test"));
        assert_eq!(u.object(), Some("app"));
        assert_eq!(u.module_path(), Some(Path::new("/usr/lib/softhsm/libsofthsm2.so")));
        assert_eq!(u.slot_id(), None);
        assert_eq!(u.to_string(), "pkcs11:token=envseal-test;object=app?module-path=/usr/lib/softhsm/libsofthsm2.so");
    }

    #[test]
    fn percent_decoding_and_round_trip() {
        let u = Pkcs11Uri::parse("pkcs11:token=My%20Token%3b1;object=k%c3%bc;slot-id=42;serial=00ab").unwrap();
        assert_eq!(u.token(), Some("My Token;1"));
        assert_eq!(u.object(), Some("kü"));
        assert_eq!(u.slot_id(), Some(42));
        assert_eq!(u.serial(), Some("00ab"));
        let again = Pkcs11Uri::parse(&u.to_string()).unwrap();
        assert_eq!(again, u);
        assert!(matches!(Pkcs11Uri::parse("pkcs11:token=a%2"), Err(UriError::BadPercentEncoding(a)) if a == "token"));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:token=a%zz"), Err(UriError::BadPercentEncoding(_))));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:token=%ff"), Err(UriError::InvalidValue { .. })));
    }

    #[test]
    fn empty_and_case_insensitive_scheme() {
        assert_eq!(Pkcs11Uri::parse("pkcs11:").unwrap(), Pkcs11Uri::default());
        assert_eq!(Pkcs11Uri::parse("PKCS11:token=t").unwrap().token(), Some("t"));
        assert_eq!(Pkcs11Uri::parse("pkcs11:type=secret-key;token=t").unwrap().token(), Some("t"));
        assert!(matches!(Pkcs11Uri::parse("pkcs12:token=t"), Err(UriError::NotPkcs11)));
        assert!(matches!(Pkcs11Uri::parse("pkcs"), Err(UriError::NotPkcs11)));
    }

    #[test]
    fn pin_value_is_refused_without_echo() {
        for s in ["pkcs11:token=t?pin-value=s3cret-1234", "pkcs11:token=t;pin-value=s3cret-1234"] {
            let e = Pkcs11Uri::parse(s).unwrap_err();
            assert_eq!(e, UriError::PinInUri);
            let text = format!("{e} {e:?}");
            assert!(text.contains("ENVSEAL_PKCS11_PIN"), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        let e = Pkcs11Uri::parse("pkcs11:token=t?pin-source=file:/x").unwrap_err();
        assert!(e.to_string().contains("ENVSEAL_PKCS11_PIN"));
    }

    #[test]
    fn rejects_what_it_does_not_use() {
        assert!(matches!(Pkcs11Uri::parse("pkcs11:token=a;token=b"), Err(UriError::Duplicate(_))));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:tokn=a"), Err(UriError::Unknown(_))));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:x-vendor=a"), Err(UriError::Unknown(_))));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:id=%01"), Err(UriError::Unsupported { .. })));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:token"), Err(UriError::MissingEquals)));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:slot-id=x"), Err(UriError::InvalidValue { .. })));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:slot-id=-1"), Err(UriError::InvalidValue { .. })));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:type=private"), Err(UriError::InvalidValue { .. })));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:object="), Err(UriError::InvalidValue { .. })));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:?module-path=lib.so"), Err(UriError::InvalidValue { .. })));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:?module-name=softhsm2"), Err(UriError::Unsupported { .. })));
        assert!(matches!(Pkcs11Uri::parse("pkcs11:?foo=bar"), Err(UriError::Unknown(_))));
    }

    #[test]
    fn token_matching() {
        let u = Pkcs11Uri::parse("pkcs11:token=t;serial=s").unwrap();
        assert!(u.matches_token(1, "t", "m", "x", "s"));
        assert!(!u.matches_token(1, "t", "m", "x", "other"));
        assert!(Pkcs11Uri::default().matches_token(7, "any", "", "", ""));
        assert!(!Pkcs11Uri::for_token("t").with_slot_id(2).matches_token(1, "t", "", "", ""));
    }
}
