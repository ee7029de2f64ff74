//! The backend over real HTTP, against a small server started here on 127.0.0.1: the request
//! shape of every operation (method, path, headers, parameters, and the V3 / V2 signature
//! recomputed from what the server received), and the parsing and error mapping of canned
//! KMS answers, success and each error shape.
//!
//! End-to-end conformance against an emulator is for `envseal kms serve`, when it exists.

#[path = "common/canned.rs"]
mod canned;
#[path = "common/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canned::{KEY_ID, VERSION, action, params};
use envseal_core::kms::{KeyManager, KeySpec, Kms};
use envseal_core::{EncryptionContext, KmsError, WrappedKey};
use envseal_kms_alibaba::signer::{EMPTY_SHA256, sign_v2, sign_v3};
use envseal_kms_alibaba::{
    AccessKeySecret, AlibabaConfig, AlibabaKms, CredentialSource, Credentials, Endpoint, RetryPolicy, RotationPolicy,
    SecurityToken, SignatureVersion,
};
use http::{Recorded, Reply, TestServer};

const AK: &str = "LTAIhttpTestKey";
const SECRET: &str = "http-test-secret-value";
const TOKEN: &str = "CAIS+http/test=token";

fn client(server: &TestServer, version: SignatureVersion, sts: bool, retry: RetryPolicy) -> AlibabaKms {
    let mut creds = Credentials::new(AK, AccessKeySecret::new(SECRET));
    if sts {
        creds = creds.with_security_token(SecurityToken::new(TOKEN));
    }
    let config = AlibabaConfig::new("cn-hangzhou", CredentialSource::Static(creds))
        .with_endpoint(Endpoint::Custom(server.url()))
        .with_signature_version(version)
        .with_timeout(Duration::from_secs(5))
        .with_retry(retry);
    AlibabaKms::new(config).unwrap()
}

fn wrapped() -> WrappedKey {
    use base64::Engine as _;
    WrappedKey {
        backend: "alibaba-kms".into(),
        key_id: KEY_ID.into(),
        key_version: VERSION.into(),
        blob: base64::engine::general_purpose::STANDARD.decode(canned::blob()).unwrap(),
    }
}

/// Checks what every request must look like, and its signature over what was received.
fn check_request(r: &Recorded, version: SignatureVersion, sts: bool, host: &str) -> (String, BTreeMap<String, String>) {
    assert_eq!((r.method.as_str(), r.path()), ("POST", "/"), "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(r.header("host"), Some(host));
    assert_eq!(r.headers.iter().filter(|(n, _)| n == "host").count(), 1, "one host header");
    assert_eq!(r.header("accept"), Some("application/json"));
    assert!(r.header("user-agent").is_some_and(|u| u.starts_with("envseal-kms-alibaba/")));
    assert_eq!(r.header("x-acs-version"), Some("2016-01-20"));
    let secret = AccessKeySecret::new(SECRET);
    let mut p = params(r);
    let action = action(r);
    assert_eq!(r.header("x-acs-action"), Some(action.as_str()));
    match version {
        SignatureVersion::V3 => {
            let auth = r.header("authorization").expect("authorization");
            let signed = auth.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap();
            let mut expected_signed = vec![
                "host",
                "x-acs-action",
                "x-acs-content-sha256",
                "x-acs-date",
                "x-acs-signature-nonce",
                "x-acs-version",
            ];
            if sts {
                expected_signed.extend(["x-acs-accesskey-id", "x-acs-security-token"]);
                expected_signed.sort_unstable();
                assert_eq!(r.header("x-acs-security-token"), Some(TOKEN));
                assert_eq!(r.header("x-acs-accesskey-id"), Some(AK));
            } else {
                assert!(r.header("x-acs-security-token").is_none());
            }
            assert_eq!(signed, expected_signed.join(";"));
            assert_eq!(r.header("x-acs-content-sha256"), Some(EMPTY_SHA256));
            assert_eq!(r.header("x-acs-signature-nonce").map(str::len), Some(32));
            let headers: Vec<(&str, &str)> = signed.split(';').map(|n| (n, r.header(n).unwrap())).collect();
            let expected = sign_v3("POST", "/", &p, &headers, EMPTY_SHA256, AK, &secret);
            assert_eq!(auth, expected.authorization, "V3 signature over the received request");
            for common in ["Action", "Signature", "AccessKeyId", "Timestamp", "SignatureNonce"] {
                assert!(!p.contains_key(common), "{common} in a V3 query");
            }
        }
        SignatureVersion::V2 => {
            assert!(r.header("authorization").is_none());
            let signature = p.remove("Signature").expect("Signature");
            assert_eq!(sign_v2("POST", &p, &secret).signature, signature, "V2 signature over the received query");
            assert_eq!(p.get("Action"), Some(&action));
            assert_eq!(p["Version"], "2016-01-20");
            assert_eq!(p["Format"], "json");
            assert_eq!(p["SignatureMethod"], "HMAC-SHA1");
            assert_eq!(p["SignatureVersion"], "1.0");
            assert_eq!(p["AccessKeyId"], AK);
            assert_eq!(p.get("SecurityToken").map(String::as_str), sts.then_some(TOKEN));
            for common in [
                "Action",
                "Version",
                "Format",
                "SignatureMethod",
                "SignatureVersion",
                "AccessKeyId",
                "SignatureNonce",
                "Timestamp",
                "SecurityToken",
            ] {
                p.remove(common);
            }
        }
        _ => unreachable!(),
    }
    (action, p)
}

async fn every_operation(kms: &AlibabaKms) {
    let c = EncryptionContext::from_pairs([("app", "billing"), ("tenant", "ü 1")]).unwrap();
    let g = kms.generate_data_key("alias/app", &c).await.unwrap();
    assert_eq!(g.data_key.expose_secret(), &canned::DATA_KEY);
    assert_eq!((g.wrapped.key_id.as_str(), g.wrapped.key_version.as_str()), (KEY_ID, VERSION));
    assert_eq!(g.wrapped, wrapped());
    let d = kms.decrypt(&wrapped(), &c).await.unwrap();
    assert_eq!(d.plaintext.expose_secret(), &canned::DATA_KEY);
    let w = kms.encrypt(KEY_ID, b"small secret", &c).await.unwrap();
    assert_eq!(w, wrapped());
    kms.re_encrypt(&wrapped(), &c, KEY_ID, &EncryptionContext::new()).await.unwrap();
    let m = kms.create_key(&KeySpec::default()).await.unwrap();
    assert_eq!((m.key_id.as_str(), m.current_version.as_str()), (KEY_ID, VERSION));
    let m = kms.describe_key(KEY_ID).await.unwrap();
    assert_eq!(m.aliases, ["alias/app"]);
    assert_eq!(m.tags.get("team").map(String::as_str), Some("a"));
    assert_eq!(m.versions.len(), 1);
    kms.rotate_key(KEY_ID).await.unwrap();
    kms.disable_key(KEY_ID).await.unwrap();
    kms.enable_key(KEY_ID).await.unwrap();
    kms.schedule_key_deletion(KEY_ID, 7).await.unwrap();
    kms.cancel_key_deletion(KEY_ID).await.unwrap();
    kms.create_alias("alias/new", KEY_ID).await.unwrap();
    kms.delete_alias("alias/new").await.unwrap();
    assert_eq!(kms.list_keys().await.unwrap().len(), 1);
    assert_eq!(kms.list_aliases().await.unwrap()[0].name, "alias/app");
    kms.update_rotation_policy(KEY_ID, RotationPolicy::Every(Duration::from_secs(7 * 86_400))).await.unwrap();
}

#[tokio::test]
async fn request_shape_and_signatures_over_http() {
    for (version, sts) in [
        (SignatureVersion::V3, false),
        (SignatureVersion::V3, true),
        (SignatureVersion::V2, false),
        (SignatureVersion::V2, true),
    ] {
        let server = TestServer::start(|r: &Recorded| Reply::json(200, canned::success(&action(r)))).await;
        let kms = client(&server, version, sts, RetryPolicy::none());
        every_operation(&kms).await;
        let host = server.addr.to_string();
        let calls: Vec<(String, BTreeMap<String, String>)> =
            server.requests().iter().map(|r| check_request(r, version, sts, &host)).collect();
        let find = |a: &str| calls.iter().find(|(x, _)| x == a).map(|(_, p)| p.clone()).unwrap();
        let ctx = "{\"app\":\"billing\",\"tenant\":\"ü 1\"}";
        let g = find("GenerateDataKey");
        assert_eq!(
            g,
            BTreeMap::from([
                ("EncryptionContext".to_owned(), ctx.to_owned()),
                ("KeyId".to_owned(), "alias/app".to_owned()),
                ("KeySpec".to_owned(), "AES_256".to_owned()),
            ])
        );
        assert_eq!(find("Decrypt")["CiphertextBlob"], canned::blob());
        assert_eq!(find("Encrypt")["Plaintext"], "c21hbGwgc2VjcmV0");
        let re = find("ReEncrypt");
        assert_eq!((re["SourceEncryptionContext"].as_str(), re.get("DestinationEncryptionContext")), (ctx, None));
        assert_eq!(find("ScheduleKeyDeletion")["PendingWindowInDays"], "7");
        assert_eq!(find("UpdateRotationPolicy")["RotationInterval"], "604800s");
        assert_eq!(
            find("CreateAlias"),
            BTreeMap::from(
                [("AliasName".to_owned(), "alias/new".to_owned()), ("KeyId".to_owned(), KEY_ID.to_owned()),]
            )
        );
        // Each signed request has its own nonce.
        let nonces: std::collections::BTreeSet<String> = server
            .requests()
            .iter()
            .map(|r| {
                r.header("x-acs-signature-nonce")
                    .map(str::to_owned)
                    .unwrap_or_else(|| params(r)["SignatureNonce"].clone())
            })
            .collect();
        assert_eq!(nonces.len(), calls.len());
    }
}

#[tokio::test]
async fn error_shapes_are_mapped() {
    type Case = (u16, &'static str, &'static str, fn(&KmsError) -> bool);
    let cases: Vec<Case> = vec![
        (
            404,
            "Forbidden.KeyNotFound",
            "The specified Key is not found.",
            |e| matches!(e, KmsError::KeyNotFound { key } if key == KEY_ID),
        ),
        (404, "Forbidden.AliasNotFound", "The specified Alias is not found.", |e| {
            matches!(e, KmsError::KeyNotFound { .. })
        }),
        (
            404,
            "Forbidden.KeyVersionNotFound",
            "x",
            |e| matches!(e, KmsError::KeyVersionNotFound { version, .. } if version == VERSION),
        ),
        (400, "Rejected.Disabled", "The key is disabled.", |e| matches!(e, KmsError::KeyDisabled { .. })),
        (400, "Rejected.PendingDeletion", "x", |e| matches!(e, KmsError::KeyPendingDeletion { .. })),
        (400, "Throttling.User", "Request was denied due to user flow control.", |e| {
            matches!(e, KmsError::Throttled { .. })
        }),
        (404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.", |e| {
            matches!(e, KmsError::AccessDenied { .. })
        }),
        (400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.", |e| {
            matches!(e, KmsError::AccessDenied { .. })
        }),
        (400, "SignatureDoesNotMatch", "server string to sign is:POST&%2F&Plaintext%3Dc21hbGw", |e| {
            matches!(e, KmsError::AccessDenied { .. })
        }),
        (403, "Forbidden.NoPermission", "This operation is forbidden by permission system.", |e| {
            matches!(e, KmsError::AccessDenied { .. })
        }),
        (400, "InvalidCiphertext", "The CiphertextBlob is invalid.", |e| matches!(e, KmsError::InvalidCiphertext)),
        (400, "InvalidParameter", "The specified parameter CiphertextBlob is not valid.", |e| {
            matches!(e, KmsError::InvalidCiphertext)
        }),
        (500, "InternalFailure", "Internal error.", |e| matches!(e, KmsError::Unavailable { retryable: true, .. })),
        (503, "ServiceUnavailableTemporary", "Busy.", |e| matches!(e, KmsError::Unavailable { retryable: true, .. })),
        (502, "", "", |e| matches!(e, KmsError::Unavailable { retryable: true, .. })),
        (400, "InvalidParameter.Mismatch", "bad", |e| matches!(e, KmsError::InvalidRequest { .. })),
    ];
    for (status, code, message, expected) in cases {
        let body = if code.is_empty() { "<html>Bad Gateway</html>".to_owned() } else { canned::error(code, message) };
        let server = TestServer::start(move |_: &Recorded| Reply::json(status, body.clone())).await;
        let kms = client(&server, SignatureVersion::V3, true, RetryPolicy::none());
        let e = kms.decrypt(&wrapped(), &EncryptionContext::new()).await.unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(expected(&e), "{status} {code}: got {text}");
        for secret in [SECRET, TOKEN, "c21hbGw"] {
            assert!(!text.contains(secret), "{code}: {secret} in {text}");
        }
        if !code.is_empty() {
            assert!(
                text.contains(code)
                    || matches!(
                        e,
                        KmsError::KeyNotFound { .. }
                            | KmsError::KeyDisabled { .. }
                            | KmsError::KeyPendingDeletion { .. }
                            | KmsError::KeyVersionNotFound { .. }
                            | KmsError::InvalidCiphertext
                    ),
                "{code}: {text}"
            );
        }
        assert_eq!(server.requests().len(), 1, "{code}: no retry with RetryPolicy::none()");
    }
}

#[tokio::test]
async fn retries_then_succeeds_over_http() {
    let count = Arc::new(Mutex::new(0u32));
    let seen = count.clone();
    let server = TestServer::start(move |r: &Recorded| {
        let mut n = seen.lock().unwrap();
        *n += 1;
        match *n {
            1 => Reply::json(503, canned::error("ServiceUnavailableTemporary", "busy")),
            2 => Reply::json(400, canned::error("Throttling.User", "slow down")),
            _ => Reply::json(200, canned::success(&action(r))),
        }
    })
    .await;
    let retry = RetryPolicy::new(4, Duration::from_millis(5), Duration::from_millis(20));
    let kms = client(&server, SignatureVersion::V3, false, retry);
    kms.generate_data_key(KEY_ID, &EncryptionContext::new()).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    // Every attempt is signed anew.
    let nonces: std::collections::BTreeSet<&str> =
        requests.iter().map(|r| r.header("x-acs-signature-nonce").unwrap()).collect();
    assert_eq!(nonces.len(), 3);
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable_and_retryable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config =
        AlibabaConfig::new("cn-hangzhou", CredentialSource::Static(Credentials::new(AK, AccessKeySecret::new(SECRET))))
            .with_endpoint(Endpoint::Custom(format!("http://127.0.0.1:{port}")))
            .with_retry(RetryPolicy::new(2, Duration::from_millis(1), Duration::from_millis(2)));
    let kms = AlibabaKms::new(config).unwrap();
    let e = kms.encrypt(KEY_ID, b"plaintext-not-in-errors", &EncryptionContext::new()).await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains("cGxhaW50ZXh0") && !text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn malformed_success_answers_are_errors() {
    for body in [
        "not json",
        "{}",
        r#"{"KeyId":"k","KeyVersionId":"v","Plaintext":"!!","CiphertextBlob":"AA=="}"#,
        r#"{"KeyId":"k","KeyVersionId":"v","Plaintext":"AAAA","CiphertextBlob":"AA=="}"#,
    ] {
        let server = TestServer::start(move |_: &Recorded| Reply::json(200, body)).await;
        let kms = client(&server, SignatureVersion::V3, false, RetryPolicy::none());
        let e = kms.generate_data_key(KEY_ID, &EncryptionContext::new()).await.unwrap_err();
        assert!(matches!(e, KmsError::Unavailable { retryable: false, .. }), "{body}: {e:?}");
    }
}
