//! SoftHSM2 harness shared by `tests/softhsm.rs` and `examples/latency.rs`.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when the module is initialized, and setting an
//! environment variable in a running (multi-threaded) process needs `unsafe`, which this crate
//! forbids. So each test creates its own token directory and re-runs itself in a child process
//! with `SOFTHSM2_CONF` set: every test gets a fresh token and a fresh module instance (no
//! shared login state between tests).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use envseal_kms_pkcs11::{DEFAULT_MODULES, Pin, Pkcs11Kms, Pkcs11Options, Pkcs11Uri};

/// Token label.
pub const LABEL: &str = "envseal-test";
/// User PIN: distinctive, so that leak checks can search for it.
pub const PIN: &str = "pin-7f3a91c2";
/// Security officer PIN.
pub const SO_PIN: &str = "so-pin-5d8e20b4";
/// Set in the child: the token directory.
pub const CHILD_ENV: &str = "ENVSEAL_PKCS11_TEST_TOKEN_DIR";
/// `1` makes a missing SoftHSM2 a failure instead of a skip (CI).
pub const REQUIRE_ENV: &str = "ENVSEAL_REQUIRE_SERVERS";

/// The SoftHSM2 module, if installed.
pub fn module() -> Option<PathBuf> {
    DEFAULT_MODULES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Why SoftHSM2 cannot be used here, if it cannot.
pub fn unavailable() -> Option<String> {
    if module().is_none() {
        return Some(format!("libsofthsm2.so not found (looked in {})", DEFAULT_MODULES.join(", ")));
    }
    match Command::new("softhsm2-util").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("softhsm2-util not found on PATH".into()),
    }
}

/// Writes `dir/softhsm2.conf` (tokens in `dir/tokens`) and initializes a token labelled
/// [`LABEL`] with [`SO_PIN`] and [`PIN`]. Returns the configuration file.
pub fn init_token(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).expect("create the token directory");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    )
    .expect("write softhsm2.conf");
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", LABEL, "--so-pin", SO_PIN, "--pin", PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("run softhsm2-util");
    assert!(
        out.status.success(),
        "softhsm2-util --init-token failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    conf
}

/// The token a test runs against (in the child process).
pub struct TestToken {
    /// The token directory.
    pub dir: PathBuf,
    /// The module.
    pub module: PathBuf,
}

/// Call first in every SoftHSM2 test, with the test's name (its path in the test binary).
///
/// In the child, returns the token. In the parent, creates a token, runs this one test in a
/// child process with `SOFTHSM2_CONF` set, fails if it fails, and returns `None`. Without
/// SoftHSM2 it prints a loud `SKIPPED:` line and returns `None`, or fails when
/// `ENVSEAL_REQUIRE_SERVERS=1`.
pub fn enter(test: &str) -> Option<TestToken> {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let module = module().expect("the parent found the module");
        return Some(TestToken { dir: PathBuf::from(dir), module });
    }
    if let Some(reason) = unavailable() {
        if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!("SoftHSM2 is required ({REQUIRE_ENV}=1) but {reason}: apt-get install -y softhsm2");
        }
        eprintln!(
            "SKIPPED: {test}: SoftHSM2 is not installed ({reason}); `apt-get install -y softhsm2` to run it, {REQUIRE_ENV}=1 makes this a failure"
        );
        return None;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let conf = init_token(tmp.path());
    let out = Command::new(std::env::current_exe().expect("test binary path"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD_ENV, tmp.path())
        .env_remove("ENVSEAL_PKCS11_PIN")
        .env_remove("ENVSEAL_PKCS11_MODULE")
        .output()
        .expect("run the test in a child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} failed under SoftHSM2 (exit {:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status.code()
    );
    eprint!("{stderr}");
    None
}

impl TestToken {
    /// `pkcs11:token=envseal-test?module-path=...`.
    pub fn uri(&self) -> Pkcs11Uri {
        Pkcs11Uri::for_token(LABEL).with_module_path(&self.module)
    }

    /// A backend logged in with the right PIN.
    pub fn kms(&self) -> Pkcs11Kms {
        self.kms_with_pin(PIN)
    }

    /// A backend with the given PIN.
    pub fn kms_with_pin(&self, pin: &str) -> Pkcs11Kms {
        Pkcs11Kms::open_with(self.uri(), Pkcs11Options::new().pin(Pin::new(pin))).expect("open the SoftHSM2 token")
    }

    /// A raw cryptoki session on the token, logged in as the user, to inspect objects.
    pub fn raw_session(&self) -> Session {
        let ctx = Pkcs11::new(&self.module).expect("load the module");
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => panic!("C_Initialize: {e}"),
        }
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).is_ok_and(|i| i.label() == LABEL))
            .expect("the test token");
        let session = ctx.open_rw_session(slot).unwrap();
        match session.login(UserType::User, Some(&AuthPin::from(PIN.to_string()))) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => panic!("C_Login: {e}"),
        }
        session
    }
}

/// Runs a future on a two-worker Tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(f)
}
