//! AWS Encryption SDK messages both ways: `aws-encryption-cli` and the Python
//! `aws-encryption-sdk`, the KMS being `envseal kms serve` or moto, plus raw AES keys.

use super::*;

fn data(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

fn esdk_py() -> String {
    format!("{SCRIPTS}/esdk_py.py")
}

#[test]
fn esdk_cli_both_ways_on_kms_serve() {
    const TEST: &str = "esdk_cli_both_ways_on_kms_serve";
    if !cfg!(feature = "aws") {
        return skip(TEST, "envseal built without the `aws` feature");
    }
    let Some(cli) = tool("aws-encryption-cli") else {
        return skip(TEST, "aws-encryption-cli (pip aws-encryption-sdk-cli) not found");
    };
    let (server, arn) = kms_serve();
    let s = Sandbox::new(&server.env);
    let content = data(300_000);
    s.write("plain.bin", &content);
    let w = format!("key={arn}");

    // envseal writes (signed, then unsigned with odd frames), the ESDK CLI reads.
    s.envseal(&[
        "encrypt",
        "plain.bin",
        "--format",
        "esdk",
        "--kms",
        &format!("aws-kms:{arn}"),
        "--context",
        "purpose=test",
        "-o",
        "e1.esdk",
    ]);
    s.ok(&cli, &["--decrypt", "-i", "e1.esdk", "-o", "e1.out", "-w", &w, "-c", "purpose=test", "-S"]);
    assert_eq!(std::fs::read(s.path("e1.out")).unwrap(), content);
    s.envseal(&[
        "encrypt",
        "plain.bin",
        "--format",
        "esdk",
        "--kms",
        &format!("aws-kms:{arn}"),
        "--esdk-algorithm",
        "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
        "--frame-length",
        "1000",
        "-o",
        "e2.esdk",
    ]);
    s.ok(&cli, &["--decrypt", "-i", "e2.esdk", "-o", "e2.out", "-w", &w, "-S"]);
    assert_eq!(std::fs::read(s.path("e2.out")).unwrap(), content);

    // The ESDK CLI writes, envseal reads: to a file (strict ARN), to stdout (discovery).
    s.ok(&cli, &["--encrypt", "-i", "plain.bin", "-o", "c.esdk", "-w", &w, "-c", "purpose=test", "-S"]);
    s.envseal(&["decrypt", "c.esdk", "--kms", &format!("aws-kms:{arn}"), "--context", "purpose=test", "-o", "c.out"]);
    assert_eq!(std::fs::read(s.path("c.out")).unwrap(), content);
    let out = s.cmd(Path::new(BIN)).args(["decrypt", "c.esdk"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(out.stdout, content);

    // Wrong context, another key, tampering, truncation: refused, nothing released.
    let (code, _) = s.envseal_fails(&["decrypt", "c.esdk", "--context", "purpose=other", "-o", "x"]);
    assert_eq!(code, 5);
    let (code, _) = s.envseal_fails(&[
        "decrypt",
        "c.esdk",
        "--kms",
        "aws-kms:arn:aws:kms:us-east-1:111122223333:key/other",
        "-o",
        "x",
    ]);
    assert_eq!(code, 6);
    let orig = std::fs::read(s.path("c.esdk")).unwrap();
    let mut bad = orig.clone();
    let n = bad.len();
    bad[n / 2] ^= 1;
    s.write("bad.esdk", &bad);
    let (code, _) = s.envseal_fails(&["decrypt", "bad.esdk", "-o", "x"]);
    assert_eq!(code, 7);
    let out = s.cmd(Path::new(BIN)).args(["decrypt", "bad.esdk"]).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(out.stdout.is_empty(), "a signed message releases nothing before its signature verifies");
    s.write("cut.esdk", &orig[..n - 200]);
    let (code, _) = s.envseal_fails(&["decrypt", "cut.esdk", "-o", "x"]);
    assert_eq!(code, 9);
    assert!(!s.path("x").exists());
}

#[test]
fn esdk_python_sdk_both_ways_on_moto_and_raw_aes() {
    const TEST: &str = "esdk_python_sdk_both_ways_on_moto_and_raw_aes";
    if !cfg!(feature = "aws") {
        return skip(TEST, "envseal built without the `aws` feature");
    }
    let Some(py) = python() else { return skip(TEST, "python not found") };
    let probe = Command::new(&py).args(["-c", "import aws_encryption_sdk, boto3"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return skip(TEST, "the Python aws-encryption-sdk or boto3 is not installed");
    }
    let server = match moto() {
        Ok(m) => m,
        Err(e) => return skip(TEST, &e),
    };
    let s = Sandbox::new(&server.env);
    let arn = s.ok(&py, &["-c", "import boto3; print(boto3.client('kms').create_key()['KeyMetadata']['Arn'])"]);
    let arn = arn.trim().to_string();
    s.write("raw.key", [7u8; 32]);
    let content = data(100_000);
    s.write("plain.bin", &content);
    let raw_flag = "ns/app-key=raw.key";
    let script = esdk_py();

    // envseal: two encrypted data keys (AWS KMS, raw AES); Python opens each alone.
    s.envseal(&[
        "encrypt",
        "plain.bin",
        "--format",
        "esdk",
        "--kms",
        &format!("aws-kms:{arn}"),
        "--raw-aes-key",
        raw_flag,
        "--context",
        "tenant=t-1",
        "-o",
        "m.esdk",
    ]);
    let ctx = s.ok(&py, &[&script, "decrypt", "m.esdk", "py-kms.out", "--kms", &arn]);
    assert_eq!(std::fs::read(s.path("py-kms.out")).unwrap(), content);
    let ctx: serde_json::Value = serde_json::from_str(&ctx).unwrap();
    assert_eq!(ctx["tenant"], "t-1");
    assert!(ctx["aws-crypto-public-key"].is_string());
    s.ok(&py, &[&script, "decrypt", "m.esdk", "py-raw.out", "--raw", "ns", "app-key", "raw.key"]);
    assert_eq!(std::fs::read(s.path("py-raw.out")).unwrap(), content);

    // Python writes (both suites, KMS + raw), envseal reads with either key.
    for suite in ["0578", "0478"] {
        let f = format!("py-{suite}.esdk");
        s.ok(
            &py,
            &[
                &script,
                "encrypt",
                "plain.bin",
                &f,
                "--kms",
                &arn,
                "--raw",
                "ns",
                "app-key",
                "raw.key",
                "--suite",
                suite,
                "--frame",
                "1024",
                "--ctx",
                "a=b",
            ],
        );
        s.envseal(&["decrypt", &f, "--raw-aes-key", raw_flag, "--context", "a=b", "-o", "r.out"]);
        assert_eq!(std::fs::read(s.path("r.out")).unwrap(), content, "{suite} raw");
        s.envseal(&["decrypt", &f, "--kms", &format!("aws-kms:{arn}"), "-o", "k.out"]);
        assert_eq!(std::fs::read(s.path("k.out")).unwrap(), content, "{suite} kms");
    }

    // The commitment policy: a message without key commitment is refused, with the reason.
    s.ok(&py, &[&script, "encrypt", "plain.bin", "v1.esdk", "--raw", "ns", "app-key", "raw.key", "--suite", "0378"]);
    let (code, err) = s.envseal_fails(&["decrypt", "v1.esdk", "--raw-aes-key", raw_flag, "-o", "x"]);
    assert_eq!(code, 10, "{err}");
    assert!(err.contains("REQUIRE_ENCRYPT_REQUIRE_DECRYPT"), "{err}");
    // The limit on encrypted data keys.
    s.write("raw2.key", [8u8; 32]);
    s.write("raw3.key", [9u8; 32]);
    s.ok(
        &py,
        &[
            &script,
            "encrypt",
            "plain.bin",
            "three.esdk",
            "--raw",
            "ns",
            "k1",
            "raw.key",
            "--raw",
            "ns",
            "k2",
            "raw2.key",
            "--raw",
            "ns",
            "k3",
            "raw3.key",
        ],
    );
    let (code, err) = s.envseal_fails(&[
        "decrypt",
        "three.esdk",
        "--raw-aes-key",
        "ns/k2=raw2.key",
        "--max-encrypted-data-keys",
        "2",
        "-o",
        "x",
    ]);
    assert_eq!(code, 3, "{err}");
    s.envseal(&["decrypt", "three.esdk", "--raw-aes-key", "ns/k2=raw2.key", "-o", "three.out"]);
    assert_eq!(std::fs::read(s.path("three.out")).unwrap(), content);
}
