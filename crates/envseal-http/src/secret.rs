//! Secrets on the wire: request bodies wiped when the HTTP stack is done with them, and base64
//! plaintexts from answers decoded straight into [`SecretBytes`] (the scheme every backend
//! shares: the AWS backend takes the SDK's buffer into `SecretBytes` the same way).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use envseal_core::SecretBytes;
use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroizing;

/// A body that zeroizes its buffer when the last reference (hyper's included) is dropped
/// ([`envseal_support::zeroizing::into_bytes`]).
pub fn zeroizing_bytes(buf: Zeroizing<Vec<u8>>) -> Bytes {
    envseal_support::zeroizing::into_bytes(buf)
}

/// `value` as a JSON body in a buffer wiped on drop ([`zeroizing_bytes`]). Sized from a first
/// pass, so the buffer never reallocates (a reallocation would leave an unwiped copy).
///
/// # Panics
/// If `value` cannot be serialized to JSON: callers pass their own request types (strings,
/// numbers, maps with string keys), for which it cannot fail.
pub fn json_body(value: &impl Serialize) -> Bytes {
    let mut counter = Counter(0);
    // Invariant: see `# Panics`.
    serde_json::to_writer(&mut counter, value).expect("JSON serialization of a request body");
    let mut buf = Zeroizing::new(Vec::with_capacity(counter.0));
    serde_json::to_writer(&mut *buf, value).expect("JSON serialization of a request body");
    zeroizing_bytes(buf)
}

/// Counts bytes written.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes standard base64 into a secret buffer allocated once (no reallocation, no
/// intermediate copy). `None` for invalid base64.
pub fn decode_secret(b64: &str) -> Option<SecretBytes> {
    let mut out = Zeroizing::new(vec![0u8; b64.len() / 4 * 3 + 3]);
    let n = B64.decode_slice(b64.as_bytes(), &mut out[..]).ok()?;
    out.truncate(n);
    Some(SecretBytes::from(out))
}

/// `#[serde(deserialize_with = "envseal_http::secret::zeroizing_string")]`: a JSON string
/// field (a base64 plaintext) kept in a buffer wiped on drop.
///
/// # Errors
/// The deserializer's, for a value that is not a string.
pub fn zeroizing_string<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    String::deserialize(d).map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_decode_or_refuse() {
        let s = decode_secret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        assert_eq!(s.expose_secret(), (0u8..32).collect::<Vec<_>>().as_slice());
        assert_eq!(decode_secret("").unwrap().expose_secret(), b"");
        assert_eq!(decode_secret("YQ==").unwrap().expose_secret(), b"a");
        for bad in ["YQ", "Y===", "!!!!", "YQ==YQ=="] {
            assert!(decode_secret(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn json_bodies() {
        #[derive(Serialize)]
        struct B<'a> {
            plaintext: &'a str,
            bits: u32,
        }
        let b = json_body(&B { plaintext: "c2VjcmV0", bits: 256 });
        assert_eq!(&b[..], br#"{"plaintext":"c2VjcmV0","bits":256}"#);
        let clone = b.clone();
        drop(b);
        assert_eq!(&clone[..], br#"{"plaintext":"c2VjcmV0","bits":256}"#);
    }

    #[test]
    fn zeroizing_strings_deserialize() {
        #[derive(Deserialize)]
        struct D {
            #[serde(deserialize_with = "zeroizing_string")]
            plaintext: Zeroizing<String>,
        }
        let d: D = serde_json::from_str(r#"{"plaintext":"YQ=="}"#).unwrap();
        assert_eq!(d.plaintext.as_str(), "YQ==");
        assert!(serde_json::from_str::<D>(r#"{"plaintext":1}"#).is_err());
    }
}
