//! Transit's error answers, mapped onto [`KmsError`].
//!
//! Transit answers `{"errors": ["..."]}` with a status; most user errors are 400 with a
//! message, so the message decides. The strings matched are OpenBao 2.x's (and Vault's,
//! which they come from); an unknown 400 stays `InvalidRequest`, never a silent success.

use envseal_core::KmsError;
use envseal_http::ApiFailure;
use envseal_http::client::bound_message;
use serde::Deserialize;

/// Sent by `VaultKms::encrypt` as `type` with every `encrypt`: Transit's encrypt creates a missing key ("upsert")
/// when the token may, and the key type only matters then. No key type has this name, so a
/// missing key is refused ("unknown key type") instead of created, and envseal reports
/// `KeyNotFound`; an existing key ignores the field.
pub(crate) const NO_UPSERT_TYPE: &str = "envseal-no-upsert";

/// A [`KmsError::InvalidRequest`] (configuration, names, arguments).
pub(crate) fn invalid(message: impl Into<String>) -> KmsError {
    KmsError::InvalidRequest { message: message.into() }
}

/// What a failed call means, before the key name and versions are added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// 401 / 403.
    Denied(String),
    /// The key does not exist.
    KeyNotFound,
    /// No secrets engine at the mount (404 "no handler for route").
    NoMount(String),
    /// Ciphertext version below the key's minimum decryption version.
    BelowMinimum,
    /// The version does not exist (newer than the latest, or an unknown minimum).
    VersionNotFound,
    /// Malformed, tampered, wrong context or wrong key.
    BadCiphertext,
    /// 429.
    Throttled(String),
    /// 5xx, 412, or a redirect. `processed` is false when the server certainly did not act on
    /// the request (412, 503, a redirect), so even a non-idempotent call may be retried.
    Unavailable { message: String, retryable: bool, processed: bool },
    /// Any other 4xx.
    Invalid(String),
}

impl ApiFailure for ApiError {
    /// Throttled, or unavailable in a way a retry may fix.
    fn retryable(&self) -> bool {
        matches!(self, ApiError::Throttled(_) | ApiError::Unavailable { retryable: true, .. })
    }

    /// Throttled, or refused before acting (412, 503, a redirect): safe to resend a call that
    /// must not run twice (e.g. rotate).
    fn certainly_not_processed(&self) -> bool {
        matches!(self, ApiError::Throttled(_) | ApiError::Unavailable { processed: false, .. })
    }
}

impl ApiError {
    /// The [`KmsError`] for a call on `key` (version numbers are added by the caller where
    /// it knows them: see `VaultKms::decrypt`).
    pub(crate) fn into_kms_error(self, key: &str, mount: &str) -> KmsError {
        match self {
            ApiError::Denied(message) => KmsError::AccessDenied { message },
            ApiError::KeyNotFound => KmsError::KeyNotFound { key: key.to_owned() },
            ApiError::NoMount(message) => KmsError::InvalidRequest {
                message: format!("no Transit secrets engine is mounted at {mount}/ ({message})"),
            },
            ApiError::BelowMinimum => KmsError::KeyVersionBelowMinimum {
                key: key.to_owned(),
                version: "unknown".into(),
                min: "unknown".into(),
            },
            ApiError::VersionNotFound => {
                KmsError::KeyVersionNotFound { key: key.to_owned(), version: "unknown".into() }
            }
            ApiError::BadCiphertext => KmsError::InvalidCiphertext,
            ApiError::Throttled(message) => KmsError::Throttled { message },
            ApiError::Unavailable { message, retryable, .. } => KmsError::Unavailable { message, retryable },
            ApiError::Invalid(message) => KmsError::InvalidRequest { message },
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// The server's messages, joined, cut to a bounded length, with `secret` (the token) removed
/// should a proxy or server ever echo it.
pub(crate) fn server_message(body: &[u8], secret: &str) -> String {
    let messages = serde_json::from_slice::<ErrorBody>(body).map(|b| b.errors).unwrap_or_default();
    let mut joined = messages.iter().map(|m| m.trim()).filter(|m| !m.is_empty()).collect::<Vec<_>>().join("; ");
    if !secret.is_empty() && joined.contains(secret) {
        joined = joined.replace(secret, "[REDACTED]");
    }
    bound_message(&mut joined);
    joined
}

/// Classifies a non-2xx answer. `message` is [`server_message`] of the body.
pub(crate) fn classify(status: u16, message: String) -> ApiError {
    let m = message.to_ascii_lowercase();
    let with_status = |what: &str| {
        if message.is_empty() { format!("{what} (HTTP {status})") } else { format!("{message} (HTTP {status})") }
    };
    match status {
        401 | 403 => ApiError::Denied(with_status("permission denied")),
        404 if m.contains("no handler for route") => ApiError::NoMount(with_status("route not found")),
        404 => ApiError::KeyNotFound,
        429 => ApiError::Throttled(with_status("rate limited")),
        // 412: a performance standby has not caught up yet; 503: sealed or standby. Neither
        // acted on the request.
        412 | 503 => ApiError::Unavailable { message: with_status("unavailable"), retryable: true, processed: false },
        500..=599 => ApiError::Unavailable { message: with_status("server error"), retryable: true, processed: true },
        300..=399 => ApiError::Unavailable {
            message: format!(
                "the server answered with a redirect (HTTP {status}); envseal does not follow redirects with a \
                 token: point VAULT_ADDR at the active node"
            ),
            retryable: false,
            processed: false,
        },
        400..=499 => classify_user_error(&m).unwrap_or_else(|| ApiError::Invalid(with_status("bad request"))),
        _ => ApiError::Unavailable { message: with_status("unexpected status"), retryable: false, processed: true },
    }
}

/// Transit's user errors (400), by message. Order matters: the version messages mention
/// "min decryption version" and "not found" too.
fn classify_user_error(m: &str) -> Option<ApiError> {
    if m.contains("cannot set min decryption version") || m.contains("version is too new") {
        return Some(ApiError::VersionNotFound);
    }
    if m.contains("disallowed by policy") || m.contains("min decryption version") || m.contains("too old") {
        return Some(ApiError::BelowMinimum);
    }
    // "unknown key type envseal-no-upsert": encrypt refused to create a missing key
    // (see `NO_UPSERT_TYPE`).
    if m.contains(NO_UPSERT_TYPE)
        || m.contains("key not found")
        || m.contains("no existing key named")
        || m.contains("not found")
    {
        return Some(ApiError::KeyNotFound);
    }
    if m.contains("ciphertext") || m.contains("message authentication failed") || m.contains("base64") {
        return Some(ApiError::BadCiphertext);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(messages: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "errors": messages })).unwrap()
    }

    fn map(status: u16, messages: &[&str]) -> KmsError {
        classify(status, server_message(&body(messages), "hvs.tok-secret")).into_kms_error("k1", "transit")
    }

    #[test]
    fn mapping() {
        // Messages as OpenBao 2.7 sends them.
        assert!(matches!(map(403, &["permission denied"]), KmsError::AccessDenied { .. }));
        assert!(matches!(map(401, &[]), KmsError::AccessDenied { .. }));
        assert!(matches!(map(404, &[]), KmsError::KeyNotFound { key } if key == "k1"));
        assert!(matches!(map(400, &["encryption key not found"]), KmsError::KeyNotFound { .. }));
        assert!(matches!(map(400, &["key not found"]), KmsError::KeyNotFound { .. }));
        assert!(matches!(map(400, &["no existing key named k1 could be found"]), KmsError::KeyNotFound { .. }));
        assert!(matches!(map(400, &["unknown key type envseal-no-upsert"]), KmsError::KeyNotFound { .. }));
        assert!(matches!(
            map(404, &["no handler for route \"nomount/encrypt/k1\". route entry not found."]),
            KmsError::InvalidRequest { message } if message.contains("transit/")
        ));
        for m in [
            "cipher: message authentication failed",
            "invalid ciphertext: no prefix",
            "invalid ciphertext: could not decode base64",
            "invalid ciphertext length",
            "illegal base64 data at input byte 4",
        ] {
            assert!(matches!(map(400, &[m]), KmsError::InvalidCiphertext), "{m}");
        }
        assert!(matches!(
            map(400, &["ciphertext or signature version is disallowed by policy (too old)"]),
            KmsError::KeyVersionBelowMinimum { .. }
        ));
        assert!(matches!(map(400, &["invalid ciphertext: version is too new"]), KmsError::KeyVersionNotFound { .. }));
        assert!(matches!(
            map(400, &["cannot set min decryption version of 5, latest key version is 2"]),
            KmsError::KeyVersionNotFound { .. }
        ));
        assert!(matches!(
            map(400, &["missing 'context' for key derivation; the key was created using a derived key"]),
            KmsError::InvalidRequest { .. }
        ));
        let e = map(429, &["request rate limited"]);
        assert!(matches!(e, KmsError::Throttled { .. }) && e.is_retryable());
        for status in [500, 502, 503, 504, 412] {
            let e = map(status, &["Vault is sealed"]);
            assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }), "{status}");
        }
        assert!(matches!(map(307, &[]), KmsError::Unavailable { retryable: false, .. }));
        // Client errors are final.
        for e in [map(400, &["cipher: message authentication failed"]), map(403, &[]), map(404, &[])] {
            assert!(!e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn processed_or_not() {
        assert!(classify(429, String::new()).certainly_not_processed());
        assert!(classify(503, String::new()).certainly_not_processed());
        assert!(!classify(500, String::new()).certainly_not_processed());
        assert!(classify(500, String::new()).retryable());
        assert!(!classify(400, String::new()).retryable());
    }

    #[test]
    fn messages_are_bounded_and_never_hold_the_token() {
        let e = map(403, &["permission denied for token hvs.tok-secret"]);
        let text = format!("{e} {e:?}");
        assert!(!text.contains("tok-secret"), "{text}");
        assert!(text.contains("[REDACTED]"), "{text}");
        let long = "é".repeat(1000);
        let m = server_message(&body(&[&long]), "");
        assert!(m.len() <= envseal_http::client::MAX_SERVER_MESSAGE + '…'.len_utf8());
        assert_eq!(server_message(b"not json", "x"), "");
        assert_eq!(server_message(&body(&["a", " ", "b"]), ""), "a; b");
    }
}
