//! KMS error answers (`{"Code": ..., "Message": ..., "RequestId": ...}` with an HTTP status),
//! mapped onto [`KmsError`] (docs/backends/alibaba-kms.md §Errors has the table).
//!
//! Server messages are kept short and scrubbed: a signature mismatch answer echoes the
//! server's string-to-sign, which holds every parameter (a base64 plaintext for Encrypt, the
//! STS token for V2), so for those codes the message is replaced by a fixed one, and any known
//! secret is cut out of every other message.

use envseal_core::KmsError;
use envseal_http::ApiFailure;
use envseal_http::client::bound_message;
use serde::Deserialize;

/// A parsed error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

impl ApiFailure for ApiError {
    /// Throttling or a transient server failure: worth retrying.
    fn retryable(&self) -> bool {
        is_throttling(&self.code) || self.is_transient()
    }

    /// Whether the server certainly did not act on the request (so even a call that must not
    /// run twice may be retried): throttled, or refused as unavailable.
    fn certainly_not_processed(&self) -> bool {
        is_throttling(&self.code)
            || self.status == 503
            || matches!(self.code.as_str(), "ServiceUnavailableTemporary" | "SignatureNonceUsed")
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default, alias = "code")]
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(default, alias = "message")]
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(default, alias = "requestId")]
    #[serde(rename = "RequestId")]
    request_id: Option<String>,
}

/// What the caller knows about the call, to name the key in errors.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallContext<'a> {
    /// The key (id, alias or ARN) the call is about, if any.
    pub key: &'a str,
    /// The key version the call is about (Decrypt of an entry), if known.
    pub version: Option<&'a str>,
    /// Decrypt or ReEncrypt: an invalid parameter is a bad ciphertext or context.
    pub opens_blob: bool,
}

impl ApiError {
    /// Parses a non-2xx answer; `secrets` are cut out of the message should the server echo
    /// one.
    pub(crate) fn parse(status: u16, body: &[u8], secrets: &[&str]) -> Self {
        let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
        let code = parsed.as_ref().and_then(|b| b.code.clone()).filter(|c| !c.is_empty()).unwrap_or_default();
        let raw = parsed.as_ref().and_then(|b| b.message.clone()).unwrap_or_default();
        let request_id = parsed.and_then(|b| b.request_id).filter(|r| r.len() <= 128);
        let message = if is_signature_code(&code) {
            "the request signature does not match (wrong AccessKey secret, or a proxy altered the request)".to_owned()
        } else {
            scrub(&raw, secrets)
        };
        let code = if code.len() > 128 { code.chars().take(64).collect() } else { code };
        Self { status, code, message, request_id }
    }

    /// `CODE: message (HTTP n, request id r)`.
    pub(crate) fn describe(&self) -> String {
        let mut s = if self.code.is_empty() { "error".to_owned() } else { self.code.clone() };
        if !self.message.is_empty() {
            s.push_str(": ");
            s.push_str(&self.message);
        }
        s.push_str(&format!(" (HTTP {}", self.status));
        if let Some(r) = &self.request_id {
            s.push_str(&format!(", request id {r}"));
        }
        s.push(')');
        s
    }

    fn is_transient(&self) -> bool {
        self.status >= 500
            || matches!(
                self.code.as_str(),
                "InternalFailure"
                    | "InternalError"
                    | "ServiceUnavailable"
                    | "ServiceUnavailableTemporary"
                    | "SignatureNonceUsed"
            )
    }

    /// The [`KmsError`] for this answer.
    pub(crate) fn into_kms_error(self, ctx: CallContext<'_>) -> KmsError {
        let code = self.code.as_str();
        let lower_message = self.message.to_ascii_lowercase();
        let key = ctx.key.to_owned();
        if is_throttling(code) {
            return KmsError::Throttled { message: self.describe() };
        }
        if self.is_transient() {
            return KmsError::Unavailable { message: self.describe(), retryable: true };
        }
        if matches!(code, "Forbidden.KeyNotFound" | "Forbidden.AliasNotFound" | "Forbidden.ResourceNotFound")
            || code.starts_with("EntityNotExist")
        {
            return KmsError::KeyNotFound { key };
        }
        if code == "Forbidden.KeyVersionNotFound" {
            return KmsError::KeyVersionNotFound { key, version: ctx.version.unwrap_or("unknown").to_owned() };
        }
        let state_code = code.starts_with("Rejected") || code.starts_with("Forbidden.Key");
        let negated = code.contains("NotPendingDeletion")
            || lower_message.contains("not pending")
            || lower_message.contains("not in pendingdeletion")
            || lower_message.contains("not in the pendingdeletion");
        let says_pending = lower_message.contains("pendingdeletion") || lower_message.contains("pending deletion");
        if !negated && (code.contains("PendingDeletion") || (state_code && says_pending)) {
            return KmsError::KeyPendingDeletion { key };
        }
        if code == "Rejected.Disabled" || code.ends_with(".Disabled") || code == "Forbidden.KeyDisabled" {
            return KmsError::KeyDisabled { key };
        }
        if is_access_code(code) || self.status == 401 || self.status == 403 {
            let mut message = self.describe();
            if code.starts_with("InvalidTimeStamp") || code == "RequestTimeTooSkewed" {
                message.push_str("; check this machine's clock");
            }
            return KmsError::AccessDenied { message };
        }
        if code.starts_with("InvalidCiphertext")
            || code == "Rejected.InvalidCiphertext"
            || code == "Forbidden.InvalidCiphertext"
            || (ctx.opens_blob
                && code.starts_with("InvalidParameter")
                && (lower_message.contains("ciphertext") || lower_message.contains("context")))
        {
            return KmsError::InvalidCiphertext;
        }
        if code.contains("AlreadyExist") || code == "Rejected.ResourceExist" || code.ends_with(".Exist") {
            return KmsError::AlreadyExists { what: self.describe() };
        }
        if (400..500).contains(&self.status) {
            return KmsError::InvalidRequest { message: self.describe() };
        }
        KmsError::Unavailable { message: format!("unexpected answer from KMS: {}", self.describe()), retryable: false }
    }
}

fn is_throttling(code: &str) -> bool {
    code.starts_with("Throttling") || code == "ServiceUnavailable.Throttling" || code == "Rejected.Throttling"
}

fn is_signature_code(code: &str) -> bool {
    matches!(code, "SignatureDoesNotMatch" | "IncompleteSignature" | "SignatureNotMatch" | "InvalidSignature")
        || code.starts_with("SignatureDoesNotMatch")
}

fn is_access_code(code: &str) -> bool {
    is_signature_code(code)
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidSecurityToken")
        || code.starts_with("InvalidTimeStamp")
        || code == "RequestTimeTooSkewed"
        || code == "Forbidden"
        || code.starts_with("Forbidden.NoPermission")
        || code.starts_with("Forbidden.RAM")
        || code.starts_with("Forbidden.AccessDenied")
        || code == "NoPermission"
        || code == "AccessDenied"
        || code.starts_with("Forbidden.Unauthorized")
}

/// The message bounded in length, with every `secret` replaced by `[REDACTED]`, and anything
/// after "string to sign" cut (a server's debugging echo of the request).
pub(crate) fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut m = message.trim().to_owned();
    if let Some(i) = m.to_ascii_lowercase().find("string to sign") {
        m.truncate(i);
        m.push_str("[request details removed]");
    }
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if m.contains(s) {
            m = m.replace(s, "[REDACTED]");
        }
    }
    m.retain(|c| !c.is_control());
    bound_message(&mut m);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "RequestId": "4C467B38-3910-447D-87BC-AC049166F216", "HostId": "kms.cn-hangzhou.aliyuncs.com",
            "Code": code, "Message": message, "Recommend": "https://api.aliyun.com/troubleshoot"
        }))
        .unwrap()
    }

    fn map(status: u16, code: &str, message: &str) -> KmsError {
        map_ctx(status, code, message, false)
    }

    fn map_ctx(status: u16, code: &str, message: &str, opens_blob: bool) -> KmsError {
        ApiError::parse(status, &body(code, message), &["sk-secret-value", "tok-secret-value"])
            .into_kms_error(CallContext { key: "key-1", version: Some("v-1"), opens_blob })
    }

    #[test]
    fn mapping_table() {
        assert!(
            matches!(map(404, "Forbidden.KeyNotFound", "The specified Key is not found."), KmsError::KeyNotFound { key } if key == "key-1")
        );
        assert!(matches!(
            map(404, "Forbidden.AliasNotFound", "The specified Alias is not found."),
            KmsError::KeyNotFound { .. }
        ));
        assert!(
            matches!(map(404, "Forbidden.KeyVersionNotFound", "x"), KmsError::KeyVersionNotFound { version, .. } if version == "v-1")
        );
        assert!(matches!(map(400, "Rejected.Disabled", "The key is disabled."), KmsError::KeyDisabled { .. }));
        assert!(matches!(map(400, "Rejected.PendingDeletion", "x"), KmsError::KeyPendingDeletion { .. }));
        assert!(matches!(
            map(400, "Rejected.Disabled", "The key is in PendingDeletion state."),
            KmsError::KeyPendingDeletion { .. }
        ));
        assert!(matches!(map(400, "Rejected.NotPendingDeletion", "x"), KmsError::InvalidRequest { .. }));
        assert!(matches!(
            map(400, "Rejected.KeyState", "The key is not pending deletion."),
            KmsError::InvalidRequest { .. }
        ));
        for code in ["Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable.Throttling"] {
            let e = map(400, code, "Request was denied due to flow control.");
            assert!(matches!(e, KmsError::Throttled { .. }) && e.is_retryable(), "{code}");
        }
        for (status, code) in
            [(500, "InternalFailure"), (503, "ServiceUnavailableTemporary"), (502, ""), (500, "Whatever")]
        {
            let e = map(status, code, "x");
            assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }), "{code}");
        }
        for (status, code) in [
            (404, "InvalidAccessKeyId.NotFound"),
            (400, "InvalidAccessKeyId.Inactive"),
            (400, "InvalidSecurityToken.Expired"),
            (400, "InvalidSecurityToken.MismatchWithAccessKey"),
            (400, "SignatureDoesNotMatch"),
            (400, "IncompleteSignature"),
            (403, "Forbidden.NoPermission"),
            (403, "Forbidden.RAM"),
            (400, "InvalidTimeStamp.Expired"),
            (403, "SomethingNew"),
        ] {
            let e = map(status, code, "denied");
            assert!(matches!(e, KmsError::AccessDenied { .. }) && !e.is_retryable(), "{code}: {e:?}");
        }
        assert!(matches!(map(400, "InvalidCiphertext", "x"), KmsError::InvalidCiphertext));
        assert!(matches!(
            map_ctx(400, "InvalidParameter", "The CiphertextBlob is invalid", true),
            KmsError::InvalidCiphertext
        ));
        assert!(matches!(
            map_ctx(400, "InvalidParameter", "The CiphertextBlob is invalid", false),
            KmsError::InvalidRequest { .. }
        ));
        assert!(matches!(map(409, "Rejected.ResourceExist", "The alias exists"), KmsError::AlreadyExists { .. }));
        assert!(matches!(map(400, "InvalidParameter", "bad"), KmsError::InvalidRequest { .. }));
        assert!(matches!(map(400, "", ""), KmsError::InvalidRequest { .. }));
        // Not JSON at all (a proxy's HTML page).
        let e = ApiError::parse(502, b"<html>bad gateway</html>", &[]).into_kms_error(CallContext {
            key: "k",
            version: None,
            opens_blob: false,
        });
        assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }));
    }

    #[test]
    fn retry_classes() {
        let e = |status, code: &str| ApiError::parse(status, &body(code, ""), &[]);
        assert!(e(400, "Throttling.User").retryable() && e(400, "Throttling.User").certainly_not_processed());
        assert!(e(503, "ServiceUnavailableTemporary").certainly_not_processed());
        assert!(e(500, "InternalFailure").retryable() && !e(500, "InternalFailure").certainly_not_processed());
        assert!(!e(404, "Forbidden.KeyNotFound").retryable());
        assert!(!e(400, "SignatureDoesNotMatch").retryable());
    }

    #[test]
    fn messages_never_hold_secrets() {
        let echo = "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&\
                    AccessKeyId%3DLTAI%26Plaintext%3DsecretPlain%26SecurityToken%3Dtok-secret-value";
        let e = map(400, "SignatureDoesNotMatch", echo);
        let text = format!("{e} {e:?}");
        assert!(!text.contains("secretPlain") && !text.contains("tok-secret-value"), "{text}");
        let e = map(400, "InvalidParameter", "value sk-secret-value rejected; string to sign: Plaintext=abc");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("sk-secret-value") && !text.contains("Plaintext=abc"), "{text}");
        let long = "é".repeat(1000);
        assert!(scrub(&long, &[]).len() <= envseal_http::client::MAX_SERVER_MESSAGE + '…'.len_utf8());
        assert_eq!(scrub("a\nb\u{7}c", &[]), "abc");
    }
}
