//! A load generator for KMS servers speaking the AWS KMS JSON 1.1 API (SigV4) or the Alibaba
//! Cloud KMS RPC API (HMAC-SHA1 signatures): `envseal kms serve`, moto, a real endpoint.
//!
//! Every request is signed afresh (new date, new nonce), as an SDK would, and sent over one of
//! `--conns` keep-alive HTTP/1.1 connections, each driven by its own task that waits for an
//! answer before sending the next request. Prints one JSON line per run: requests per second,
//! latency percentiles, errors. Used by `bench/kms-load.sh`.
//!
//! ```text
//! kms_load --api aws|alibaba --addr 127.0.0.1:PORT --ak ID --sk SECRET
//!          [--key KEY_ID | --create-key] [--op generate|decrypt] [--conns N] [--seconds S]
//! ```
//!
//! `--create-key` makes a key first (CreateKey) and prints its id on stderr. `--op decrypt`
//! makes one data key first and then decrypts its blob over and over.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use envseal_support::percent;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REGION_AWS: &str = "us-east-1";
const CONTEXT: &str = r#"{"purpose":"bench","tenant":"t-1"}"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Aws,
    Alibaba,
}

struct Opts {
    api: Api,
    addr: String,
    ak: String,
    sk: String,
    key: Option<String>,
    create_key: bool,
    op: String,
    conns: usize,
    seconds: f64,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        api: Api::Aws,
        addr: String::new(),
        ak: String::new(),
        sk: String::new(),
        key: None,
        create_key: false,
        op: "generate".into(),
        conns: 1,
        seconds: 5.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--api" => {
                o.api = match val()?.as_str() {
                    "aws" => Api::Aws,
                    "alibaba" => Api::Alibaba,
                    x => return Err(format!("--api {x}: aws or alibaba")),
                }
            }
            "--addr" => o.addr = val()?,
            "--ak" => o.ak = val()?,
            "--sk" => o.sk = val()?,
            "--key" => o.key = Some(val()?),
            "--create-key" => o.create_key = true,
            "--op" => o.op = val()?,
            "--conns" => o.conns = val()?.parse().map_err(|e| format!("--conns: {e}"))?,
            "--seconds" => o.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            x => return Err(format!("unknown argument {x}")),
        }
    }
    if o.addr.is_empty() || o.ak.is_empty() || o.sk.is_empty() {
        return Err("--addr, --ak and --sk are required".into());
    }
    if o.key.is_none() && !o.create_key {
        return Err("--key or --create-key is required".into());
    }
    if !matches!(o.op.as_str(), "generate" | "decrypt") || o.conns == 0 {
        return Err("--op generate|decrypt, --conns at least 1".into());
    }
    Ok(o)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

/// `(YYYYMMDD'T'HHMMSS'Z', YYYY-MM-DD'T'HH:MM:SS'Z')` for now.
fn dates() -> (String, String) {
    let iso = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    (iso.replace(['-', ':'], ""), iso)
}

/// One signed request, as bytes on the wire.
fn request(o: &Opts, action: &str, body: &Value) -> Vec<u8> {
    match o.api {
        Api::Aws => {
            let payload = body.to_string();
            let (amz_date, _) = dates();
            let day = &amz_date[..8];
            let target = format!("TrentService.{action}");
            let ct = "application/x-amz-json-1.1";
            let signed = "content-type;host;x-amz-date;x-amz-target";
            let canonical = format!(
                "POST\n/\n\ncontent-type:{ct}\nhost:{}\nx-amz-date:{amz_date}\nx-amz-target:{target}\n\n{signed}\n{}",
                o.addr,
                sha256_hex(payload.as_bytes())
            );
            let scope = format!("{day}/{REGION_AWS}/kms/aws4_request");
            let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical.as_bytes()));
            let mut k = hmac256(format!("AWS4{}", o.sk).as_bytes(), day.as_bytes());
            for part in [REGION_AWS, "kms", "aws4_request"] {
                k = hmac256(&k, part.as_bytes());
            }
            let sig = hex::encode(hmac256(&k, to_sign.as_bytes()));
            format!(
                "POST / HTTP/1.1\r\nhost: {}\r\ncontent-type: {ct}\r\nx-amz-date: {amz_date}\r\nx-amz-target: {target}\r\n\
                 authorization: AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={sig}\r\n\
                 content-length: {}\r\n\r\n{payload}",
                o.addr,
                o.ak,
                payload.len()
            )
            .into_bytes()
        }
        Api::Alibaba => {
            let (_, iso) = dates();
            let nonce = hex::encode(envseal_core::random::array::<16>());
            let mut params: Vec<(String, String)> = vec![
                ("AccessKeyId".into(), o.ak.clone()),
                ("Action".into(), action.into()),
                ("Format".into(), "JSON".into()),
                ("SignatureMethod".into(), "HMAC-SHA1".into()),
                ("SignatureNonce".into(), nonce),
                ("SignatureVersion".into(), "1.0".into()),
                ("Timestamp".into(), iso),
                ("Version".into(), "2016-01-20".into()),
            ];
            if let Value::Object(m) = body {
                params.extend(m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())));
            }
            params.sort();
            let query: Vec<String> =
                params.iter().map(|(k, v)| format!("{}={}", percent::encode(k), percent::encode(v))).collect();
            let query = query.join("&");
            let to_sign = format!("POST&%2F&{}", percent::encode(&query));
            let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, format!("{}&", o.sk).as_bytes());
            let sig = STANDARD.encode(hmac::sign(&key, to_sign.as_bytes()).as_ref());
            let form = format!("{query}&Signature={}", percent::encode(&sig));
            format!(
                "POST / HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}",
                o.addr,
                form.len()
            )
            .into_bytes()
        }
    }
}

/// One keep-alive connection.
struct Conn {
    addr: String,
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server said `Connection: close`.
    closed: bool,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { addr: addr.to_owned(), stream, buf: Vec::with_capacity(8192), closed: false })
    }

    /// Sends `req` and reads the answer: (status, body). A server that answers
    /// `Connection: close` (moto) gets a new connection for the next request, as clients do.
    async fn call(&mut self, req: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        if self.closed {
            *self = Conn::open(&self.addr).await?;
        }
        self.stream.write_all(req).await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    self.read_more().await?;
                }
                self.closed = head.lines().any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| {
                        k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
                    })
                });
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return Ok((status, body));
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// A single call, whose answer must be 200 with a JSON body.
async fn once(o: &Opts, action: &str, body: &Value) -> Result<Value, String> {
    let mut c = Conn::open(&o.addr).await.map_err(|e| format!("connect {}: {e}", o.addr))?;
    let (status, body) = c.call(&request(o, action, body)).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&body);
    if status != 200 {
        return Err(format!("{action}: HTTP {status}: {text}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{action}: not JSON ({e}): {text}"))
}

fn generate_body(o: &Opts, key: &str) -> Value {
    match o.api {
        Api::Aws => json!({"KeyId": key, "KeySpec": "AES_256",
            "EncryptionContext": serde_json::from_str::<Value>(CONTEXT).unwrap_or_default()}),
        Api::Alibaba => json!({"KeyId": key, "KeySpec": "AES_256", "EncryptionContext": CONTEXT}),
    }
}

fn decrypt_body(o: &Opts, blob: &str) -> Value {
    match o.api {
        Api::Aws => json!({"CiphertextBlob": blob,
            "EncryptionContext": serde_json::from_str::<Value>(CONTEXT).unwrap_or_default()}),
        Api::Alibaba => json!({"CiphertextBlob": blob, "EncryptionContext": CONTEXT}),
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = match parse_args() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("kms_load: {e}");
            std::process::exit(2);
        }
    };
    let key = match (&o.key, o.create_key) {
        (Some(k), _) => k.clone(),
        (None, _) => match once(&o, "CreateKey", &json!({})).await {
            Ok(v) => {
                let id = v["KeyMetadata"]["KeyId"].as_str().unwrap_or_default().to_owned();
                eprintln!("kms_load: created key {id}");
                id
            }
            Err(e) => {
                eprintln!("kms_load: {e}");
                std::process::exit(1);
            }
        },
    };
    let (action, body) = if o.op == "generate" {
        ("GenerateDataKey", generate_body(&o, &key))
    } else {
        let blob = match once(&o, "GenerateDataKey", &generate_body(&o, &key)).await {
            Ok(v) => v["CiphertextBlob"].as_str().unwrap_or_default().to_owned(),
            Err(e) => {
                eprintln!("kms_load: {e}");
                std::process::exit(1);
            }
        };
        ("Decrypt", decrypt_body(&o, &blob))
    };
    let body = Arc::new(body);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let mut tasks = Vec::new();
    for _ in 0..o.conns {
        let (o, body) = (o.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), Vec::<String>::new());
            let mut conn = match Conn::open(&o.addr).await {
                Ok(c) => c,
                Err(e) => return (lat, vec![format!("connect: {e}")]),
            };
            while Instant::now() < deadline {
                let req = request(&o, action, &body);
                let t = Instant::now();
                match conn.call(&req).await {
                    Ok((200, _)) => lat.push(t.elapsed()),
                    Ok((status, b)) => {
                        if errors.len() < 3 {
                            errors.push(format!("HTTP {status}: {}", String::from_utf8_lossy(&b)));
                        }
                    }
                    Err(e) => {
                        errors.push(format!("I/O: {e}"));
                        match Conn::open(&o.addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors, mut failed) = (Vec::new(), Vec::new(), 0usize);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            failed += e.len();
            errors.extend(e.into_iter().take(2));
        }
    }
    let wall = start.elapsed().as_secs_f64();
    lat.sort();
    let out = json!({
        "api": if o.api == Api::Aws { "aws" } else { "alibaba" },
        "action": action,
        "conns": o.conns,
        "ok": lat.len(),
        "errors": failed,
        "seconds": wall,
        "rps": lat.len() as f64 / wall,
        "p50_ms": percentile(&lat, 0.50),
        "p99_ms": percentile(&lat, 0.99),
        "first_errors": errors.into_iter().take(3).collect::<Vec<_>>(),
    });
    println!("{out}");
}
