//! The hashes and MACs of the signature schemes (AWS SigV4, Alibaba ACS3 and RPC V2), and
//! constant-time comparison of what they produce.

use aws_lc_rs::{digest, hmac};
use subtle::ConstantTimeEq;

/// Lower-case hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// HMAC-SHA256.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

/// HMAC-SHA1 (Alibaba's RPC V2 signature only).
pub(crate) fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key), data).as_ref().to_vec()
}

/// Constant-time equality of two strings (signatures, tokens).
pub(crate) fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
