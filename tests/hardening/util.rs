//! Helpers: a sandbox per test (work dir, keystore, TMPDIR, runtime dir), running the binary,
//! file stamps (bytes and mtime), directory listings, a seeded RNG.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

/// The binary under test; `ENVSEAL_HARDENING_BIN` points the ignored long tests at another
/// build (e.g. a release binary).
pub fn bin() -> PathBuf {
    std::env::var_os("ENVSEAL_HARDENING_BIN").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_envseal").into())
}

/// Variables that would point envseal outside the sandbox.
const SCRUBBED: &[&str] = &[
    "ENVSEAL_KMS",
    "ENVSEAL_KEY",
    "ENVSEAL_PASSPHRASE",
    "ENVSEAL_MASTER_KEY_FILE",
    "ENVSEAL_HOME",
    "XDG_DATA_HOME",
    "VISUAL",
    "EDITOR",
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "BAO_TOKEN",
    "ENVSEAL_PKCS11_URI",
];

/// One test's world: `work` (the child's cwd), `home` (keystore), `tmp` (TMPDIR), `run`
/// (XDG_RUNTIME_DIR).
pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub work: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    pub runtime: PathBuf,
}

pub fn mkdir_mode(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("envseal-hardening-").tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (work, tmp, runtime) = (root.join("work"), root.join("tmp"), root.join("run"));
        mkdir_mode(&work, 0o755);
        mkdir_mode(&tmp, 0o700);
        mkdir_mode(&runtime, 0o700);
        mkdir_mode(&root.join("user"), 0o700);
        Sandbox { home: root.join("home"), _dir: dir, root, work, tmp, runtime }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(&p, bytes).unwrap();
        p
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The binary with a scrubbed environment pointing into the sandbox; stdin is null.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        for v in SCRUBBED {
            c.env_remove(v);
        }
        c.current_dir(&self.work)
            .env("ENVSEAL_HOME", &self.home)
            .env("HOME", self.root.join("user"))
            .env("TMPDIR", &self.tmp)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .stdin(Stdio::null());
        c
    }

    pub fn run_env(&self, args: &[String], env: &[(String, OsString)]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        output_with_timeout(c, std::time::Duration::from_secs(60))
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "envseal {args:?}: {}", describe(&out));
        out
    }

    /// Seals `content` as `name` in place; returns the sealed bytes.
    #[track_caller]
    pub fn seal(&self, name: &str, content: impl AsRef<[u8]>, extra: &[&str]) -> Vec<u8> {
        self.write(name, content);
        let mut args = vec!["encrypt", name];
        args.extend_from_slice(extra);
        self.ok(&args);
        self.read(name)
    }

    #[track_caller]
    pub fn decrypt(&self, name: &str) -> Vec<u8> {
        self.ok(&["decrypt", name]).stdout
    }
}

/// Runs a command, killing it after `limit` (a FIFO or a blocked read must not hang the suite).
pub fn output_with_timeout(mut c: Command, limit: std::time::Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let (to, te) = (read(Box::new(out)), read(Box::new(err)));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("envseal hung for more than {limit:?}: {:?}", c);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    Output { status, stdout: to.join().unwrap(), stderr: te.join().unwrap() }
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ({} bytes)\n--- stderr:\n{}",
        out.status,
        out.stdout.len(),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A file's bytes and modification time (None: absent).
pub fn stamp(p: &Path) -> Option<(Vec<u8>, SystemTime)> {
    let m = fs::symlink_metadata(p).ok()?;
    if m.file_type().is_symlink() || !m.is_file() {
        return Some((
            fs::read_link(p).map(|l| l.into_os_string().into_encoded_bytes()).unwrap_or_default(),
            m.modified().ok()?,
        ));
    }
    Some((fs::read(p).ok()?, m.modified().ok()?))
}

/// Names in a directory (not recursive), with a `/` after directories and `@` after symlinks.
pub fn listing(dir: &Path) -> BTreeSet<String> {
    let Ok(rd) = fs::read_dir(dir) else { return BTreeSet::new() };
    rd.flatten()
        .map(|e| {
            let t = e.file_type().unwrap();
            let mut n = e.file_name().to_string_lossy().into_owned();
            if t.is_symlink() {
                n.push('@');
            } else if t.is_dir() {
                n.push('/');
            }
            n
        })
        .collect()
}

/// Whether a name is one of envseal's temp files, or looks like any temp file.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(".envseal-") && !name.ends_with(".envseal-rewrap.jsonl") || name.contains(".tmp")
}

pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Deterministic pseudo-random numbers (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// Whether `hay` contains `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
