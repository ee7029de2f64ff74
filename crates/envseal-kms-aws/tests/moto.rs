//! The AWS KMS backend on the wire, against moto (an AWS emulator) started by the harness on
//! 127.0.0.1 with a free port and stopped on drop, even on panic.
//!
//! Without `moto_server` on PATH these tests print `SKIPPED: ...` on stderr and pass, unless
//! `ENVSEAL_REQUIRE_SERVERS=1` (CI), which makes them fail. Install: `pip install 'moto[server]'`.
//!
//! The shared envseal-testkit suites run here with the capabilities AWS declares
//! ([`aws_capabilities`]: Encrypt takes 1..=4096 bytes, a wrong context is
//! InvalidCiphertextException, no minimum decryption version, asynchronous on-demand
//! rotation), plus moto's documented deviations from AWS ([`moto_capabilities`]: context pairs
//! concatenated without lengths, no key material ids, key states not enforced). Each deviation
//! the suites tolerate prints a `NOTE (server deviates) ...` line. The error mapping moto cannot
//! exercise (DisabledException, KMSInvalidStateException, ...) is unit-tested with a fake; the
//! AWS-specific checks the suites do not make (ARNs, tags, protection level, the `aws-kms:`
//! prefix, regions, moto's error codes, concurrency) are the other tests here. `real_aws` runs
//! the suites against real AWS when given a key.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::config::{Credentials, SharedCredentialsProvider};
use envseal_core::kms::{KeySpec, KeyState, ProtectionLevel, WrappedKey, decrypt_data_key};
use envseal_core::{EncryptionContext, Kms, KmsError};
use envseal_kms_aws::{AWS_MAX_ENCRYPT, AwsKms, UNVERSIONED};
use envseal_testkit::{Capabilities, WrongContextReport, run_conformance_with, run_key_management_conformance_with};

// ---------------------------------------------------------------------------------------------
// Harness

/// A running `moto_server`, killed on drop.
struct Moto {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers (up to 30 s).
    fn start() -> Result<Self, String> {
        let exe = find_on_path("moto_server").ok_or("moto_server not found on PATH")?;
        let mut last = String::new();
        // The port is free when we pick it, but another process may take it before moto binds:
        // then moto exits and we try another.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let log = std::env::temp_dir().join(format!("envseal-moto-{}-{port}.log", std::process::id()));
            let out = std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
            let mut moto = Moto { child, url: format!("http://127.0.0.1:{port}"), log };
            match moto.wait_ready(port) {
                Ok(()) => return Ok(moto),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("moto_server exited early ({status}): {}", tail(&self.log)));
            }
            if http_ok(port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("moto_server did not answer within 30 s: {}", tail(&self.log)))
    }

    /// An SDK configuration for this server, built directly (no process-wide environment): the
    /// endpoint, static dummy credentials and `region`.
    fn sdk_config(&self, region: &str) -> SdkConfig {
        SdkConfig::builder()
            .endpoint_url(&self.url)
            .region(Region::new(region.to_owned()))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                DUMMY_ACCESS_KEY,
                DUMMY_SECRET_KEY,
                None,
                None,
                "moto",
            )))
            .behavior_version(BehaviorVersion::latest())
            .build()
    }

    fn kms(&self, region: &str) -> Arc<AwsKms> {
        Arc::new(AwsKms::new(&self.sdk_config(region)))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

const DUMMY_ACCESS_KEY: &str = "AKIDMOTODUMMY0000001";
const DUMMY_SECRET_KEY: &str = "moto-dummy-secret-access-key";

/// moto, or `None` after a loud skip line; a failure when `ENVSEAL_REQUIRE_SERVERS=1`.
fn moto(test: &str) -> Option<Moto> {
    match Moto::start() {
        Ok(m) => Some(m),
        Err(why) => {
            if std::env::var("ENVSEAL_REQUIRE_SERVERS").as_deref() == Ok("1") {
                panic!("{test}: ENVSEAL_REQUIRE_SERVERS=1 but moto could not start: {why}");
            }
            // Straight to the process's stderr: libtest captures eprintln! of passing tests.
            let line = format!(
                "SKIPPED: {test}: {why}. Install it with `pip install 'moto[server]'`; \
                 set ENVSEAL_REQUIRE_SERVERS=1 to make this a failure.\n"
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// `GET /moto-api/` answers 200.
fn http_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

// ---------------------------------------------------------------------------------------------
// Capabilities and helpers

/// What AWS KMS supports, as the shared suites see it (docs/backends/aws-kms.md §Tests):
/// - Encrypt takes 1..=4096 bytes (envseal's bound is 6 KiB): 0 bytes is InvalidRequest,
///   4097..=6144 `PlaintextTooLarge { limit: 4096 }`;
/// - a wrong context is InvalidCiphertextException, which cannot be told from a damaged blob;
/// - every key material decrypts for the key's lifetime: no minimum decryption version;
/// - RotateKeyOnDemand completes asynchronously, so the current key material may not have
///   changed yet when `rotate_key` returns.
fn aws_capabilities() -> Capabilities {
    Capabilities::strict()
        .direct_encrypt(1..=AWS_MAX_ENCRYPT)
        .wrong_context(WrongContextReport::InvalidCiphertext)
        .rotation_changes_version(false)
        .min_decryption_version(false)
}

/// AWS's capabilities, less what moto 5.2.1 gets wrong: it concatenates context pairs without
/// lengths (`{"ab":"c"}` opens as `{"a":"bc"}`), reports no key material ids (the version stays
/// [`UNVERSIONED`]), and does not refuse cryptographic operations on disabled keys or keys
/// pending deletion (it also enables a key pending deletion, and "cancels" a deletion that is
/// not pending).
fn moto_capabilities() -> Capabilities {
    aws_capabilities().contexts_unambiguous(false).key_states_enforced(false)
}

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(pairs.iter().copied()).unwrap()
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    envseal_core::random::fill(&mut b);
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_key_arn(id: &str) -> bool {
    id.starts_with("arn:") && id.contains(":key/")
}

// ---------------------------------------------------------------------------------------------
// AWS-specific checks the shared suites do not make

/// Cryptographic operations: key ids are ARNs, Encrypt's entries are [`UNVERSIONED`], AWS's own
/// limits are named in the errors, and the `aws-kms:` prefix names a key.
async fn aws_crypto_extras(kms: &AwsKms, key: &str) {
    let c = ctx(&[("purpose", "envseal-aws")]);
    let g = kms.generate_data_key(key, &c).await.unwrap();
    assert!(is_key_arn(&g.wrapped.key_id), "{}", g.wrapped.key_id);
    // Encrypt reports no KeyMaterialId: the entry says UNVERSIONED, and decrypt agrees.
    let w = kms.encrypt(key, b"x", &c).await.unwrap();
    assert_eq!((&w.key_id, w.key_version.as_str()), (&g.wrapped.key_id, UNVERSIONED));
    assert_eq!(kms.decrypt(&w, &c).await.unwrap().key_version, UNVERSIONED);
    // The suite accepts the server's InvalidRequest above the range; this backend names the limit.
    for size in [AWS_MAX_ENCRYPT + 1, envseal_core::kms::MAX_DIRECT_ENCRYPT] {
        let e = kms.encrypt(key, &vec![7u8; size], &c).await.unwrap_err();
        assert!(matches!(e, KmsError::PlaintextTooLarge { size: s, limit: 4096 } if s == size), "{size}: {e:?}");
    }
    let e = kms.encrypt(key, b"", &c).await.unwrap_err();
    assert!(matches!(&e, KmsError::InvalidRequest { message } if message.contains("empty")), "{e:?}");
    let e = kms.generate_data_key("aws-kms:alias/envseal-no-such-alias", &c).await.unwrap_err();
    assert!(matches!(e, KmsError::KeyNotFound { .. }), "{e:?}");
}

/// Key management: ARNs, description, tags and protection level, HSM keys only with a custom
/// key store, aliases in the metadata, the `aws-kms:` prefix, and aliases accepted by the
/// key-management calls. Returns the key it created (scheduled for deletion).
async fn aws_key_management_extras(kms: &AwsKms) -> String {
    let km = kms.key_manager().expect("AwsKms has a KeyManager");
    let c = ctx(&[("purpose", "envseal-aws")]);
    let tags = BTreeMap::from([("team".to_owned(), "payments".to_owned())]);
    let spec = KeySpec { description: "envseal lifecycle".into(), tags: tags.clone(), ..KeySpec::default() };
    let created = km.create_key(&spec).await.unwrap();
    let id = created.key_id.clone();
    assert!(is_key_arn(&id), "{id}");
    assert_eq!((created.state, created.protection_level), (KeyState::Enabled, ProtectionLevel::Software));
    assert_eq!(created.description, "envseal lifecycle");
    let d = km.describe_key(&id).await.unwrap();
    assert_eq!((d.description.as_str(), &d.tags), ("envseal lifecycle", &tags));
    let hsm = KeySpec { protection_level: ProtectionLevel::Hsm, ..KeySpec::default() };
    assert!(matches!(km.create_key(&hsm).await, Err(KmsError::Unsupported { .. })));

    let alias = format!("alias/envseal-test-{}", random_suffix());
    km.create_alias(&alias, &id).await.unwrap();
    assert!(km.describe_key(&id).await.unwrap().aliases.contains(&alias));
    assert!(km.list_keys().await.unwrap().iter().any(|m| m.key_id == id && m.aliases.contains(&alias)));
    let ga = kms.generate_data_key(&format!("aws-kms:{alias}"), &c).await.unwrap();
    assert_eq!(ga.wrapped.key_id, id);
    km.disable_key(&alias).await.unwrap();
    assert_eq!(km.describe_key(&id).await.unwrap().state, KeyState::Disabled);
    km.enable_key(&alias).await.unwrap();
    assert_eq!(km.describe_key(&id).await.unwrap().state, KeyState::Enabled);
    assert_eq!(km.rotate_key(&alias).await.unwrap().key_id, id);

    km.delete_alias(&alias).await.unwrap();
    km.schedule_key_deletion(&id, 7).await.unwrap();
    id
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_conformance_on_moto() {
    let Some(moto) = moto("crypto_conformance_on_moto") else { return };
    let kms = moto.kms("us-east-1");
    let caps = moto_capabilities();
    let key = kms.key_manager().unwrap().create_key(&KeySpec::default()).await.unwrap();
    run_conformance_with(kms.clone(), &key.key_id, &caps).await;
    // Through an alias (with the scheme prefix) and a bare key id too.
    let km = kms.key_manager().unwrap();
    km.create_alias("alias/envseal-conformance", &key.key_id).await.unwrap();
    run_conformance_with(kms.clone(), "aws-kms:alias/envseal-conformance", &caps).await;
    let bare = key.key_id.rsplit('/').next().unwrap().to_owned();
    run_conformance_with(kms.clone(), &bare, &caps).await;

    aws_crypto_extras(&kms, &key.key_id).await;
    // No credential in the backend's Debug (the suites check the data keys and plaintexts).
    let shown = format!("{kms:?}");
    assert!(!shown.contains(DUMMY_SECRET_KEY) && !shown.contains(DUMMY_ACCESS_KEY), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_management_on_moto() {
    let Some(moto) = moto("key_management_on_moto") else { return };
    let kms = moto.kms("us-east-1");
    run_key_management_conformance_with(kms.clone(), &moto_capabilities()).await;

    let id = aws_key_management_extras(&kms).await;
    // moto reports no key material ids: versions stay UNVERSIONED, even after a rotation.
    let d = kms.key_manager().unwrap().describe_key(&id).await.unwrap();
    assert_eq!(d.current_version, UNVERSIONED);
    assert_eq!(d.versions.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), [UNVERSIONED]);
}

/// Keys are regional: a key ARN routes the request to the ARN's region, whatever the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_the_region_of_the_arn() {
    let Some(moto) = moto("requests_follow_the_region_of_the_arn") else { return };
    let east = moto.kms("us-east-1");
    let west = moto.kms("us-west-2");
    let west_key = west.key_manager().unwrap().create_key(&KeySpec::default()).await.unwrap().key_id;
    let east_key = east.key_manager().unwrap().create_key(&KeySpec::default()).await.unwrap().key_id;
    assert!(west_key.contains(":us-west-2:"), "{west_key}");
    let c = ctx(&[("app", "regions")]);

    // The us-east-1 client reaches the us-west-2 key by its ARN, for every operation.
    let g = east.generate_data_key(&west_key, &c).await.unwrap();
    assert_eq!(g.wrapped.key_id, west_key);
    let d = east.decrypt(&g.wrapped, &c).await.unwrap();
    assert_eq!(d.plaintext.expose_secret(), g.data_key.expose_secret());
    assert_eq!(east.key_manager().unwrap().describe_key(&west_key).await.unwrap().key_id, west_key);
    // A bare key id means the client's region, where it does not exist.
    let bare = west_key.rsplit('/').next().unwrap();
    assert!(matches!(east.generate_data_key(bare, &c).await, Err(KmsError::KeyNotFound { .. })));

    // Re-encryption across regions (unwrap in one, wrap in the other).
    let w = east.re_encrypt(&g.wrapped, &c, &east_key, &c).await.unwrap();
    assert_eq!(w.key_id, east_key);
    let u = decrypt_data_key(&*west, &w, &c).await.unwrap();
    assert_eq!(u.data_key.expose_secret(), g.data_key.expose_secret());
}

/// What moto answers where AWS would answer differently, mapped to errors a user can act on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_errors_on_moto() {
    let Some(moto) = moto("wire_errors_on_moto") else { return };
    let kms = moto.kms("us-east-1");
    let km = kms.key_manager().unwrap();
    let a = km.create_key(&KeySpec::default()).await.unwrap().key_id;
    let b = km.create_key(&KeySpec::default()).await.unwrap().key_id;
    let c = EncryptionContext::new();
    let g = kms.generate_data_key(&a, &c).await.unwrap();
    // An entry naming another key than the one that wrapped the blob: AWS says
    // IncorrectKeyException (InvalidCiphertext); moto says AccessDenied. Never success.
    let swapped = WrappedKey { key_id: b.clone(), ..g.wrapped.clone() };
    match kms.decrypt(&swapped, &c).await {
        Err(KmsError::InvalidCiphertext | KmsError::AccessDenied { .. }) => {}
        other => panic!("decrypt with another key's id: {other:?}"),
    }
    // A malformed alias never reaches the server.
    assert!(matches!(km.create_alias("alias/a b", &a).await, Err(KmsError::InvalidRequest { .. })));
    // A server that is gone: retryable Unavailable, after the bounded retries.
    let cfg = moto.sdk_config("us-east-1");
    drop(moto);
    let gone = AwsKms::builder(&cfg).max_attempts(2).build();
    let started = Instant::now();
    let e = gone.generate_data_key(&a, &c).await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { retryable: true, .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Many concurrent callers share one backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers() {
    let Some(moto) = moto("concurrent_callers") else { return };
    let kms: Arc<dyn Kms> = moto.kms("us-east-1");
    let key = kms.key_manager().unwrap().create_key(&KeySpec::default()).await.unwrap().key_id;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (kms, key) = (kms.clone(), key.clone());
        tasks.spawn(async move {
            let c = ctx(&[("task", &i.to_string())]);
            let g = kms.generate_data_key(&key, &c).await.unwrap();
            let d = kms.decrypt(&g.wrapped, &c).await.unwrap();
            assert_eq!(d.plaintext.expose_secret(), g.data_key.expose_secret());
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}
/// The same suites against real AWS KMS: `ENVSEAL_TEST_AWS_KMS_KEY=arn:... cargo test -p
/// envseal-kms-aws --test moto -- --ignored real_aws` with credentials in the environment. It
/// creates (and schedules for deletion) two extra keys for the key-management part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real AWS credentials and ENVSEAL_TEST_AWS_KMS_KEY"]
async fn real_aws() {
    let Ok(key) = std::env::var("ENVSEAL_TEST_AWS_KMS_KEY") else {
        let _ = writeln!(std::io::stderr(), "SKIPPED: real_aws: ENVSEAL_TEST_AWS_KMS_KEY is not set");
        return;
    };
    let kms = Arc::new(AwsKms::from_env().await);
    run_conformance_with(kms.clone(), &key, &aws_capabilities()).await;
    aws_crypto_extras(&kms, &key).await;
    run_key_management_conformance_with(kms.clone(), &aws_capabilities()).await;
    aws_key_management_extras(&kms).await;
}
