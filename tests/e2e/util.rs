//! Shared helpers: one sandbox per test (its own temp dir, keystore, TMPDIR and runtime dir),
//! running the real `envseal` binary, and assertions on exit codes, error lines and files that
//! must be left alone.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_envseal");

/// `testdata/` at the root of the workspace.
pub const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata");

/// Variables that would point envseal elsewhere than the sandbox; removed from every child.
const SCRUBBED: &[&str] = &[
    "ENVSEAL_KMS",
    "ENVSEAL_KEY",
    "ENVSEAL_PASSPHRASE",
    "ENVSEAL_MASTER_KEY_FILE",
    "ENVSEAL_HOME",
    "XDG_DATA_HOME",
    "XDG_CONFIG_HOME",
    "ENVSEAL_PROFILE",
    "ENVSEAL_PROFILES",
    "ENVSEAL_AUDIT_LOG",
    "ENVSEAL_AUDIT_KEY",
    "VISUAL",
    "EDITOR",
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "BAO_TOKEN",
];

/// Prefixes of envseal's temporary files: none may survive a command.
pub const TEMP_PREFIXES: &[&str] = &[".envseal-tmp-", ".envseal-edit-"];

/// Reads a file under `testdata/`.
pub fn testdata(rel: &str) -> Vec<u8> {
    let p = Path::new(TESTDATA).join(rel);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One test's world: `root/work` holds the files under test (the child's working directory),
/// `root/home` the keystore (created by envseal on first use), `root/tmp` is `TMPDIR`, `root/run`
/// is `XDG_RUNTIME_DIR`, `root/user` is `HOME` (so nothing can reach the real
/// `~/.local/share`). On drop (when the test did not already fail) it checks that no envseal
/// temp file was left behind anywhere in the sandbox.
pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub work: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    pub runtime: PathBuf,
}

pub fn mkdir_mode(p: &Path, mode: u32) {
    fs::DirBuilder::new().mode(mode).recursive(true).create(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("envseal-e2e-").tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let work = root.join("work");
        let tmp = root.join("tmp");
        let runtime = root.join("run");
        mkdir_mode(&work, 0o755);
        mkdir_mode(&tmp, 0o700);
        mkdir_mode(&runtime, 0o700);
        mkdir_mode(&root.join("user"), 0o700);
        Sandbox { home: root.join("home"), _dir: dir, root, work, tmp, runtime }
    }

    /// A path in the work directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// Writes a file in the work directory and returns its path.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, bytes).unwrap();
        p
    }

    /// Reads a file of the work directory.
    pub fn read(&self, name: &str) -> Vec<u8> {
        let p = self.path(name);
        fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Reads a file of the work directory as text.
    pub fn text(&self, name: &str) -> String {
        String::from_utf8(self.read(name)).unwrap()
    }

    /// The binary as a plain `std::process::Command` with a scrubbed environment pointing into
    /// the sandbox.
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(BIN);
        for v in SCRUBBED {
            c.env_remove(v);
        }
        c.current_dir(&self.work)
            .env("ENVSEAL_HOME", &self.home)
            .env("HOME", self.root.join("user"))
            .env("TMPDIR", &self.tmp)
            .env("XDG_RUNTIME_DIR", &self.runtime);
        c
    }

    /// The binary with a scrubbed environment pointing into the sandbox (stdin: an empty pipe).
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::from_std(self.std_cmd());
        c.timeout(Duration::from_secs(120));
        c
    }

    /// Runs envseal with `args` and an empty stdin.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs envseal with `args`, feeding `stdin`.
    pub fn run_in(&self, args: &[&str], stdin: impl Into<Vec<u8>>) -> Output {
        self.cmd().args(args).write_stdin(stdin.into()).output().unwrap()
    }

    /// Runs envseal and asserts success; returns the output.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_success(&out, args);
        out
    }

    /// Runs envseal with stdin and asserts success.
    #[track_caller]
    pub fn ok_in(&self, args: &[&str], stdin: impl Into<Vec<u8>>) -> Output {
        let out = self.run_in(args, stdin);
        assert_success(&out, args);
        out
    }

    /// Runs envseal, asserts exit `code` with an error line and a hint line; returns stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_error(&out, code, true)
    }

    /// Seals `content` as `name` in place and returns the sealed bytes.
    #[track_caller]
    pub fn seal(&self, name: &str, content: impl AsRef<[u8]>) -> Vec<u8> {
        self.write(name, content);
        self.ok(&["encrypt", name]);
        self.read(name)
    }

    /// `decrypt NAME` to stdout.
    #[track_caller]
    pub fn decrypt(&self, name: &str) -> Vec<u8> {
        self.ok(&["decrypt", name]).stdout
    }

    /// `inspect NAME --json`, parsed.
    #[track_caller]
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", name, "--json"]);
        serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
    }

    /// Every envseal temp file left in the sandbox (work, TMPDIR, runtime dir, keystore).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.root, &mut |p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if TEMP_PREFIXES.iter().any(|pre| name.starts_with(pre)) {
                found.push(p.to_path_buf());
            }
        });
        found
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let left = self.leftovers();
        assert!(left.is_empty(), "envseal left temp files behind: {left:?}");
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        f(&p);
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&p, f);
        }
    }
}

fn describe(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout ({} bytes):\n{}\n--- stderr:\n{}",
        out.status,
        out.stdout.len(),
        String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(2000)]),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
pub fn assert_success(out: &Output, args: &[&str]) {
    assert!(out.status.success(), "envseal {args:?} failed\n{}", describe(out));
}

/// Asserts the exit code, an `envseal: error: ` first line, and (if `hint`) an `envseal: hint: `
/// line. Returns stderr.
#[track_caller]
pub fn assert_error(out: &Output, code: i32, hint: bool) -> String {
    assert_eq!(out.status.code(), Some(code), "wrong exit code\n{}", describe(out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.starts_with("envseal: error: "), "no error line\n{}", describe(out));
    if hint {
        assert!(err.lines().any(|l| l.starts_with("envseal: hint: ")), "no hint line\n{}", describe(out));
    }
    err
}

/// A file's kind, content (or link target) and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>, u32),
    Link(PathBuf),
    Dir(u32),
}

/// Everything under `dir`, by relative path; compare two snapshots to prove nothing changed.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(dir, &mut |p| {
        let m = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(dir).unwrap().to_path_buf();
        let node = if m.file_type().is_symlink() {
            Node::Link(fs::read_link(p).unwrap())
        } else if m.is_dir() {
            Node::Dir(m.mode() & 0o7777)
        } else {
            Node::File(fs::read(p).unwrap(), m.mode() & 0o7777)
        };
        out.insert(rel, node);
    });
    out
}

/// Permission bits of a path.
pub fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Deterministic pseudo-random bytes (SplitMix64), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Splits into lines, each keeping its `\n` (the last may have none).
pub fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.split_inclusive(|b| *b == b'\n').collect()
}

/// Whether `hay` contains `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The lines of two versions of a sealed .env file that differ, ignoring the metadata lines a
/// change must update (`MAC`, `MODIFIED`). Panics if the line counts differ.
pub fn changed_lines(before: &[u8], after: &[u8]) -> Vec<String> {
    let (b, a) = (lines(before), lines(after));
    assert_eq!(b.len(), a.len(), "line count changed");
    b.iter()
        .zip(&a)
        .filter(|(x, y)| x != y)
        .map(|(_, y)| String::from_utf8_lossy(y).into_owned())
        .filter(|l| !l.starts_with("#ENVSEAL_MAC=") && !l.starts_with("#ENVSEAL_MODIFIED="))
        .collect()
}

/// Parses `env -0` output into (name, value) pairs in order.
pub fn parse_env0(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    bytes
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let i = kv.iter().position(|b| *b == b'=').expect("NAME=value");
            (String::from_utf8(kv[..i].to_vec()).unwrap(), kv[i + 1..].to_vec())
        })
        .collect()
}

/// Replaces the first occurrence of `from` (must exist) in `text`.
#[track_caller]
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not found in\n{text}");
    text.replacen(from, to, 1)
}

/// Changes one character at `at` to another base64url character.
pub fn flip_char(text: &str, at: usize) -> String {
    let mut b = text.as_bytes().to_vec();
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

/// Changes one hex digit at `at` to another lowercase hex digit.
pub fn flip_hex(text: &str, at: usize) -> String {
    let mut b = text.as_bytes().to_vec();
    assert!(b[at].is_ascii_hexdigit(), "not a hex digit at {at} in {text:?}");
    b[at] = if b[at] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).unwrap()
}

/// A haystack indexed by its 6-byte windows, for many `contains` queries of needles of 6 bytes
/// or more (a plain search per needle is slow in an unoptimised test build).
pub struct Haystack<'a> {
    bytes: &'a [u8],
    index: std::collections::HashMap<[u8; 6], Vec<usize>>,
}

impl<'a> Haystack<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        let mut index: std::collections::HashMap<[u8; 6], Vec<usize>> = std::collections::HashMap::new();
        for (i, w) in bytes.windows(6).enumerate() {
            index.entry(w.try_into().unwrap()).or_default().push(i);
        }
        Haystack { bytes, index }
    }

    /// Whether `needle` (at least 6 bytes) occurs.
    pub fn contains(&self, needle: &[u8]) -> bool {
        assert!(needle.len() >= 6);
        let key: [u8; 6] = needle[..6].try_into().unwrap();
        self.index.get(&key).is_some_and(|at| at.iter().any(|&i| self.bytes[i..].starts_with(needle)))
    }
}
