//! In-process tests of the whole server on a loopback port: replay and clock-skew rules, STS,
//! the request hook, the API switch. (The SDK-driven tests are in tests/kms-serve/.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use envseal_kms_mock::MockKms;
use envseal_support::percent;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::mac;
use crate::wire;
use crate::{
    AccessKey, ApiSelect, Credentials, Denied, Outcome, RequestHook, RequestInfo, Server, ServerConfig, acs, sigv4,
};

const AK: &str = "AKTEST";
const SK: &str = "test-secret";

struct Running {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    key: String,
}

async fn start(configure: impl FnOnce(&mut ServerConfig)) -> Running {
    let mock = Arc::new(MockKms::new());
    let key = mock.create_default_key();
    let mut creds = Credentials::new();
    creds.insert(AccessKey::new(AK, SK, "tester"));
    creds.insert(AccessKey::new("STS.A", "sts-secret", "sts").with_security_token("tok", None));
    let mut cfg = ServerConfig::new(mock, creds);
    configure(&mut cfg);
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running { addr, stop: Some(tx), task, key }
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn send(addr: &str, request: String) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

/// An Alibaba RPC V2 GET (signed with the composer the documented example pins).
fn v2_request(addr: &str, action: &str, extra: &[(&str, &str)], secret: &str, nonce: &str, time: SystemTime) -> String {
    let mut p: BTreeMap<String, String> = [
        ("Action", action),
        ("Version", "2016-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", AK),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    p.insert("Timestamp".into(), wire::iso8601(time));
    let sig = acs::v2_signature(secret, &acs::v2_string_to_sign("GET", &p));
    p.insert("Signature".into(), sig);
    let q: Vec<String> = p.iter().map(|(k, v)| format!("{}={}", percent::encode(k), percent::encode(v))).collect();
    format!("GET /?{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n", q.join("&"))
}

/// An AWS JSON 1.1 request signed with SigV4 (the derivation the AWS documented example pins).
fn aws_request(
    addr: &str,
    target: &str,
    body: &str,
    ak: &str,
    secret: &str,
    token: Option<&str>,
    time: SystemTime,
) -> String {
    let stamp = wire::iso8601(time).replace(['-', ':'], "");
    let date = &stamp[..8];
    let mut headers = vec![
        ("content-type".to_owned(), "application/x-amz-json-1.1".to_owned()),
        ("host".to_owned(), addr.to_owned()),
        ("x-amz-date".to_owned(), stamp.clone()),
        ("x-amz-target".to_owned(), format!("TrentService.{target}")),
    ];
    if let Some(t) = token {
        headers.push(("x-amz-security-token".to_owned(), t.to_owned()));
    }
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical = format!("POST\n/\n\n{canonical_headers}\n{signed}\n{}", mac::sha256_hex(body.as_bytes()));
    let scope = format!("{date}/eu-west-1/kms/aws4_request");
    let sts = format!("AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}", mac::sha256_hex(canonical.as_bytes()));
    let sig = hex::encode(mac::hmac_sha256(&sigv4::signing_key(secret, date, "eu-west-1", "kms"), sts.as_bytes()));
    let mut req = format!("POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in &headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Authorization: AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={signed}, Signature={sig}\r\n\r\n{body}"
    ));
    req
}

#[tokio::test]
async fn alibaba_v2_replay_and_clock_rules() {
    let s = start(|_| {}).await;
    let now = SystemTime::now();
    let (status, v) = send(&s.addr, v2_request(&s.addr, "ListKeys", &[], SK, "n-1", now)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["TotalCount"], 1);
    assert!(v["RequestId"].is_string());
    // The same nonce again.
    let (status, v) = send(&s.addr, v2_request(&s.addr, "ListKeys", &[], SK, "n-1", now)).await;
    assert_eq!((status, v["Code"].as_str()), (400, Some("SignatureNonceUsed")), "{v}");
    // 16 minutes off, either way.
    for t in [now - Duration::from_secs(960), now + Duration::from_secs(960)] {
        let (status, v) = send(&s.addr, v2_request(&s.addr, "ListKeys", &[], SK, &wire::uuid_v4(), t)).await;
        assert_eq!((status, v["Code"].as_str()), (400, Some("InvalidTimeStamp.Expired")), "{v}");
    }
    // A wrong secret: the signature is checked first, so the clock is not revealed.
    let (status, v) = send(&s.addr, v2_request(&s.addr, "ListKeys", &[], "nope", "n-2", now)).await;
    assert_eq!((status, v["Code"].as_str()), (400, Some("SignatureDoesNotMatch")), "{v}");
    // In the real message shape: the sentence, ':', the server's string to sign.
    let msg = v["Message"].as_str().unwrap();
    assert!(msg.contains("server string to sign is:GET&%2F&AccessKeyId%3D"), "{msg}");
    // A plaintext is never echoed back.
    let extra = [("KeyId", s.key.as_str()), ("Plaintext", "dG9wLXNlY3JldC1wbGFpbnRleHQ=")];
    let (status, v) = send(&s.addr, v2_request(&s.addr, "Encrypt", &extra, "nope", "n-5", now)).await;
    assert_eq!((status, v["Code"].as_str()), (400, Some("SignatureDoesNotMatch")), "{v}");
    let msg = v["Message"].as_str().unwrap();
    assert!(msg.contains("Plaintext%3DREDACTED") && !msg.contains("dG9wLXNlY3JldC1wbGFpbnRleHQ"), "{msg}");
    // Parameters and the encryption context through the V2 form.
    let ctx = r#"{"a":"1 2","envseal:field":"x"}"#;
    let (status, v) = send(
        &s.addr,
        v2_request(&s.addr, "GenerateDataKey", &[("KeyId", &s.key), ("EncryptionContext", ctx)], SK, "n-3", now),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let blob = v["CiphertextBlob"].as_str().unwrap().to_owned();
    let (status, v) = send(
        &s.addr,
        v2_request(&s.addr, "Decrypt", &[("CiphertextBlob", &blob), ("EncryptionContext", ctx)], SK, "n-4", now),
    )
    .await;
    assert_eq!((status, v["KeyId"].as_str()), (200, Some(s.key.as_str())), "{v}");
    let (status, v) = send(
        &s.addr,
        v2_request(
            &s.addr,
            "Decrypt",
            &[("CiphertextBlob", &blob), ("EncryptionContext", r#"{"a":"1 2"}"#)],
            SK,
            "n-5",
            now,
        ),
    )
    .await;
    assert_eq!((status, v["Code"].as_str()), (400, Some("InvalidParameter.EncryptionContext")), "{v}");
    let (status, v) = send(
        &s.addr,
        v2_request(&s.addr, "Encrypt", &[("KeyId", &s.key), ("Plaintext", "YQ=="), ("DryRun", "true")], SK, "n-6", now),
    )
    .await;
    assert_eq!((status, v["Code"].as_str()), (400, Some("DryRunOperation")), "{v}");
    s.stop().await;
}

#[tokio::test]
async fn aws_sigv4_skew_sts_and_regions() {
    let s = start(|_| {}).await;
    let now = SystemTime::now();
    let body = format!(r#"{{"KeyId":"{}"}}"#, s.key);
    let (status, v) = send(&s.addr, aws_request(&s.addr, "DescribeKey", &body, AK, SK, None, now)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["KeyMetadata"]["Arn"],
        format!("arn:aws:kms:eu-west-1:111122223333:key/{}", s.key),
        "region from the scope"
    );
    let (status, v) =
        send(&s.addr, aws_request(&s.addr, "DescribeKey", &body, AK, SK, None, now - Duration::from_secs(960))).await;
    assert_eq!((status, v["__type"].as_str()), (400, Some("InvalidSignatureException")), "{v}");
    let (status, v) =
        send(&s.addr, aws_request(&s.addr, "DescribeKey", &body, "STS.A", "sts-secret", Some("tok"), now)).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = send(&s.addr, aws_request(&s.addr, "DescribeKey", &body, "STS.A", "sts-secret", None, now)).await;
    assert_eq!((status, v["__type"].as_str()), (400, Some("UnrecognizedClientException")), "{v}");
    let (status, v) = send(&s.addr, aws_request(&s.addr, "DescribeKey", "{not json", AK, SK, None, now)).await;
    assert_eq!((status, v["__type"].as_str()), (400, Some("SerializationException")), "{v}");
    let (status, v) = send(&s.addr, aws_request(&s.addr, "Frobnicate", "{}", AK, SK, None, now)).await;
    assert_eq!((status, v["__type"].as_str()), (400, Some("UnknownOperationException")), "{v}");
    // Another account's ARN does not name our key.
    let other = format!(r#"{{"KeyId":"arn:aws:kms:eu-west-1:999999999999:key/{}"}}"#, s.key);
    let (status, v) = send(&s.addr, aws_request(&s.addr, "DescribeKey", &other, AK, SK, None, now)).await;
    assert_eq!((status, v["__type"].as_str()), (400, Some("NotFoundException")), "{v}");
    s.stop().await;
}

/// (principal, action, resource, status) of a completed request.
type Seen = (String, String, Option<String>, u16);

#[derive(Debug, Default)]
struct DenyDecrypt {
    seen: Mutex<Vec<Seen>>,
}

impl RequestHook for DenyDecrypt {
    fn authorize(&self, r: &RequestInfo<'_>) -> Result<(), Denied> {
        if r.action == "Decrypt" {
            return Err(Denied { message: format!("{} may not decrypt", r.principal) });
        }
        Ok(())
    }

    fn completed(&self, r: &RequestInfo<'_>, o: &Outcome<'_>) -> Result<(), Denied> {
        self.seen.lock().unwrap().push((
            r.principal.to_owned(),
            r.action.to_owned(),
            r.resource.map(str::to_owned),
            o.status,
        ));
        Ok(())
    }
}

#[tokio::test]
async fn the_hook_sees_every_request_and_can_refuse() {
    let hook = Arc::new(DenyDecrypt::default());
    let h = hook.clone();
    let s = start(move |c| c.hook = h).await;
    let now = SystemTime::now();
    let body = format!(r#"{{"KeyId":"{}","KeySpec":"AES_256"}}"#, s.key);
    let (status, v) = send(&s.addr, aws_request(&s.addr, "GenerateDataKey", &body, AK, SK, None, now)).await;
    assert_eq!(status, 200, "{v}");
    let body = format!(r#"{{"CiphertextBlob":"{}"}}"#, v["CiphertextBlob"].as_str().unwrap());
    let (status, v) = send(&s.addr, aws_request(&s.addr, "Decrypt", &body, AK, SK, None, now)).await;
    assert_eq!((status, v["__type"].as_str()), (400, Some("AccessDeniedException")), "{v}");
    assert!(v.get("Plaintext").is_none());
    let (status, v) = send(
        &s.addr,
        v2_request(&s.addr, "Decrypt", &[("CiphertextBlob", body.split('"').nth(3).unwrap())], SK, "h-1", now),
    )
    .await;
    assert_eq!((status, v["Code"].as_str()), (403, Some("Forbidden.RAM")), "{v}");
    let seen = hook.seen.lock().unwrap().clone();
    let key = Some(s.key.clone());
    assert_eq!(
        seen,
        vec![
            ("tester".into(), "GenerateDataKey".into(), key.clone(), 200),
            ("tester".into(), "Decrypt".into(), key.clone(), 400),
            ("tester".into(), "Decrypt".into(), key, 403),
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn api_switch_and_loopback_only() {
    let s = start(|c| c.api = ApiSelect::Alibaba).await;
    let (status, v) = send(&s.addr, aws_request(&s.addr, "ListKeys", "{}", AK, SK, None, SystemTime::now())).await;
    assert_eq!((status, v["__type"].as_str()), (400, Some("UnknownOperationException")), "{v}");
    s.stop().await;
    let cfg = ServerConfig::new(Arc::new(MockKms::new()), Credentials::new());
    let e = Server::bind("0.0.0.0:0".parse().unwrap(), cfg).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn slow_bodies_time_out_in_the_apis_shape() {
    let s = start(|c| c.request_timeout = Duration::from_millis(300)).await;
    for (head, field, code) in [
        (
            "X-Amz-Target: TrentService.ListKeys\r\nContent-Type: application/x-amz-json-1.1",
            "__type",
            "RequestTimeoutException",
        ),
        ("x-acs-action: ListKeys", "Code", "RequestTimeout"),
    ] {
        // Headers promise a body that never comes.
        let req = format!("POST / HTTP/1.1\r\nHost: x\r\n{head}\r\nContent-Length: 10\r\n\r\n");
        let started = std::time::Instant::now();
        let mut stream = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        stream.write_all(req.as_bytes()).await.unwrap();
        // The body was never read, so the server answers and closes the connection.
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        let v: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(v[field], code, "{text}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    s.stop().await;
}
