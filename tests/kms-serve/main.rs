//! `envseal kms serve` end to end (issue 5): the real binary on a free port, driven by clients
//! no one here wrote.
//!
//! - the official Alibaba Cloud KMS Python SDK (`alibaba_sdk.py`), V3 and V2 signatures;
//! - boto3 (`aws_boto3.py`), on the local keystore backend, across a restart;
//! - the AWS Encryption SDK CLI (`aws-encryption-cli`), encrypting and decrypting a file;
//! - envseal's own AWS backend through the CLI (`--features aws`);
//! - raw HTTP for what SDKs never send (unsigned and malformed requests, oversized bodies).
//!
//! Python and its packages (`pip install alibabacloud-kms20160120 boto3
//! aws-encryption-sdk-cli`) are looked up as `$ENVSEAL_PYTHON` or `python3` on PATH. When they
//! are missing the test prints a `SKIPPED:` line and passes, unless `ENVSEAL_REQUIRE_SERVERS=1`
//! (CI), which makes it fail.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_envseal");
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/kms-serve");

// ---------------------------------------------------------------------------------------------
// Harness

/// A running `envseal kms serve`, stopped (SIGTERM, then SIGKILL) on drop.
struct Serve {
    child: Option<Child>,
    addr: String,
    /// `http` or `https` (`--tls`).
    scheme: &'static str,
    /// `export NAME=VALUE` lines of the banner.
    env: HashMap<String, String>,
    /// The banner, whole.
    banner: String,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("server.log");
        let mut child = Command::new(BIN)
            .args(["kms", "serve", "--port", "0"])
            .args(args)
            .env_remove("ENVSEAL_KMS_SERVE_ACCESS_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start envseal kms serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut banner, mut env, mut addr, mut scheme) = (String::new(), HashMap::new(), None, "http");
        for line in lines.by_ref() {
            let line = line.unwrap();
            banner.push_str(&line);
            banner.push('\n');
            if let Some(rest) = line.trim().strip_prefix("endpoint: http://") {
                addr = Some(rest.to_owned());
            } else if let Some(rest) = line.trim().strip_prefix("endpoint: https://") {
                (addr, scheme) = (Some(rest.to_owned()), "https");
            }
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                env.insert(k.to_owned(), v.to_owned());
            }
            if line.starts_with("Ready.") {
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let addr = addr.unwrap_or_else(|| {
            panic!("no endpoint in the banner:\n{banner}\nlog:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        });
        Serve { child: Some(child), addr, scheme, env, banner, log, _tmp: tmp }
    }

    fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit (10 s at most).
    fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("envseal kms serve did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The STS credentials written into the IAM file.
const STS: [(&str, &str); 6] = [
    ("KMS_STS_AK", "STS.VALID"),
    ("KMS_STS_SK", "sts-valid-secret"),
    ("KMS_STS_TOKEN", "sts-valid-token"),
    ("KMS_EXPIRED_AK", "STS.EXPIRED"),
    ("KMS_EXPIRED_SK", "sts-expired-secret"),
    ("KMS_EXPIRED_TOKEN", "sts-expired-token"),
];
const AK: &str = "AKTESTLONGTERM";
const SK: &str = "long-term-test-secret";

/// An IAM file with a long-term key, a valid STS credential and an expired one.
fn iam_file(dir: &Path) -> PathBuf {
    let p = dir.join("iam.json");
    let v = serde_json::json!({"access_keys": [
        {"id": AK, "secret": SK, "principal": "tester"},
        {"id": STS[0].1, "secret": STS[1].1, "principal": "sts", "security_token": STS[2].1,
         "expires": "2099-01-01T00:00:00Z"},
        {"id": STS[3].1, "secret": STS[4].1, "principal": "sts", "security_token": STS[5].1,
         "expires": "2000-01-01T00:00:00Z"},
    ]});
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    p
}

fn require_servers() -> bool {
    std::env::var("ENVSEAL_REQUIRE_SERVERS").as_deref() == Ok("1")
}

/// Skips loudly (or fails when servers are required).
fn skip(test: &str, why: &str) {
    if require_servers() {
        panic!("{test}: ENVSEAL_REQUIRE_SERVERS=1 but {why}");
    }
    // Straight to the process's stderr: libtest captures eprintln! of passing tests.
    let line = format!(
        "SKIPPED: {test}: {why}. Install with `pip install alibabacloud-kms20160120 boto3 aws-encryption-sdk-cli`; \
         set ENVSEAL_REQUIRE_SERVERS=1 to make this a failure.\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn python() -> String {
    std::env::var("ENVSEAL_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Whether `python` can import every module in `modules`; `Err(why)` otherwise.
fn python_has(modules: &[&str]) -> Result<(), String> {
    let out = Command::new(python())
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .map_err(|e| format!("{} cannot run: {e}", python()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot import {}: {}",
            python(),
            modules.join(", "),
            String::from_utf8_lossy(&out.stderr).lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim()
        ))
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Runs a Python script of this folder with `env`; panics with its output on failure.
fn run_script(script: &str, env: &[(&str, &str)], server: &Serve) -> String {
    let out = Command::new(python())
        .arg(Path::new(SCRIPTS).join(script))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CONFIG_FILE")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .envs(env.iter().copied())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    stdout
}

/// One raw HTTP/1.1 exchange: status and body.
fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before the whole request is written (413).
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn aws_request(addr: &str, target: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: TrentService.{target}\r\nContent-Type: application/x-amz-json-1.1\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Clients no one here wrote

#[test]
fn alibaba_official_python_sdk() {
    const TEST: &str = "alibaba_official_python_sdk";
    if let Err(why) = python_has(&["alibabacloud_kms20160120", "alibabacloud_tea_openapi"]) {
        return skip(TEST, &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let iam = iam_file(dir.path());
    let server = Serve::start(&["--iam", iam.to_str().unwrap()]);
    assert!(!server.banner.contains("export"), "no dev principal with an IAM file:\n{}", server.banner);
    let mut env = vec![("KMS_ENDPOINT", server.addr.as_str()), ("KMS_AK", AK), ("KMS_SK", SK)];
    env.extend(STS);
    let out = run_script("alibaba_sdk.py", &env, &server);
    assert!(out.contains("all Alibaba Cloud SDK checks passed"), "{out}");
    let log = server.log();
    // Both signature versions were really used and verified.
    assert!(log.contains("alibaba GenerateDataKey sig=acs3 principal=tester"), "{log}");
    assert!(log.contains("alibaba GenerateDataKey sig=rpc-v2 principal=tester"), "{log}");
    assert!(log.contains("alibaba GenerateDataKey sig=acs3 principal=sts"), "{log}");
    assert!(log.contains("-> 400 SignatureDoesNotMatch"), "{log}");
    // No secret reaches the log.
    for secret in [SK, STS[1].1, STS[2].1] {
        assert!(!log.contains(secret), "the log leaks a secret");
    }
}

#[test]
fn boto3_on_the_local_keystore_across_a_restart() {
    const TEST: &str = "boto3_on_the_local_keystore_across_a_restart";
    if let Err(why) = python_has(&["boto3"]) {
        return skip(TEST, &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let iam = iam_file(dir.path());
    let store = dir.path().join("keystore");
    let backend = format!("local:{}", store.display());
    let state = dir.path().join("state");
    let args = ["--iam", iam.to_str().unwrap(), "--backend", &backend, "--api", "aws"];
    let mut server = Serve::start(&args);
    let url = server.url();
    let mut env = vec![
        ("AWS_ENDPOINT_URL", url.as_str()),
        ("AWS_ACCESS_KEY_ID", AK),
        ("AWS_SECRET_ACCESS_KEY", SK),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("KMS_STATE_FILE", state.to_str().unwrap()),
    ];
    env.extend(STS);
    let out = run_script("aws_boto3.py", &env, &server);
    assert!(out.contains("all boto3 checks passed"), "{out}");
    assert!(server.stop().success(), "graceful stop on SIGTERM exits 0");

    let server = Serve::start(&args);
    let url = server.url();
    env[0] = ("AWS_ENDPOINT_URL", url.as_str());
    env.push(("KMS_SECOND_RUN", "1"));
    let out = run_script("aws_boto3.py", &env, &server);
    assert!(out.contains("kept keys, aliases and blobs"), "{out}");
}

#[test]
fn aws_encryption_sdk_cli_round_trip() {
    const TEST: &str = "aws_encryption_sdk_cli_round_trip";
    let Some(cli) = find_on_path("aws-encryption-cli") else {
        return skip(TEST, "aws-encryption-cli is not on PATH");
    };
    if let Err(why) = python_has(&["boto3"]) {
        return skip(TEST, &why);
    }
    // The dev principal printed in the banner is all a client needs.
    let server = Serve::start(&[]);
    for var in [
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
    ] {
        assert!(server.env.contains_key(var), "{var} missing from the banner:\n{}", server.banner);
    }
    assert_eq!(server.env["AWS_ENDPOINT_URL"], server.url());
    let key_id =
        server.banner.lines().find_map(|l| l.trim().strip_prefix("key:")).unwrap().split_whitespace().next().unwrap();
    let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{key_id}");

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.txt");
    let sealed = dir.path().join("plain.txt.encrypted");
    let opened = dir.path().join("opened.txt");
    let content: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&plain, &content).unwrap();
    let esdk = |args: &[&str]| {
        let out = Command::new(&cli)
            .args(args)
            .envs(server.env.iter())
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aws-encryption-cli {args:?} failed\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
    };
    let wrapping = format!("key={arn}");
    let (p, s, o) = (plain.to_str().unwrap(), sealed.to_str().unwrap(), opened.to_str().unwrap());
    esdk(&["--encrypt", "-i", p, "-o", s, "-w", &wrapping, "-c", "purpose=test", "-S"]);
    let ciphertext = std::fs::read(&sealed).unwrap();
    assert!(ciphertext.len() > content.len() && !ciphertext.windows(16).any(|w| w == &content[400..416]));
    esdk(&["--decrypt", "-i", s, "-o", o, "-w", &wrapping, "-c", "purpose=test", "-S"]);
    assert_eq!(std::fs::read(&opened).unwrap(), content);
    let log = server.log();
    assert!(log.contains(&format!("aws GenerateDataKey sig=sigv4 principal=dev key={key_id} -> 200")), "{log}");
    assert!(log.contains(&format!("aws Decrypt sig=sigv4 principal=dev key={key_id} -> 200")), "{log}");
}

/// envseal's own AWS backend (the official Rust SDK underneath) through the CLI.
#[cfg(feature = "aws")]
#[test]
fn envseal_aws_backend_against_the_emulator() {
    let server = Serve::start(&["--access-key", "AKENVSEAL:envseal-aws-secret"]);
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("app.env");
    std::fs::write(&file, "DB_PASSWORD=hunter2\nAPI_KEY=sk-123\n").unwrap();
    let envseal = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("ENVSEAL_HOME", home.path().join("store"))
            .env_remove("ENVSEAL_KMS")
            .env_remove("ENVSEAL_KEY")
            .envs(server.env.iter())
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "envseal {args:?} failed\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(server.env["AWS_ACCESS_KEY_ID"], "AKENVSEAL");
    let f = file.to_str().unwrap();
    envseal(&["encrypt", f, "--kms", "aws-kms:alias/default"]);
    let sealed = std::fs::read_to_string(&file).unwrap();
    assert!(!sealed.contains("hunter2"), "{sealed}");
    let plain = envseal(&["decrypt", f, "--kms", "aws-kms:alias/default"]);
    assert!(plain.contains("DB_PASSWORD=hunter2") && plain.contains("API_KEY=sk-123"), "{plain}");
    let log = server.log();
    assert!(log.contains("aws GenerateDataKey sig=sigv4 principal=dev"), "{log}");
    assert!(log.contains("aws Decrypt sig=sigv4 principal=dev"), "{log}");
}

#[test]
fn envseal_alibaba_backend_against_the_emulator() {
    let server = Serve::start(&["--access-key", "AKALIENVSEAL:envseal-alibaba-secret"]);
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("app.env");
    std::fs::write(&file, "DB_PASSWORD=hunter2\nAPI_KEY=sk-123\n").unwrap();
    let endpoint = format!("http://{}", server.addr);
    let envseal = |args: &[&str], extra: &[(&str, &str)]| {
        Command::new(BIN)
            .args(args)
            .env("ENVSEAL_HOME", home.path().join("store"))
            .env_remove("ENVSEAL_KMS")
            .env_remove("ENVSEAL_KEY")
            .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
            .env("HOME", home.path())
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "AKALIENVSEAL")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "envseal-alibaba-secret")
            .env("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou")
            .env("ENVSEAL_ALIBABA_KMS_ENDPOINT", &endpoint)
            .envs(extra.iter().copied())
            .output()
            .unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "stdout:\n{}\nstderr:\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let f = file.to_str().unwrap();
    ok(envseal(&["encrypt", f, "--kms", "alibaba-kms:cn-hangzhou/alias/default"], &[]));
    let sealed = std::fs::read_to_string(&file).unwrap();
    assert!(!sealed.contains("hunter2") && sealed.contains("\"backend\":\"alibaba-kms\""), "{sealed}");
    // Opened through the entry's backend, with the V3 signature and then the V2 one.
    for sig in ["v3", "v2"] {
        let plain = ok(envseal(&["decrypt", f], &[("ENVSEAL_ALIBABA_KMS_SIGNATURE_VERSION", sig)]));
        assert!(plain.contains("DB_PASSWORD=hunter2") && plain.contains("API_KEY=sk-123"), "{plain}");
    }
    // Key administration through the same client: list (DescribeKey, versions, aliases, tags).
    let keys = ok(envseal(&["keys", "list", "--json", "--kms", "alibaba-kms:cn-hangzhou/alias/default"], &[]));
    assert!(keys.contains("alias/default"), "{keys}");
    // A wrong secret is refused by the server's signature check: access denied (exit 11).
    let out = envseal(&["decrypt", f], &[("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "wrong-secret")]);
    assert_eq!(out.status.code(), Some(11), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong-secret"));
    let log = server.log();
    assert!(log.contains("GenerateDataKey") && log.contains("Decrypt"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// What SDKs never send

#[test]
fn unsigned_and_malformed_requests_get_each_apis_error_shape() {
    let server = Serve::start(&["--max-body", "4096"]);
    let addr = server.addr.as_str();

    // AWS, unsigned.
    let (status, body) = raw(addr, &aws_request(addr, "ListKeys", "", "{}"));
    let v = json(&body);
    assert_eq!((status, v["__type"].as_str()), (400, Some("MissingAuthenticationTokenException")), "{body}");
    assert!(v["message"].is_string());
    // AWS, a forged signature from an unknown key.
    let auth = "Authorization: AWS4-HMAC-SHA256 Credential=NOPE/20260101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=0000000000000000000000000000000000000000000000000000000000000000\r\nX-Amz-Date: 20260101T000000Z\r\n";
    let (status, body) = raw(addr, &aws_request(addr, "ListKeys", auth, "{}"));
    assert_eq!((status, json(&body)["__type"].as_str()), (400, Some("UnrecognizedClientException")), "{body}");
    // AWS, a garbled Authorization header.
    let (status, body) = raw(addr, &aws_request(addr, "ListKeys", "Authorization: AWS4-HMAC-SHA256 garbage\r\n", "{}"));
    assert_eq!((status, json(&body)["__type"].as_str()), (400, Some("IncompleteSignatureException")), "{body}");
    // AWS, an oversized body: 413 in the AWS shape, by Content-Length and by chunked length.
    let big = format!("{{\"Plaintext\":\"{}\"}}", "A".repeat(8000));
    let (status, body) = raw(addr, &aws_request(addr, "Encrypt", "", &big));
    assert_eq!((status, json(&body)["__type"].as_str()), (413, Some("RequestEntityTooLargeException")), "{body}");
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: TrentService.Encrypt\r\nContent-Type: application/x-amz-json-1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let (status, body) = raw(addr, chunked.as_bytes());
    assert_eq!((status, json(&body)["__type"].as_str()), (413, Some("RequestEntityTooLargeException")), "{body}");
    // AWS, an unknown target.
    let (status, body) = raw(addr, &aws_request(addr, "", "", "{}"));
    assert_eq!((status, json(&body)["__type"].as_str()), (400, Some("UnknownOperationException")), "{body}");

    // Alibaba, unsigned (RPC style, query string).
    let q = "GET /?Action=ListKeys&Version=2016-01-20&Format=JSON HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, body) = raw(addr, q.as_bytes());
    let v = json(&body);
    assert_eq!((status, v["Code"].as_str()), (400, Some("MissingAccessKeyId")), "{body}");
    for field in ["RequestId", "HostId", "Message", "Recommend"] {
        assert!(v[field].is_string(), "{field} in {body}");
    }
    // Alibaba, a V2 signature from an unknown access key.
    let q = "GET /?Action=ListKeys&Version=2016-01-20&AccessKeyId=NOPE&Signature=x&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0&SignatureNonce=n&Timestamp=2026-01-01T00%3A00%3A00Z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, body) = raw(addr, q.as_bytes());
    assert_eq!((status, json(&body)["Code"].as_str()), (404, Some("InvalidAccessKeyId.NotFound")), "{body}");
    // Alibaba, a wrong version, an oversized form body, broken percent-encoding.
    let q = "GET /?Action=ListKeys&Version=2014-01-01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(json(&raw(addr, q.as_bytes()).1)["Code"], "InvalidVersion");
    let form = format!("Action=Encrypt&Plaintext={}", "A".repeat(8000));
    let req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    let (status, body) = raw(addr, req.as_bytes());
    assert_eq!((status, json(&body)["Code"].as_str()), (413, Some("RequestEntityTooLarge")), "{body}");
    let q = "GET /?Action=ListKeys&Version=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, body) = raw(addr, q.as_bytes());
    assert_eq!((status, json(&body)["Code"].as_str()), (400, Some("InvalidParameter")), "{body}");

    // Neither API: a body both SDK families can read.
    let (status, body) = raw(addr, b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let v = json(&body);
    assert_eq!(status, 400);
    assert!(v["__type"].is_string() && v["Code"].is_string(), "{body}");

    // Garbage on the socket does not take the server down.
    let _ = raw(addr, b"\x00\x01\x02 not http at all\r\n\r\n");
    let (status, _) = raw(addr, &aws_request(addr, "ListKeys", "", "{}"));
    assert_eq!(status, 400, "still serving");
}

#[test]
fn api_restriction() {
    let server = Serve::start(&["--api", "aws"]);
    let addr = server.addr.as_str();
    let q = "GET /?Action=ListKeys&Version=2016-01-20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, body) = raw(addr, q.as_bytes());
    assert_eq!((status, json(&body)["Code"].as_str()), (404, Some("InvalidAction.NotFound")), "{body}");
    assert!(body.contains("only the AWS KMS API"), "{body}");
    let server = Serve::start(&["--api", "alibaba"]);
    let addr = server.addr.as_str();
    let (status, body) = raw(addr, &aws_request(addr, "ListKeys", "", "{}"));
    assert_eq!((status, json(&body)["__type"].as_str()), (400, Some("UnknownOperationException")), "{body}");
    assert!(!server.banner.contains("AWS KMS JSON"), "{}", server.banner);
}

#[test]
fn bad_flags_fail_cleanly() {
    for (args, needle) in [
        (&["--backend", "s3:bucket"][..], "unknown backend"),
        (&["--access-key", "NOSECRET-VALUE-123"][..], "--access-key must be ID:SECRET"),
    ] {
        let out = Command::new(BIN).args(["kms", "serve", "--port", "0"]).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("VALUE-123"), "the secret is echoed: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Governance (issue 6): policies, STS and the audit trail, through the SDKs

const MULTI_TEAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/iam/multi-team.toml");

/// `<NAME>_AK` / `<NAME>_SK` of every user of the example file (their first access key).
fn multi_team_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(MULTI_TEAM).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    let mut env = vec![("ACCOUNT".to_owned(), v["account"].as_str().unwrap().to_owned())];
    for (name, user) in v["users"].as_table().unwrap() {
        let k = &user["access_keys"][0];
        env.push((format!("{}_AK", name.to_uppercase()), k["id"].as_str().unwrap().to_owned()));
        env.push((format!("{}_SK", name.to_uppercase()), k["secret"].as_str().unwrap().to_owned()));
    }
    env
}

#[test]
fn governance_policies_sts_and_audit_through_both_sdks() {
    const TEST: &str = "governance_policies_sts_and_audit_through_both_sdks";
    if let Err(why) =
        python_has(&["boto3", "alibabacloud_kms20160120", "alibabacloud_sts20150401", "alibabacloud_tea_openapi"])
    {
        return skip(TEST, &format!("{why} (pip install alibabacloud-sts20150401)"));
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let key = dir.path().join("keys").join("audit.key");
    let hook_out = dir.path().join("alerts.jsonl");
    let hook = format!("cat >> {}; echo >> {}", hook_out.display(), hook_out.display());
    let mut server = Serve::start(&[
        "--iam",
        MULTI_TEAM,
        "--audit-log",
        log.to_str().unwrap(),
        "--audit-key",
        key.to_str().unwrap(),
        "--alert-hook",
        &hook,
        "--alert-admin",
        "admin",
    ]);
    assert!(server.banner.contains("policies enforced"), "{}", server.banner);
    let env = multi_team_env();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.push(("KMS_ENDPOINT", server.addr.as_str()));
    let out = run_script("governance_boto3.py", &vars, &server);
    assert!(out.contains("all governance checks passed"), "{out}");
    let keys: serde_json::Value = out.lines().find(|l| l.starts_with('{')).map(json).unwrap();
    let (web, pay) = (keys["web"].as_str().unwrap().to_owned(), keys["payments"].as_str().unwrap().to_owned());
    vars.push(("WEB_KEY", &web));
    vars.push(("PAY_KEY", &pay));
    let out = run_script("governance_alibaba.py", &vars, &server);
    assert!(out.contains("all Alibaba governance checks passed"), "{out}");
    let stderr = server.log();
    server.stop();

    // Every request is in the trail, which verifies; no secret, data key or token is in it.
    let verify = Command::new(BIN)
        .args(["audit", "verify", log.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && report.starts_with("OK:"),
        "{report}\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for (name, value) in &env {
        if name.ends_with("_SK") {
            assert!(!text.contains(value.as_str()), "the audit log holds {name}");
        }
    }
    for word in ["Plaintext\"", "SecretAccessKey", "SessionToken", "SecurityToken", "CiphertextBlob\""] {
        assert!(!text.contains(word), "the audit log holds {word}");
    }
    let records: Vec<serde_json::Value> = text.lines().map(json).collect();
    let find =
        |event: &str, outcome: &str| records.iter().filter(|r| r["event"] == event && r["outcome"] == outcome).count();
    assert!(find("GenerateDataKey", "success") >= 8 && find("GenerateDataKey", "denied") >= 5);
    assert!(find("AssumeRole", "success") >= 4 && find("AssumeRole", "denied") >= 2);
    let denied = records.iter().find(|r| r["event"] == "ScheduleKeyDeletion" && r["outcome"] == "denied").unwrap();
    assert_eq!(denied["principal"]["name"], "dana");
    assert!(denied["decision"].as_str().unwrap().contains("NoDestruction"), "{denied}");
    assert_eq!(denied["source_ip"], "127.0.0.1");
    let ctx = records.iter().find(|r| r["params"]["EncryptionContext"]["stage"] == "ci").unwrap();
    assert_eq!(ctx["principal"]["type"], "AssumedRole");
    // Alerts: the admin's use and repeated denials, on stderr and through the hook.
    assert!(stderr.contains("ALERT: [admin-use]") && stderr.contains("ALERT: [repeated-denials]"), "{stderr}");
    let alerts = std::fs::read_to_string(&hook_out).unwrap_or_default();
    assert!(alerts.contains("\"rule\":\"admin-use\""), "{alerts}");

    // Queries.
    let q = Command::new(BIN)
        .args(["audit", "query", log.to_str().unwrap(), "--principal", "dana", "--outcome", "denied", "--json"])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&q.stdout).lines().map(json).collect();
    assert!(!lines.is_empty() && lines.iter().all(|r| r["principal"]["name"] == "dana" && r["outcome"] == "denied"));

    // Tampering: edit one record, then verification names it (exit 7).
    let mut edited: Vec<String> = text.lines().map(str::to_owned).collect();
    edited[5] = edited[5].replace("127.0.0.1", "10.9.9.9");
    std::fs::write(&log, edited.join("\n") + "\n").unwrap();
    let verify = Command::new(BIN)
        .args(["audit", "verify", log.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("line 6 (seq 6) was modified"),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn governance_reloads_the_iam_file_and_records_changes() {
    const TEST: &str = "governance_reloads_the_iam_file_and_records_changes";
    if let Err(why) = python_has(&["boto3"]) {
        return skip(TEST, &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let iam = dir.path().join("iam.toml");
    std::fs::copy(MULTI_TEAM, &iam).unwrap();
    let log = dir.path().join("audit.log");
    let key = dir.path().join("audit.key");
    let mut server = Serve::start(&[
        "--iam",
        iam.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
        "--audit-key",
        key.to_str().unwrap(),
    ]);
    let raw_list = |ak: &str, sk: &str| {
        let script = "import boto3,os,sys\nfrom botocore.config import Config\n\
            c=boto3.client('kms',endpoint_url='http://'+os.environ['E'],region_name='us-east-1',aws_access_key_id=os.environ['AK'],aws_secret_access_key=os.environ['SK'],config=Config(retries={'max_attempts':1}))\n\
            try:\n  c.list_keys(); print('ok')\nexcept Exception as e: print(e.response['Error']['Code'])\n";
        let out = Command::new(python())
            .args(["-c", script])
            .env("E", &server.addr)
            .env("AK", ak)
            .env("SK", sk)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(raw_list("LTAIdanaTESTKEY00001", "dana-test-secret-00001"), "ok");
    // A new user and access key through the CLI; the server picks the file up.
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["iam", "create-user", iam.to_str().unwrap(), "erin", "--group", "developers"]);
    let created: serde_json::Value = json(&run(&["iam", "create-access-key", iam.to_str().unwrap(), "erin", "--json"]));
    let (ak, sk) = (created["AccessKeyId"].as_str().unwrap(), created["AccessKeySecret"].as_str().unwrap());
    run(&["iam", "update-access-key", iam.to_str().unwrap(), "LTAIdanaTESTKEY00001", "--status", "inactive"]);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(raw_list(ak, sk), "ok");
    assert_eq!(raw_list("LTAIdanaTESTKEY00001", "dana-test-secret-00001"), "UnrecognizedClientException");
    server.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("\"CreateUser\"") && text.contains("\"CreateAccessKey\"") && text.contains("\"UpdateAccessKey\""),
        "{text}"
    );
    assert!(!text.contains(sk), "the new secret is not in the trail");
    let v = Command::new(BIN)
        .args(["audit", "verify", log.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

// ---------------------------------------------------------------------------------------------
// Issue 17: more clients no one here wrote, key policies and grants, rotation, state

/// Where scripts/test-all.sh installs the test tools.
fn tools_dir() -> PathBuf {
    match std::env::var_os("ENVSEAL_TEST_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join("envseal-test-tools"),
    }
}

/// The npm prefix holding the Alibaba Node.js SDK and the AWS SDK for JavaScript v3
/// (`$ENVSEAL_TEST_TOOLS/npm-kms`), if it and `node` are there.
fn node_modules(package: &str) -> Result<PathBuf, String> {
    if find_on_path("node").is_none() {
        return Err("node is not on PATH".into());
    }
    let dir = tools_dir().join("npm-kms").join("node_modules");
    if dir.join(package).join("package.json").is_file() {
        Ok(dir)
    } else {
        Err(format!("{package} is not installed under {} (scripts/test-all.sh installs it)", dir.display()))
    }
}

/// The AWS CLI: `$ENVSEAL_AWS_CLI`, `aws` on PATH, or the one scripts/test-all.sh installs.
fn aws_cli() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ENVSEAL_AWS_CLI") {
        return Ok(PathBuf::from(p));
    }
    let installed = tools_dir().join("awscli").join("bin").join("aws");
    find_on_path("aws")
        .or_else(|| installed.is_file().then_some(installed))
        .ok_or_else(|| "the AWS CLI (aws) is not installed (scripts/test-all.sh installs it)".into())
}

/// Runs a Node.js script of this folder with `env`; panics with its output on failure.
fn run_node(script: &str, modules: &Path, env: &[(&str, &str)], server: &Serve) -> String {
    let out = Command::new("node")
        .arg(Path::new(SCRIPTS).join(script))
        .env("NODE_PATH", modules)
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .envs(env.iter().copied())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    stdout
}

const DEV_AK: &str = "AKDEVTESTKEY0001";
const DEV_SK: &str = "dev-test-secret-0001";

fn dev_server(extra: &[&str]) -> Serve {
    let key = format!("{DEV_AK}:{DEV_SK}");
    let mut args = vec!["--access-key", key.as_str()];
    args.extend_from_slice(extra);
    Serve::start(&args)
}

/// Issue 17 §1: the Node.js SDK flattens a map context into `EncryptionContext.KEY=VALUE`;
/// the emulator refuses it instead of binding no context, and takes the JSON-string form.
#[test]
fn alibaba_node_sdk_and_flattened_contexts() {
    const TEST: &str = "alibaba_node_sdk_and_flattened_contexts";
    let modules = match node_modules("@alicloud/kms20160120") {
        Ok(m) => m,
        Err(why) => return skip(TEST, &why),
    };
    let server = dev_server(&[]);
    let env = [("KMS_ENDPOINT", server.addr.as_str()), ("KMS_AK", DEV_AK), ("KMS_SK", DEV_SK)];
    let out = run_node("alibaba_node.js", &modules, &env, &server);
    assert!(out.contains("all Alibaba Node.js SDK checks passed"), "{out}");
    let log = server.log();
    assert!(log.contains("alibaba GenerateDataKey sig=rpc-v2"), "{log}");
    assert!(log.contains("-> 400 InvalidParameter"), "{log}");
}

/// Issue 17 §1: the old Python SDK (HMAC-SHA1) reads the real message shape of
/// `SignatureDoesNotMatch` and reports `InvalidAccessKeySecret` instead of an `IndexError`.
#[test]
fn alibaba_legacy_python_sdk() {
    const TEST: &str = "alibaba_legacy_python_sdk";
    if let Err(why) = python_has(&["aliyunsdkcore", "aliyunsdkkms"]) {
        return skip(TEST, &format!("{why} (pip install aliyun-python-sdk-core aliyun-python-sdk-kms)"));
    }
    let server = dev_server(&[]);
    let env = [("KMS_ENDPOINT", server.addr.as_str()), ("KMS_AK", DEV_AK), ("KMS_SK", DEV_SK)];
    let out = run_script("alibaba_legacy_sdk.py", &env, &server);
    assert!(out.contains("all legacy Alibaba Cloud SDK checks passed"), "{out}");
    assert!(server.log().contains("-> 400 SignatureDoesNotMatch"), "{}", server.log());
}

/// Issue 17 §2: the AWS SDK for JavaScript v3 through the calls added (GenerateRandom, tags,
/// UpdateAlias, UpdateKeyDescription, grants and grant tokens, key policies, GetPublicKey).
#[test]
fn aws_js_sdk_v3() {
    const TEST: &str = "aws_js_sdk_v3";
    let modules = match node_modules("@aws-sdk/client-kms") {
        Ok(m) => m,
        Err(why) => return skip(TEST, &why),
    };
    let server = dev_server(&[]);
    let url = server.url();
    let env = [
        ("AWS_ENDPOINT_URL", url.as_str()),
        ("AWS_ACCESS_KEY_ID", DEV_AK),
        ("AWS_SECRET_ACCESS_KEY", DEV_SK),
        ("AWS_REGION", "us-east-1"),
    ];
    let out = run_node("aws_js_v3.mjs", &modules, &env, &server);
    assert!(out.contains("all AWS SDK for JavaScript v3 checks passed"), "{out}");
}

/// Issue 17 §1: the AWS CLI, and `GetCallerIdentity` answering real ARNs (root, user,
/// assumed role) in both APIs' spellings.
#[test]
fn aws_cli_and_caller_identity() {
    const TEST: &str = "aws_cli_and_caller_identity";
    let aws = match aws_cli() {
        Ok(a) => a,
        Err(why) => return skip(TEST, &why),
    };
    let cli = |server: &Serve, ak: &str, sk: &str, token: Option<&str>, args: &[&str]| {
        let mut c = Command::new(&aws);
        c.args(["--endpoint-url", &server.url(), "--output", "json"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ak)
            .env("AWS_SECRET_ACCESS_KEY", sk)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL");
        match token {
            Some(t) => c.env("AWS_SESSION_TOKEN", t),
            None => c.env_remove("AWS_SESSION_TOKEN"),
        };
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let server = dev_server(&[]);
    let (ok, out, err) = cli(&server, DEV_AK, DEV_SK, None, &["sts", "get-caller-identity"]);
    assert!(ok, "{err}");
    let id = json(&out);
    assert_eq!(
        (id["Arn"].as_str(), id["Account"].as_str()),
        (Some("arn:aws:iam::111122223333:root"), Some("111122223333"))
    );
    let (ok, out, err) = cli(&server, DEV_AK, DEV_SK, None, &["kms", "create-key", "--description", "aws cli"]);
    assert!(ok, "{err}");
    let key = json(&out)["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let (ok, out, err) = cli(
        &server,
        DEV_AK,
        DEV_SK,
        None,
        &["kms", "generate-data-key", "--key-id", &key, "--key-spec", "AES_256", "--encryption-context", "app=cli"],
    );
    assert!(ok, "{err}");
    assert_eq!(json(&out)["KeyMaterialId"], "1");
    let (ok, _, err) = cli(&server, DEV_AK, "wrong-secret", None, &["kms", "list-keys"]);
    assert!(
        !ok && err.contains("InvalidSignatureException")
            && err.contains("The Canonical String for this request should have been"),
        "{err}"
    );

    // With an IAM file: a user, then the session of a role it assumes.
    let server = Serve::start(&["--iam", MULTI_TEAM]);
    let (dana_ak, dana_sk) = ("LTAIdanaTESTKEY00001", "dana-test-secret-00001");
    let (ok, out, err) = cli(&server, dana_ak, dana_sk, None, &["sts", "get-caller-identity"]);
    assert!(ok, "{err}");
    let id = json(&out);
    assert_eq!(id["Arn"], "arn:aws:iam::1234567890123456:user/dana");
    assert!(id["UserId"].as_str().unwrap().starts_with("AIDA"), "{id}");
    let (ok, out, err) = cli(
        &server,
        dana_ak,
        dana_sk,
        None,
        &[
            "sts",
            "assume-role",
            "--role-arn",
            "arn:aws:iam::1234567890123456:role/ci",
            "--role-session-name",
            "build-7",
        ],
    );
    assert!(ok, "{err}");
    let c = json(&out)["Credentials"].clone();
    let (ok, out, err) = cli(
        &server,
        c["AccessKeyId"].as_str().unwrap(),
        c["SecretAccessKey"].as_str().unwrap(),
        c["SessionToken"].as_str(),
        &["sts", "get-caller-identity"],
    );
    assert!(ok, "{err}");
    let id = json(&out);
    assert_eq!(id["Arn"], "arn:aws:sts::1234567890123456:assumed-role/ci/build-7");
    assert!(id["UserId"].as_str().unwrap().ends_with(":build-7"), "{id}");
}

/// Issue 17 §2: key policies and grants, evaluated with the IAM file's policies, and the
/// deciding statement in the audit trail.
#[test]
fn key_policies_and_grants_with_iam() {
    const TEST: &str = "key_policies_and_grants_with_iam";
    if let Err(why) = python_has(&["boto3"]) {
        return skip(TEST, &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let key = dir.path().join("audit.key");
    let mut server = Serve::start(&[
        "--iam",
        MULTI_TEAM,
        "--audit-log",
        log.to_str().unwrap(),
        "--audit-key",
        key.to_str().unwrap(),
    ]);
    let env = multi_team_env();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.push(("KMS_ENDPOINT", server.addr.as_str()));
    let out = run_script("key_policies_boto3.py", &vars, &server);
    assert!(out.contains("all key policy and grant checks passed"), "{out}");
    server.stop();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&log).unwrap().lines().map(json).collect();
    let by_key_policy = records
        .iter()
        .find(|r| r["event"] == "GenerateDataKey" && r["principal"]["name"] == "dana" && r["outcome"] == "denied")
        .expect("dana's refused GenerateDataKey is recorded");
    assert!(by_key_policy["decision"].as_str().unwrap().contains("key policy"), "{by_key_policy}");
    let by_grant = records
        .iter()
        .find(|r| r["event"] == "Decrypt" && r["principal"]["name"] == "frank" && r["outcome"] == "success")
        .expect("frank's granted Decrypt is recorded");
    assert!(by_grant["decision"].as_str().unwrap().contains("grant"), "{by_grant}");
}

/// Issue 17 §2 and §4: automatic rotation applied on schedule (a shortened day), and
/// `--state` keeping keys, aliases, key policies, grants and the dev key across a restart.
#[test]
fn automatic_rotation_and_state_across_a_restart() {
    const TEST: &str = "automatic_rotation_and_state_across_a_restart";
    if let Err(why) = python_has(&["boto3", "alibabacloud_kms20160120"]) {
        return skip(TEST, &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ids = dir.path().join("ids.json");
    let rotating = Serve::start(&["--rotation-day", "20ms"]);
    let args = ["--state", state.to_str().unwrap()];
    let mut server = Serve::start(&args);
    assert!(server.banner.contains("state:"), "{}", server.banner);
    let (ak, sk) = (server.env["AWS_ACCESS_KEY_ID"].clone(), server.env["AWS_SECRET_ACCESS_KEY"].clone());
    let env = |s: &Serve, phase: &'static str| {
        vec![
            ("KMS_ENDPOINT".to_owned(), s.addr.clone()),
            ("KMS_AK".to_owned(), ak.clone()),
            ("KMS_SK".to_owned(), sk.clone()),
            ("KMS_IDS".to_owned(), ids.to_str().unwrap().to_owned()),
            ("KMS_PHASE".to_owned(), phase.to_owned()),
        ]
    };
    let mut vars = env(&rotating, "rotation");
    vars[1].1 = rotating.env["AWS_ACCESS_KEY_ID"].clone();
    vars[2].1 = rotating.env["AWS_SECRET_ACCESS_KEY"].clone();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run_script("rotation_and_state.py", &vars, &rotating);
    assert!(out.contains("Alibaba rotation policy rotates on schedule"), "{out}");
    assert!(rotating.log().contains("(automatic)"), "{}", rotating.log());
    let vars = env(&server, "first");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run_script("rotation_and_state.py", &vars, &server);
    assert!(out.contains("first run done"), "{out}");
    assert!(server.stop().success());
    let mode = std::fs::metadata(state.join("state.json")).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

    let server = Serve::start(&args);
    assert_eq!(server.env["AWS_ACCESS_KEY_ID"], ak, "the dev key is kept in the state directory");
    let vars = env(&server, "second");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run_script("rotation_and_state.py", &vars, &server);
    assert!(out.contains("ok kept keys"), "{out}");
}

/// Issue 17 §4: `--tls` (the printed CA bundle is all clients need, the Node.js SDK's hard-coded
/// https included), `--throttle` with each API's throttling error, `/healthz` and `/metrics`.
#[test]
fn tls_throttling_health_and_metrics() {
    const TEST: &str = "tls_throttling_health_and_metrics";
    if let Err(why) = python_has(&["boto3", "alibabacloud_kms20160120"]) {
        return skip(TEST, &why);
    }
    let server = dev_server(&["--tls", "--throttle", "40", "--throttle", "GenerateDataKey=5"]);
    assert!(server.url().starts_with("https://"), "{}", server.banner);
    let ca = server.env["AWS_CA_BUNDLE"].clone();
    assert_eq!(server.env["NODE_EXTRA_CA_CERTS"], ca);
    let env = [("KMS_ENDPOINT", server.addr.as_str()), ("KMS_AK", DEV_AK), ("KMS_SK", DEV_SK), ("KMS_CA", ca.as_str())];
    let out = run_script("tls_throttle_metrics.py", &env, &server);
    assert!(out.contains("all TLS, throttling and metrics checks passed"), "{out}");
    let log = server.log();
    assert!(log.contains("-> 400 ThrottlingException") && log.contains("-> 429 Rejected.Throttling"), "{log}");
    match node_modules("@alicloud/kms20160120") {
        Ok(modules) => {
            let server = dev_server(&["--tls"]);
            let ca = server.env["NODE_EXTRA_CA_CERTS"].clone();
            let env = [
                ("KMS_ENDPOINT", server.addr.as_str()),
                ("KMS_AK", DEV_AK),
                ("KMS_SK", DEV_SK),
                ("KMS_PROTOCOL", "default"),
                ("NODE_EXTRA_CA_CERTS", ca.as_str()),
            ];
            let out = run_node("alibaba_node.js", &modules, &env, &server);
            assert!(out.contains("all Alibaba Node.js SDK checks passed"), "{out}");
        }
        Err(why) => skip(TEST, &format!("the Node.js part: {why}")),
    }
}
