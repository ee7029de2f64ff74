//! `envseal rewrap` end to end (issue 7), driving the real binary with a private keystore:
//! rotation then rewrap of .env / JSON / YAML / binary files (only the wrapped keys change),
//! dry runs, idempotent re-runs, another key, adding and removing entries, failure reports, and
//! the kill test: SIGKILL at random moments, then `--resume`; every file always opens.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use envseal_core::container::{self, Preamble};
use envseal_core::{EncryptionContext, Engine, Kms};
use envseal_kms_local::{LocalKms, Unlock};
use envseal_stores::Format;

const BIN: &str = env!("CARGO_BIN_EXE_envseal");

/// A private keystore (ENVSEAL_HOME, mode 0700) and a work directory.
struct Env {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        fs::create_dir(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir(&work).unwrap();
        let e = Self { _tmp: tmp, home, work };
        e.ok(&["init"]);
        e
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(&self.work)
            .env("ENVSEAL_HOME", &self.home)
            .env_remove("ENVSEAL_KMS")
            .env_remove("ENVSEAL_KEY")
            .env_remove("ENVSEAL_MASTER_KEY_FILE")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(o.status.success(), "envseal {args:?}: {}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
        o
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_slice(&self.ok(args).stdout).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// Key id and version of each entry, from `inspect --json` (no KMS call).
    fn versions(&self, name: &str) -> Vec<(String, String)> {
        let v = self.json(&["inspect", name, "--json"]);
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["key_id"].as_str().unwrap().to_string(), k["key_version"].as_str().unwrap().to_string()))
            .collect()
    }

    fn key_id(&self, key: &str) -> String {
        self.json(&["keys", "describe", key, "--json"])["key_id"].as_str().unwrap().to_string()
    }

    fn kms(&self) -> LocalKms {
        LocalKms::open(&self.home, Unlock::MasterKeyFile(None)).unwrap()
    }
}

/// Sealed test files: name → plaintext.
fn make_files(e: &Env, dir: &Path, n: usize) -> BTreeMap<String, Vec<u8>> {
    fs::create_dir_all(dir).unwrap();
    let mut out = BTreeMap::new();
    for i in 0..n {
        let (name, body): (String, Vec<u8>) = match i % 4 {
            0 => (format!("s{i}.env"), format!("DB_PASSWORD=pw-{i}\n# comment\nAPI_KEY=\"k {i}\"\n").into_bytes()),
            1 => (
                format!("c{i}.json"),
                format!("{{\"db\": {{\"password\": \"pw-{i}\", \"port\": {i}}}}}\n").into_bytes(),
            ),
            2 => (format!("y{i}.yaml"), format!("db:\n  password: pw-{i}\n  port: {i}\n").into_bytes()),
            _ => (format!("b{i}.bin"), (0..(3000 + i * 97)).map(|j| (j * 7 + i) as u8).collect()),
        };
        let p = dir.join(&name);
        fs::write(&p, &body).unwrap();
        let p = p.to_str().unwrap();
        if name.ends_with(".bin") {
            e.ok(&["encrypt", p, "-o", &format!("{p}.sealed")]);
            fs::remove_file(p).unwrap();
            out.insert(format!("{name}.sealed"), body);
        } else {
            e.ok(&["encrypt", p]);
            out.insert(name, body);
        }
    }
    out
}

/// Opens a sealed file in process (container or value-level); returns its plaintext values
/// (the whole body for containers) and its entries' versions.
fn open_in_process(kms: &LocalKms, path: &Path) -> Result<(Vec<u8>, Vec<String>), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let kmses: [&dyn Kms; 1] = [kms];
    if container::is_container(&bytes) {
        let (p, _) = Preamble::parse(&bytes).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        rt.block_on(container::open(
            &kmses,
            &EncryptionContext::new(),
            &envseal_core::entries::Trust::Discovery,
            Engine::default(),
            &bytes[..],
            &mut out,
        ))
        .map_err(|e| e.to_string())?;
        return Ok((out, p.entries.iter().map(|e| e.key_version.clone()).collect()));
    }
    let format = Format::from_path(path).ok_or("unknown format")?;
    let doc = envseal_stores::parse(format, &bytes).map_err(|e| e.to_string())?;
    let u = rt
        .block_on(envseal_stores::unlock(
            doc.as_ref(),
            &kmses,
            &EncryptionContext::new(),
            &envseal_core::entries::Trust::Discovery,
            Engine::default(),
        ))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (p, _, v) in u.values(doc.as_ref()).map_err(|e| e.to_string())? {
        out.extend_from_slice(p.display().as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.expose_secret());
        out.push(b'\n');
    }
    Ok((out, u.meta.keys.iter().map(|k| k.key_version.clone()).collect()))
}

/// The file's bytes without what a rewrap may change: the wrapped keys (the `#ENVSEAL_KEY=`
/// lines of .env, the `keys` of JSON/YAML metadata, the entries of a container).
fn without_keys(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    if container::is_container(&bytes) {
        let (p, n) = Preamble::parse(&bytes).unwrap();
        let mut out = p.header.encode();
        out.extend_from_slice(&p.commitment);
        out.extend_from_slice(&p.header_mac);
        out.extend_from_slice(&bytes[n..]);
        return out;
    }
    let text = String::from_utf8(bytes).unwrap();
    let name = path.to_str().unwrap();
    if name.ends_with(".env") {
        return text.lines().filter(|l| !l.starts_with("#ENVSEAL_KEY=")).collect::<Vec<_>>().join("\n").into_bytes();
    }
    if name.ends_with(".yaml") {
        // Keys are a YAML list under `envseal.keys`: drop that block (indented lines after it).
        let mut out = Vec::new();
        let mut skipping = None;
        for l in text.lines() {
            let indent = l.len() - l.trim_start().len();
            if let Some(i) = skipping {
                if indent > i || l.trim_start().starts_with("- ") && indent == i {
                    continue;
                }
                skipping = None;
            }
            if l.trim_start().starts_with("keys:") {
                skipping = Some(indent);
                continue;
            }
            out.push(l);
        }
        return out.join("\n").into_bytes();
    }
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["envseal"].as_object_mut().unwrap().remove("keys");
    serde_json::to_vec(&v).unwrap()
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(tmp_files(&e.path()));
        } else if e.file_name().to_string_lossy().starts_with(".envseal-tmp-") {
            out.push(e.path());
        }
    }
    out
}

fn snapshot(dir: &Path, names: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    names.keys().map(|n| (n.clone(), fs::read(dir.join(n)).unwrap())).collect()
}

#[test]
fn rotate_then_rewrap_to_latest_changes_only_the_keys() {
    let e = Env::new();
    let dir = e.path("secrets");
    let files = make_files(&e, &dir, 12);
    let kms = e.kms();
    let plain: BTreeMap<_, _> =
        files.keys().map(|n| (n.clone(), open_in_process(&kms, &dir.join(n)).unwrap().0)).collect();
    let stripped: BTreeMap<_, _> = files.keys().map(|n| (n.clone(), without_keys(&dir.join(n)))).collect();
    e.ok(&["keys", "rotate", "alias/default"]);

    // Dry run: lists every file as behind, changes nothing, writes no journal.
    let before = snapshot(&dir, &files);
    let v = e.json(&["rewrap", "-r", "secrets", "--dry-run", "--json"]);
    assert_eq!(v["would_change"], 12, "{v}");
    assert_eq!(v["rewrapped"], 0);
    assert!(v["files"][0]["plan"][0].as_str().unwrap().contains("-> local"), "{v}");
    assert_eq!(snapshot(&dir, &files), before, "dry run changed a file");
    assert!(!e.work.join(".secrets.envseal-rewrap.jsonl").exists());

    let t = Instant::now();
    let v = e.json(&["rewrap", "-r", "secrets", "--to-latest", "--jobs", "4", "--json"]);
    eprintln!("rewrap of 12 files: {:?}", t.elapsed());
    assert_eq!((v["rewrapped"].as_u64(), v["failed"].as_u64(), v["exit_code"].as_u64()), (Some(12), Some(0), Some(0)));
    for n in files.keys() {
        let p = dir.join(n);
        let (pt, versions) = open_in_process(&kms, &p).unwrap();
        assert_eq!(pt, plain[n], "{n}: values changed");
        assert_eq!(versions, ["2"], "{n}");
        assert_eq!(without_keys(&p), stripped[n], "{n}: bytes other than the keys changed");
        assert_eq!(e.versions(p.to_str().unwrap())[0].1, "2", "inspect shows version 2");
    }
    assert!(tmp_files(&e.work).is_empty(), "temp files left after a normal run");
    let journal = fs::read_to_string(e.work.join(".secrets.envseal-rewrap.jsonl")).unwrap();
    assert_eq!(journal.lines().filter(|l| l.contains("\"rewrapped\"")).count(), 12);

    // A second run skips everything and changes no byte.
    let after = snapshot(&dir, &files);
    let v = e.json(&["rewrap", "-r", "secrets", "--json"]);
    assert_eq!((v["already_at_target"].as_u64(), v["rewrapped"].as_u64()), (Some(12), Some(0)));
    assert_eq!(snapshot(&dir, &files), after);
    // The old version can be retired now.
    e.ok(&["keys", "set-min-version", "alias/default", "2"]);
    for n in files.keys() {
        assert_eq!(open_in_process(&e.kms(), &dir.join(n)).unwrap().0, plain[n]);
    }
    // Plain text output lists files.
    let o = e.ok(&["rewrap", "-r", "secrets"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("12 already at the target"), "{err}");
}

#[test]
fn to_another_key_then_add_and_remove_entries() {
    let e = Env::new();
    let dir = e.path("d");
    let files = make_files(&e, &dir, 4);
    let kms = e.kms();
    let plain: BTreeMap<_, _> =
        files.keys().map(|n| (n.clone(), open_in_process(&kms, &dir.join(n)).unwrap().0)).collect();
    let first = e.key_id("alias/default");
    e.ok(&["keys", "create", "--alias", "alias/next"]);
    let next = e.key_id("alias/next");

    let v = e.json(&["rewrap", "-r", "d", "--to", "alias/next", "--json"]);
    assert_eq!(v["rewrapped"], 4, "{v}");
    assert_eq!(v["data_key_passed_through"], false);
    for n in files.keys() {
        let p = dir.join(n);
        assert_eq!(e.versions(p.to_str().unwrap()), [(next.clone(), "1".to_string())]);
        assert_eq!(open_in_process(&e.kms(), &p).unwrap().0, plain[n]);
    }
    // Again: already there.
    assert_eq!(e.json(&["rewrap", "-r", "d", "--to", "alias/next", "--json"])["already_at_target"], 4);

    // Add an entry for the first key (server-side: same keystore), then remove the other one.
    let v = e.json(&["rewrap", "-r", "d", "--add-key", "local:#alias/default", "--json"]);
    assert_eq!(v["rewrapped"], 4, "{v}");
    let name = dir.join(files.keys().next().unwrap());
    let name = name.to_str().unwrap();
    assert_eq!(e.versions(name), [(next.clone(), "1".to_string()), (first.clone(), "1".to_string())]);
    assert_eq!(e.json(&["rewrap", "-r", "d", "--add-key", "local:#alias/default", "--json"])["already_at_target"], 4);
    let v = e.json(&["rewrap", "-r", "d", "--remove-key", &next, "--json"]);
    assert_eq!(v["rewrapped"], 4);
    for n in files.keys() {
        let p = dir.join(n);
        assert_eq!(e.versions(p.to_str().unwrap()), [(first.clone(), "1".to_string())]);
        assert_eq!(open_in_process(&e.kms(), &p).unwrap().0, plain[n]);
    }
    // Removing the last entry is refused, per file, and nothing changes.
    let before = fs::read(name).unwrap();
    let o = e.run(&["rewrap", name, "--remove-key", &first]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to remove the last"));
    assert_eq!(fs::read(name).unwrap(), before);

    // An entry in another keystore: the data key passes through this process, and says so.
    let other = e.work.join("other-home");
    fs::create_dir(&other).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o700)).unwrap();
    let uri = format!("local:{}#alias/default", other.display());
    let o = e.ok(&["rewrap", name, "--add-key", &uri]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("passes through this process"));
    assert_eq!(e.versions(name).len(), 2);
    let other_kms = LocalKms::open(&other, Unlock::MasterKeyFile(None)).unwrap();
    // Only the other keystore's entry can open it there.
    assert_eq!(open_in_process(&other_kms, Path::new(name)).unwrap().0, plain[files.keys().next().unwrap()]);
}

#[test]
fn failures_are_listed_and_set_the_exit_code() {
    let e = Env::new();
    let dir = e.path("f");
    let files = make_files(&e, &dir, 4);
    e.ok(&["keys", "rotate", "alias/default"]);
    // A tampered container: its commitment no longer matches the data key.
    let bin = dir.join(files.keys().find(|n| n.ends_with(".sealed")).unwrap());
    let mut bytes = fs::read(&bin).unwrap();
    let (p, _) = Preamble::parse(&bytes).unwrap();
    let pos = p.encode().unwrap().len() - 64;
    bytes[pos] ^= 1;
    fs::write(&bin, &bytes).unwrap();
    let o = e.run(&["rewrap", "-r", "f", "--json"]);
    assert_eq!(o.status.code(), Some(7), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["rewrapped"].as_u64(), v["failed"].as_u64()), (Some(3), Some(1)));
    let failed: Vec<_> = v["files"].as_array().unwrap().iter().filter(|f| f["status"] == "failed").collect();
    assert_eq!(failed[0]["path"].as_str().unwrap(), bin.to_str().unwrap());
    assert!(failed[0]["error"].as_str().unwrap().contains("commitment"));
    assert_eq!(fs::read(&bin).unwrap(), bytes, "a failed file is left as it was");

    // A named file that is not sealed fails (exit 3); in a -r walk it is ignored.
    fs::write(dir.join("plain.env"), "A=1\n").unwrap();
    let o = e.run(&["rewrap", dir.join("plain.env").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("plain.env"));
    fs::remove_file(&bin).unwrap();
    let v = e.json(&["rewrap", "-r", "f", "--json"]);
    assert_eq!((v["already_at_target"].as_u64(), v["ignored_not_sealed"].as_u64()), (Some(3), Some(1)));
    // A directory without -r is a usage error.
    assert_eq!(e.run(&["rewrap", "f"]).status.code(), Some(2));
}

/// A small deterministic generator for the kill delays (no extra dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn sigkill_at_random_moments_then_resume() {
    let e = Env::new();
    let template = e.path("template");
    let files = make_files(&e, &template, 40);
    let kms = e.kms();
    let plain: BTreeMap<_, _> =
        files.keys().map(|n| (n.clone(), open_in_process(&kms, &template.join(n)).unwrap().0)).collect();
    e.ok(&["keys", "rotate", "alias/default"]);
    let trials: u64 = std::env::var("ENVSEAL_KILL_TRIALS").ok().and_then(|t| t.parse().ok()).unwrap_or(60);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("kill test: {trials} trials, seed {seed}");
    let mut rng = Lcg(seed);
    // Calibrate: draw the kill delays (0-200 ms) within the time a whole uninterrupted run
    // takes here, so that most kills land mid-way rather than after the end.
    let cal = e.path("calibrate");
    fs::create_dir(&cal).unwrap();
    for n in files.keys() {
        fs::copy(template.join(n), cal.join(n)).unwrap();
    }
    let t = Instant::now();
    e.ok(&["rewrap", "-r", cal.to_str().unwrap(), "--jobs", "4", "--journal", e.path("cal.jsonl").to_str().unwrap()]);
    let window = (t.elapsed().as_millis() as u64 * 11 / 10).clamp(5, 200);
    eprintln!("kill test: a whole run takes {:?}; delays drawn in 0..={window} ms", t.elapsed());
    let (mut partial, mut untouched, mut complete) = (0, 0, 0);
    for trial in 0..trials {
        let dir = e.path(&format!("t{trial}"));
        fs::create_dir(&dir).unwrap();
        for n in files.keys() {
            fs::copy(template.join(n), dir.join(n)).unwrap();
        }
        let journal = e.path(&format!("t{trial}.jsonl"));
        let args = ["rewrap", "-r", dir.to_str().unwrap(), "--jobs", "4", "--journal", journal.to_str().unwrap()];
        let mut child = e.cmd(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let delay = Duration::from_millis(rng.next() % (window + 1));
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        // Every file opens, to its original plaintext, under either the old or the new version.
        let mut new = 0;
        for n in files.keys() {
            let (pt, versions) = open_in_process(&kms, &dir.join(n))
                .unwrap_or_else(|err| panic!("trial {trial} ({delay:?}): {n} does not open: {err}"));
            assert_eq!(pt, plain[n], "trial {trial}: {n}");
            assert!(versions == ["1"] || versions == ["2"], "trial {trial}: {n}: {versions:?}");
            new += (versions == ["2"]) as usize;
        }
        match new {
            0 => untouched += 1,
            40 => complete += 1,
            _ => partial += 1,
        }

        // --resume completes the job; temp files of the killed run are removed.
        let o = e.ok(&[&args[..], &["--resume", "--json"]].concat());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["failed"], 0, "trial {trial}: {v}");
        let done = v["rewrapped"].as_u64().unwrap()
            + v["already_at_target"].as_u64().unwrap()
            + v["resumed"].as_u64().unwrap();
        assert_eq!(done, 40, "trial {trial}: {v}");
        for n in files.keys() {
            let (pt, versions) = open_in_process(&kms, &dir.join(n)).unwrap();
            assert_eq!((pt, versions), (plain[n].clone(), vec!["2".to_string()]), "trial {trial}: {n}");
        }
        assert!(tmp_files(&dir).is_empty(), "trial {trial}: temp files left after --resume");
        fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!("kill test: {untouched} killed before any file, {partial} mid-way, {complete} after all files");
    assert!(partial > 0 || trials < 20, "no trial killed the job mid-way; the delays need tuning");
}

/// `--shard I/N` (issue 17): four workers started at once on the same tree split it, each file
/// rewrapped by exactly one of them, none left behind; each keeps its own journal.
#[test]
fn four_shards_rewrap_every_file_exactly_once() {
    let e = Env::new();
    let dir = e.path("secrets");
    let files = make_files(&e, &dir, 24);
    e.ok(&["keys", "rotate", "alias/default"]);
    let workers: Vec<_> = (0..4)
        .map(|i| {
            e.cmd(&["rewrap", "-r", "secrets", "--to-latest", "--shard", &format!("{i}/4"), "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    for (i, w) in workers.into_iter().enumerate() {
        let o = w.wait_with_output().unwrap();
        assert!(o.status.success(), "shard {i}: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["failed"], 0, "shard {i}: {v}");
        for f in v["files"].as_array().unwrap() {
            assert_eq!(f["status"], "rewrapped", "shard {i}: {f}");
            let name = Path::new(f["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            *taken.entry(name).or_default() += 1;
        }
        assert!(e.work.join(format!(".secrets.shard-{i}-of-4.envseal-rewrap.jsonl")).is_file(), "shard {i} journal");
    }
    let expected: BTreeMap<String, usize> = files.keys().map(|n| (n.clone(), 1)).collect();
    assert_eq!(taken, expected, "every file rewrapped by exactly one shard");
    let kms = e.kms();
    for n in files.keys() {
        assert_eq!(open_in_process(&kms, &dir.join(n)).unwrap().1, ["2"], "{n}");
    }
    let o = e.run(&["rewrap", "-r", "secrets", "--shard", "4/4"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}
