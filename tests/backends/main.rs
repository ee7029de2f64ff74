//! The CLI against each real backend, started here on 127.0.0.1: a file sealed with the backend
//! (plus a local break-glass entry) decrypts, rotates and rewraps; a missing permission, a
//! disabled key and a wrong context give their own exit codes; any one entry opens the file.
//!
//! OpenBao (`bao`) and SoftHSM2 (`softhsm2-util`) come from `scripts/test-all.sh`. Without them
//! the test prints SKIPPED, or fails when `ENVSEAL_REQUIRE_SERVERS=1` (CI).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_envseal");

fn require() -> bool {
    std::env::var("ENVSEAL_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

fn skip(test: &str, why: &str) {
    assert!(!require(), "{test}: {why} (ENVSEAL_REQUIRE_SERVERS=1)");
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
}

fn free_port_pair() -> u16 {
    // OpenBao's dev server also binds PORT+1.
    loop {
        let p = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A sandbox: a work dir, a fresh local keystore, and the backend's environment.
struct Sandbox {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new(env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("ENVSEAL_HOME".into(), tmp.path().join("home").to_string_lossy().into_owned()));
        Sandbox { _tmp: tmp, work, env }
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(&self.work)
            .env_remove("ENVSEAL_KMS")
            .env_remove("ENVSEAL_KEY")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
        let out = self.run(args, extra);
        assert!(out.status.success(), "envseal {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn code(&self, args: &[&str], extra: &[(&str, &str)]) -> (i32, String) {
        let out = self.run(args, extra);
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn file(&self, name: &str) -> String {
        self.work.join(name).to_string_lossy().into_owned()
    }
}

fn versions(s: &Sandbox, file: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", file, "--json"], extra)).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["backend"].as_str().unwrap().to_string(), k["key_version"].as_str().unwrap().to_string()))
        .collect()
}

/// The shared scenario: seal with `uri` plus a local break-glass entry, open, rotate `key`,
/// rewrap, open again; a wrong context is exit 5; with `broken` (a bad credential) the file
/// still opens through the local entry, and a file sealed with the backend alone is exit `denied`.
fn scenario(s: &Sandbox, uri: &str, key: &str, broken: &[(&str, &str)], denied: i32) {
    let f = s.file("app.env");
    std::fs::write(&f, "DB_PASSWORD=hunter2\nAPI_KEY=\"sk 123\"\n").unwrap();
    s.ok(&["encrypt", &f, "--kms", uri, "--kms", "local:", "--context", "app=billing"], &[]);
    let sealed = std::fs::read_to_string(&f).unwrap();
    assert!(!sealed.contains("hunter2"));
    let before = versions(s, &f, &[]);
    assert_eq!(before.len(), 2, "{before:?}");
    let backend = before[0].0.clone();
    assert_eq!(s.ok(&["get", &f, "DB_PASSWORD"], &[]), "hunter2");

    // Rotate on the backend, rewrap to the latest version, still opens.
    s.ok(&["keys", "rotate", key, "--kms", uri], &[]);
    s.ok(&["rewrap", &f, "--to-latest", "--kms", uri], &[]);
    let after = versions(s, &f, &[]);
    assert_ne!(after[0].1, before[0].1, "{backend}: version after rotate + rewrap: {after:?}");
    assert_eq!(s.ok(&["get", &f, "API_KEY"], &[]), "sk 123");

    // Wrong context: refused before any KMS call.
    let (code, err) = s.code(&["decrypt", &f, "--context", "app=other"], &[]);
    assert_eq!(code, 5, "{err}");

    // The backend refuses (bad credential): the local entry still opens the file...
    assert!(s.ok(&["decrypt", &f], broken).contains("DB_PASSWORD=hunter2"));
    // ...and a file with the backend's entry alone fails with the backend's error class.
    let g = s.file("only.env");
    std::fs::write(&g, "X=only-backend\n").unwrap();
    s.ok(&["encrypt", &g, "--kms", uri], &[]);
    let (code, err) = s.code(&["decrypt", &g], broken);
    assert_eq!(code, denied, "{backend} with a bad credential: {err}");
    assert!(err.contains("envseal: hint: "), "{err}");
}

#[test]
fn vault_transit_through_the_cli() {
    let Some(bao) = which("bao") else { return skip("vault_transit_through_the_cli", "`bao` not on PATH") };
    let Some(curl) = which("curl") else { return skip("vault_transit_through_the_cli", "`curl` not on PATH") };
    let port = free_port_pair();
    let token = format!("tok-{}", std::process::id());
    let _server = Killer(
        Command::new(&bao)
            .args(["server", "-dev", &format!("-dev-root-token-id={token}")])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg("-dev-no-store-token")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bao"),
    );
    let addr = format!("http://127.0.0.1:{port}");
    let http = |method: &str, path: &str, body: &str| -> bool {
        Command::new(&curl)
            .args(["-sf", "-X", method, "-H", &format!("X-Vault-Token: {token}"), "-d", body])
            .arg(format!("{addr}{path}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let start = Instant::now();
    while !http("GET", "/v1/sys/health", "") {
        assert!(start.elapsed() < Duration::from_secs(20), "OpenBao did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(http("POST", "/v1/sys/mounts/transit", r#"{"type":"transit"}"#));
    assert!(http("POST", "/v1/transit/keys/app", r#"{"type":"aes256-gcm96"}"#));
    let s = Sandbox::new(&[("VAULT_ADDR", &addr), ("VAULT_TOKEN", &token)]);
    let uri = format!("vault-transit+http://127.0.0.1:{port}/transit/app");
    scenario(&s, &uri, "app", &[("VAULT_TOKEN", "bad-token")], 11);
}

#[test]
fn pkcs11_softhsm_through_the_cli() {
    let Some(util) = which("softhsm2-util") else {
        return skip("pkcs11_softhsm_through_the_cli", "`softhsm2-util` not on PATH (apt-get install softhsm2)");
    };
    let module = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
        .into_iter()
        .find(|m| Path::new(m).exists());
    let Some(module) = module else { return skip("pkcs11_softhsm_through_the_cli", "libsofthsm2.so not found") };
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = tmp.path().join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\n", tokens.display()))
        .unwrap();
    let init = Command::new(util)
        .args(["--init-token", "--free", "--label", "envseal-e2e", "--so-pin", "1234", "--pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let conf = conf.to_string_lossy().into_owned();
    let s = Sandbox::new(&[
        ("SOFTHSM2_CONF", &conf),
        ("ENVSEAL_PKCS11_PIN", "5678"),
        ("ENVSEAL_PKCS11_MODULE", module),
        ("ENVSEAL_PKCS11_URI", "pkcs11:token=envseal-e2e"),
    ]);
    let created: serde_json::Value = serde_json::from_str(
        &s.ok(&["keys", "create", "--alias", "alias/hsm", "--json", "--kms", "pkcs11:token=envseal-e2e"], &[]),
    )
    .unwrap();
    let key = created["key_id"].as_str().unwrap().to_string();
    let uri = format!("pkcs11:token=envseal-e2e;object={key}");
    scenario(&s, &uri, &key, &[("ENVSEAL_PKCS11_PIN", "0000")], 11);
    // A disabled key: its own exit code (13) for a file with the HSM entry alone.
    let g = s.file("only.env");
    s.ok(&["keys", "disable", &key, "--kms", "pkcs11:token=envseal-e2e"], &[]);
    let (code, err) = s.code(&["decrypt", &g], &[]);
    assert_eq!(code, 13, "{err}");
}
