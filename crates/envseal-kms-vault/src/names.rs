//! Key names, mount paths and Transit ciphertexts: parsed before anything goes into a URL.

use envseal_core::KmsError;

use crate::error::invalid;

/// Prefix of every Transit ciphertext (`vault:v<N>:<base64>`), kept by OpenBao for
/// compatibility.
const CIPHERTEXT_PREFIX: &str = "vault:v";

/// Longest blob accepted by `decrypt` (a 6 KiB direct encryption is about 8.3 KB of base64).
pub(crate) const MAX_BLOB_LEN: usize = 64 * 1024;

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `name` matches Transit's key-name pattern (`framework.GenericNameRegex`:
/// `\w(([\w-.@]+)?\w)?`, ASCII). No `/`, `%` or `..` segment can get through, so a name is
/// safe to put in a URL path as is.
pub fn is_valid_key_name(name: &str) -> bool {
    let b = name.as_bytes();
    match b {
        [] => false,
        [one] => is_word(*one),
        [first, middle @ .., last] => {
            is_word(*first) && is_word(*last) && middle.iter().all(|&c| is_word(c) || matches!(c, b'-' | b'.' | b'@'))
        }
    }
}

/// Checks a key name, with an error naming it (key names are not secret).
pub(crate) fn check_key_name(name: &str) -> Result<(), KmsError> {
    if is_valid_key_name(name) {
        return Ok(());
    }
    let hint = if name.starts_with("alias/") { " (Transit has no aliases)" } else { "" };
    Err(invalid(format!(
        "{name:?} is not a valid Transit key name: use ASCII letters, digits, '_', and '-', '.', '@' inside{hint}"
    )))
}

/// Trims slashes around a mount path and checks each segment (`[A-Za-z0-9_.-]+`, not `.` or
/// `..`).
pub(crate) fn normalize_mount(mount: &str) -> Result<String, KmsError> {
    let m = mount.trim_matches('/');
    let ok = !m.is_empty()
        && m.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        });
    if ok { Ok(m.to_owned()) } else { Err(invalid(format!("{mount:?} is not a valid Transit mount path"))) }
}

/// The key version `N` of a `vault:vN:<base64>` ciphertext, if it has that shape (`N` in
/// canonical decimal, from 1; a non-empty body). The body is checked by the server.
pub fn ciphertext_version(ciphertext: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(ciphertext).ok()?;
    let rest = s.strip_prefix(CIPHERTEXT_PREFIX)?;
    let (digits, body) = rest.split_once(':')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|c| c.is_ascii_digit()) || body.is_empty() {
        return None;
    }
    digits.parse::<u32>().ok()
}

/// Parses a version id as written in [`envseal_core::WrappedKey::key_version`] and
/// `KeyManager` calls: canonical decimal from 1.
pub(crate) fn parse_version(version: &str) -> Option<u32> {
    let ok = !version.is_empty() && !version.starts_with('0') && version.bytes().all(|c| c.is_ascii_digit());
    if ok { version.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        for good in ["a", "_", "k1", "app-key", "a.b", "a@b", "envseal-0f1e2d3c", "a--b", "a..b", "A_Z"] {
            assert!(is_valid_key_name(good), "{good}");
        }
        for bad in ["", "-a", "a-", ".a", "a.", "..", "a/b", "a%2f", "a b", "ü", "alias/app", "@", "a\n"] {
            assert!(!is_valid_key_name(bad), "{bad:?}");
        }
        let e = check_key_name("alias/app").unwrap_err();
        assert!(e.to_string().contains("no aliases"), "{e}");
    }

    #[test]
    fn mounts() {
        assert_eq!(normalize_mount("transit").unwrap(), "transit");
        assert_eq!(normalize_mount("/teams/a/transit/").unwrap(), "teams/a/transit");
        for bad in ["", "/", "a//b", "..", "a/../b", "a/./b", "a b", "a?b", "a%2e"] {
            assert!(normalize_mount(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ciphertext_versions() {
        assert_eq!(ciphertext_version(b"vault:v1:abcd"), Some(1));
        assert_eq!(ciphertext_version(b"vault:v42:AAAA+/=="), Some(42));
        assert_eq!(ciphertext_version(b"vault:v4294967295:x"), Some(u32::MAX));
        for bad in [
            &b""[..],
            b"vault:v1:",
            b"vault:v1",
            b"vault:v:abc",
            b"vault:v0:abc",
            b"vault:v01:abc",
            b"vault:vx:abc",
            b"vault:v-1:abc",
            b"vault:v+1:abc",
            b"vault:v4294967296:abc",
            b"wault:v1:abc",
            b"VAULT:v1:abc",
            b"vault:V1:abc",
            b"\xffvault:v1:abc",
        ] {
            assert_eq!(ciphertext_version(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("17"), Some(17));
        for bad in ["", "0", "01", "-1", "+1", "1.0", "x", "99999999999"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }
}
