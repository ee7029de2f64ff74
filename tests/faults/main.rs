//! KMS fault matrix (issue 8): the CLI's Alibaba Cloud KMS backend talks to `envseal kms serve`
//! through a fault-injecting proxy written here: throttling, 5xx, connection resets, stalls
//! (client timeouts), slow answers, an outage in the middle of a long rewrap, and STS
//! credentials that expire mid-job.
//! Each row checks the retries (counted at the proxy: bounded), the exit code and message
//! (specific), and that nothing is lost (files old or new, and they open).
//!
//! Library-level faults (the mock's `fail_next`, outages, latency, denial) are covered next to
//! the code: `crates/envseal-core/tests/rewrap.rs`, `sealer_cache.rs`, `container_kms.rs`, and the
//! backends' own retry tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_envseal");
const AK: &str = "AKFAULTTEST";
const SK: &str = "fault-test-secret";

/// What the proxy does with the next requests.
#[derive(Clone, Debug)]
enum Fault {
    Pass,
    /// Answer with this status and Alibaba error code instead of forwarding.
    Status(u16, &'static str),
    /// Close the connection without an answer.
    Reset,
    /// Forward after a delay.
    Slow(Duration),
    /// Hold the connection without answering, then close it (a client timeout).
    Stall(Duration),
}

struct Proxy {
    addr: String,
    /// (fault, how many more requests get it; then Pass). `usize::MAX`: for ever.
    plan: Arc<Mutex<(Fault, usize)>>,
    requests: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let plan = Arc::new(Mutex::new((Fault::Pass, 0usize)));
        let requests = Arc::new(AtomicUsize::new(0));
        let (p, r) = (plan.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (p, r, up) = (p.clone(), r.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &p, &r, &up);
                });
            }
        });
        Proxy { addr, plan, requests }
    }

    fn set(&self, fault: Fault, times: usize) {
        *self.plan.lock().unwrap() = (fault, times);
        self.requests.store(0, Ordering::SeqCst);
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// One request per connection: read it, apply the plan, answer with `Connection: close`.
fn serve(
    mut conn: TcpStream,
    plan: &Mutex<(Fault, usize)>,
    count: &AtomicUsize,
    upstream: &str,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    count.fetch_add(1, Ordering::SeqCst);
    let fault = {
        let mut p = plan.lock().unwrap();
        if p.1 == 0 {
            Fault::Pass
        } else {
            if p.1 != usize::MAX {
                p.1 -= 1;
            }
            p.0.clone()
        }
    };
    match fault {
        Fault::Reset => {
            let _ = conn.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        Fault::Status(status, code) => {
            let json = format!(r#"{{"RequestId":"proxy","Code":"{code}","Message":"injected by the test proxy"}}"#);
            write!(
                conn,
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            )
        }
        Fault::Slow(d) => {
            std::thread::sleep(d);
            forward(&mut conn, &head, &body, upstream)
        }
        Fault::Stall(d) => {
            std::thread::sleep(d);
            let _ = conn.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        Fault::Pass => forward(&mut conn, &head, &body, upstream),
    }
}

fn forward(conn: &mut TcpStream, head: &[u8], body: &[u8], upstream: &str) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head)?;
    up.write_all(body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    conn.write_all(&answer)
}

struct Serve {
    child: Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_kms(extra: &[&str]) -> Serve {
    let mut child = Command::new(BIN)
        .args(["kms", "serve", "--port", "0", "--quiet"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    for l in lines.by_ref() {
        let l = l.unwrap();
        if let Some(a) = l.trim().strip_prefix("endpoint: http://") {
            addr = Some(a.to_owned());
        }
        if l.starts_with("Ready.") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Serve { child, addr: addr.expect("endpoint") }
}

struct Env {
    _dir: tempfile::TempDir,
    work: PathBuf,
    home: PathBuf,
    endpoint: String,
    creds: Vec<(&'static str, String)>,
}

impl Env {
    fn new(proxy: &Proxy) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (work, home) = (dir.path().join("work"), dir.path().join("home"));
        std::fs::create_dir_all(&work).unwrap();
        Env {
            _dir: dir,
            work,
            home,
            endpoint: format!("http://{}", proxy.addr),
            creds: vec![("ALIBABA_CLOUD_ACCESS_KEY_ID", AK.into()), ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SK.into())],
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        for v in ["ENVSEAL_KMS", "ENVSEAL_KEY", "ALIBABA_CLOUD_SECURITY_TOKEN", "ENVSEAL_PROFILE"] {
            c.env_remove(v);
        }
        c.args(args)
            .current_dir(&self.work)
            .env("ENVSEAL_HOME", &self.home)
            .env("HOME", &self.home)
            .env("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou")
            .env("ENVSEAL_ALIBABA_KMS_ENDPOINT", &self.endpoint)
            // Client timeouts in the stall rows: 1 s per request.
            .env("ENVSEAL_ALIBABA_KMS_TIMEOUT", "1")
            .envs(self.creds.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.work.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

const URI: &str = "alibaba-kms:cn-hangzhou/alias/default";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn transient_faults_are_retried_and_lasting_ones_fail_cleanly() {
    let server = serve_kms(&["--access-key", &format!("{AK}:{SK}")]);
    let proxy = Proxy::start(server.addr.clone());
    let env = Env::new(&proxy);
    let original = "DB_PASSWORD=hunter2\nAPI_KEY=k\n";

    // Transient faults: throttling, a 500, a 503, a reset, a slow answer: retried, then success.
    for (fault, times) in [
        (Fault::Status(400, "Throttling.User"), 2),
        (Fault::Status(500, "InternalFailure"), 1),
        (Fault::Status(503, "ServiceUnavailableTemporary"), 2),
        (Fault::Reset, 1),
        (Fault::Stall(Duration::from_secs(3)), 1),
        (Fault::Slow(Duration::from_millis(400)), 1),
    ] {
        let f = env.write("t.env", original);
        proxy.set(fault.clone(), times);
        let t = Instant::now();
        let o = env.run(&["encrypt", f.to_str().unwrap(), "--kms", URI]);
        assert!(o.status.success(), "{fault:?}: {}", stderr(&o));
        let n = proxy.count();
        let retried = !matches!(fault, Fault::Slow(_));
        assert!(!retried || n > times, "{fault:?}: {n} requests: the faulty ones were retried");
        eprintln!("{fault:?} x{times}: ok after {n} requests in {:?}", t.elapsed());
        let o = env.run(&["decrypt", f.to_str().unwrap()]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), original, "{}", stderr(&o));
    }

    // Lasting faults: bounded retries (4 attempts per call), exit 12, the input untouched.
    for fault in [
        Fault::Status(400, "Throttling"),
        Fault::Status(503, "ServiceUnavailableTemporary"),
        Fault::Reset,
        Fault::Stall(Duration::from_secs(3)),
    ] {
        let f = env.write("down.env", original);
        proxy.set(fault.clone(), usize::MAX);
        let t = Instant::now();
        let o = env.run(&["encrypt", f.to_str().unwrap(), "--kms", URI]);
        assert_eq!(o.status.code(), Some(12), "{fault:?}: {}", stderr(&o));
        let n = proxy.count();
        assert!((1..=4).contains(&n), "{fault:?}: {n} requests for one call (at most 4 attempts)");
        assert!(stderr(&o).contains("envseal: hint:"), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), original);
        assert!(t.elapsed() < Duration::from_secs(15), "{fault:?}: gave up in {:?}", t.elapsed());
        eprintln!("{fault:?} for ever: exit 12 after {n} requests in {:?}", t.elapsed());
    }
    proxy.set(Fault::Pass, 0);
}

#[test]
fn an_outage_stops_a_long_rewrap_cleanly_and_it_resumes() {
    let server = serve_kms(&["--access-key", &format!("{AK}:{SK}")]);
    let proxy = Proxy::start(server.addr.clone());
    let env = Env::new(&proxy);
    let dir = env.work.join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..24 {
        let f = env.write(&format!("secrets/s{i:02}.env"), &format!("N={i}\nSECRET=v{i}\n"));
        let o = env.run(&["encrypt", f.to_str().unwrap(), "--kms", URI]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let before: Vec<Vec<u8>> = (0..24).map(|i| std::fs::read(dir.join(format!("s{i:02}.env"))).unwrap()).collect();
    assert!(env.run(&["keys", "rotate", "alias/default", "--kms", URI]).status.success());
    // The KMS goes down after a few requests and stays down.
    proxy.set(Fault::Pass, 0);
    let plan = proxy.plan.clone();
    let counter = proxy.requests.clone();
    let flip = std::thread::spawn(move || {
        while counter.load(Ordering::SeqCst) < 8 {
            std::thread::sleep(Duration::from_millis(5));
        }
        *plan.lock().unwrap() = (Fault::Status(503, "ServiceUnavailableTemporary"), usize::MAX);
    });
    let o = env.run(&["rewrap", "-r", "secrets", "--to-latest", "--jobs", "2", "--json"]);
    flip.join().unwrap();
    assert_eq!(o.status.code(), Some(12), "{}\n{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    // Nothing lost: each file is the old one or a rewrapped one, and every one opens.
    proxy.set(Fault::Pass, 0);
    let mut changed = 0;
    for (i, old) in before.iter().enumerate() {
        let p = dir.join(format!("s{i:02}.env"));
        if std::fs::read(&p).unwrap() != *old {
            changed += 1;
        }
        let o = env.run(&["get", p.to_str().unwrap(), "SECRET"]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("v{i}"), "{}", stderr(&o));
    }
    assert!(changed < 24, "the outage stopped the job before the end ({changed} rewrapped)");
    // Resumed once the KMS is back: everything ends at the latest version.
    let o = env.run(&["rewrap", "-r", "secrets", "--to-latest", "--resume", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.run(&["rewrap", "-r", "secrets", "--to-latest", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["already_at_target"].as_u64(), Some(24), "{v}");
    eprintln!("outage: {changed} of 24 rewrapped before the stop; resumed to 24");
}

#[test]
fn credentials_that_expire_mid_job_fail_with_a_specific_error() {
    let dir = tempfile::tempdir().unwrap();
    let iam = dir.path().join("iam.json");
    let expires = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(4)).to_string();
    std::fs::write(
        &iam,
        serde_json::json!({"access_keys": [
            {"id": AK, "secret": SK, "principal": "admin"},
            {"id": "STS.SHORT", "secret": "short-lived-secret", "principal": "job", "security_token": "short-token", "expires": expires}
        ]})
        .to_string(),
    )
    .unwrap();
    let server = serve_kms(&["--iam", iam.to_str().unwrap()]);
    let proxy = Proxy::start(server.addr.clone());
    let mut env = Env::new(&proxy);
    env.creds = vec![
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "STS.SHORT".into()),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "short-lived-secret".into()),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "short-token".into()),
    ];
    let f = env.write("a.env", "A=1\n");
    let o = env.run(&["encrypt", f.to_str().unwrap(), "--kms", URI]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sealed = std::fs::read(&f).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    // (Sealing made two requests: GenerateDataKey, and the Decrypt that proves the new file opens.)
    let before = proxy.count();
    let o = env.run(&["decrypt", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(11), "{}", stderr(&o));
    assert!(stderr(&o).to_lowercase().contains("expired"), "{}", stderr(&o));
    let n = proxy.count() - before;
    assert!(n <= 1, "an expired token is not retried in a loop ({n} requests)");
    assert_eq!(std::fs::read(&f).unwrap(), sealed);
}

#[allow(dead_code)]
fn _path(_: &Path) {}
