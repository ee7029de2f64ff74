//! SIGKILL crash safety: `encrypt` (in place), `set`, `edit` (scripted editor) and `rewrap`
//! (after `keys rotate`) killed after a random delay between 0 and about their measured
//! duration. After each kill: every file is byte-identical to its old version or is a valid
//! new version with the expected content; no temp file holding plaintext is left (work dir,
//! the child's TMPDIR, its runtime dir, /dev/shm); the next run of the command succeeds.
//! The seed is printed; `HARDENING_SEED=N` replays a run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Counts for one command.
#[derive(Default, Debug)]
struct Tally {
    trials: u32,
    finished_before_kill: u32,
    unchanged: u32,
    replaced: u32,
    temp_left: u32,
    typical_ms: u128,
}

/// Whether a process other than a zombie is still in process group `pgid`.
fn group_alive(pgid: u32) -> bool {
    let Ok(rd) = fs::read_dir("/proc") else { return false };
    rd.flatten().any(|e| {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else { return false };
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else { return false };
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
    })
}

/// Starts `cmd` in its own process group, SIGKILLs the envseal process after `delay` (the
/// group's other members, e.g. an editor, finish on their own), waits for the group to drain.
/// Returns whether envseal had already exited.
fn kill_after(mut cmd: Command, delay: Duration) -> bool {
    cmd.process_group(0).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let pgid = child.id();
    std::thread::sleep(delay);
    let done = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    let start = Instant::now();
    while group_alive(pgid) {
        assert!(start.elapsed() < Duration::from_secs(20), "process group {pgid} did not drain");
        std::thread::sleep(Duration::from_millis(10));
    }
    done
}

/// Median duration of a few unkilled runs.
fn measure(mut run: impl FnMut() -> Duration) -> Duration {
    let mut t: Vec<Duration> = (0..3).map(|_| run()).collect();
    t.sort();
    t[1]
}

/// Temp files after a kill: envseal's `.envseal-tmp-*` beside the target (sealed content only)
/// are counted and removed; anything holding `marker` fails; the child's TMPDIR must be empty.
fn check_leftovers(s: &Sandbox, dir: &Path, marker: &[u8], tally: &mut Tally) {
    for name in listing(dir) {
        if is_temp_name(&name) {
            let p = dir.join(&name);
            let bytes = fs::read(&p).unwrap_or_default();
            assert!(!contains(&bytes, marker), "plaintext left in temp file {}", p.display());
            assert!(name.starts_with(".envseal-tmp-"), "unexpected temp file {}", p.display());
            tally.temp_left += 1;
            fs::remove_file(&p).unwrap();
        }
    }
    let tmp = listing(&s.tmp);
    assert!(tmp.is_empty(), "left in the child's TMPDIR: {tmp:?}");
    for d in [s.runtime.as_path(), Path::new("/dev/shm")] {
        for name in listing(d) {
            if name.starts_with(".envseal-") {
                let bytes = fs::read(d.join(&name)).unwrap_or_default();
                assert!(!contains(&bytes, marker), "plaintext left in {}/{name}", d.display());
            }
        }
    }
}

fn delay(rng: &mut Rng, typical: Duration) -> Duration {
    Duration::from_micros(rng.below(typical.as_micros() as u64 * 6 / 5 + 1))
}

#[test]
fn sigkill_at_random_moments() {
    let seed = std::env::var("HARDENING_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash test seed: {seed} (HARDENING_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let s = Sandbox::new();
    s.ok(&["init"]);
    let marker = format!("crash-marker-{seed:x}");
    let started = Instant::now();
    let enc = encrypt_trials(&s, &mut rng, &marker, 60);
    let set = set_trials(&s, &mut rng, &marker, 50);
    let edit = edit_trials(&s, &mut rng, &marker, 40);
    let rewrap = rewrap_trials(&s, &mut rng, &marker, 50);
    let total = [&enc, &set, &edit, &rewrap].iter().map(|t| t.trials).sum::<u32>();
    eprintln!("crash test: {total} trials in {:.1} s (seed {seed})", started.elapsed().as_secs_f64());
    for (name, t) in [("encrypt --in-place", &enc), ("set", &set), ("edit", &edit), ("rewrap", &rewrap)] {
        eprintln!("  {name:<18} {t:?}");
    }
    assert!(total >= 200);
}

fn encrypt_trials(s: &Sandbox, rng: &mut Rng, marker: &str, n: u32) -> Tally {
    let mut t = Tally::default();
    let env_plain: Vec<u8> = (0..200).map(|i| format!("K{i}={marker}-value-{i}\n")).collect::<String>().into_bytes();
    let mut bin_plain = rng.bytes(1 << 20);
    for at in (0..bin_plain.len() - 64).step_by(65536) {
        bin_plain[at..at + marker.len()].copy_from_slice(marker.as_bytes());
    }
    let typical = measure(|| {
        s.write("m.env", &env_plain);
        let st = Instant::now();
        s.ok(&["encrypt", "m.env"]);
        st.elapsed()
    });
    t.typical_ms = typical.as_millis();
    for i in 0..n {
        let (name, plain) = if i % 2 == 0 { ("c.env", &env_plain) } else { ("c.bin", &bin_plain) };
        s.write(name, plain);
        let mut c = s.cmd();
        c.args(["encrypt", name]);
        t.trials += 1;
        t.finished_before_kill += kill_after(c, delay(rng, typical)) as u32;
        check_leftovers(s, &s.work, marker.as_bytes(), &mut t);
        let now = s.read(name);
        let out = s.cmd().args(["encrypt", name]).output().unwrap();
        if &now == plain {
            t.unchanged += 1;
            assert!(out.status.success(), "re-run after a kill: {}", describe(&out));
        } else {
            t.replaced += 1;
            assert_eq!(&s.decrypt(name), plain, "trial {i}: {name} is a valid sealed version");
            // Sealed already: the re-run says so (exit 3) and changes nothing.
            assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
            assert_eq!(s.read(name), now);
        }
        assert_eq!(&s.decrypt(name), plain);
    }
    t
}

fn set_trials(s: &Sandbox, rng: &mut Rng, marker: &str, n: u32) -> Tally {
    let mut t = Tally::default();
    let plain: String = (0..50).map(|i| format!("K{i}={marker}-value-{i}\n")).collect();
    s.seal("s.env", format!("A=start\n{plain}"), &[]);
    let typical = measure(|| {
        let st = Instant::now();
        s.ok(&["set", "s.env", "A", "start"]);
        st.elapsed()
    });
    t.typical_ms = typical.as_millis();
    let mut current = "start".to_string();
    for i in 0..n {
        let old = s.read("s.env");
        let new = format!("value-{i}");
        let mut c = s.cmd();
        c.args(["set", "s.env", "A", &new]);
        t.trials += 1;
        t.finished_before_kill += kill_after(c, delay(rng, typical)) as u32;
        check_leftovers(s, &s.work, marker.as_bytes(), &mut t);
        let got = s.decrypt("s.env");
        if s.read("s.env") == old {
            t.unchanged += 1;
            assert_eq!(got, format!("A={current}\n{plain}").into_bytes());
        } else {
            t.replaced += 1;
            assert_eq!(got, format!("A={new}\n{plain}").into_bytes(), "trial {i}: a valid new version");
        }
        s.ok(&["set", "s.env", "A", &new]);
        current = new;
        assert_eq!(s.decrypt("s.env"), format!("A={current}\n{plain}").into_bytes());
    }
    t
}

fn edit_trials(s: &Sandbox, rng: &mut Rng, marker: &str, n: u32) -> Tally {
    let mut t = Tally::default();
    let editor = s.root.join("crash-editor.sh");
    fs::write(&editor, "#!/bin/sh\nsed -i \"s/^A=.*/A=edited-$EDIT_N/\" \"$1\"\n").unwrap();
    fs::set_permissions(&editor, fs::Permissions::from_mode(0o755)).unwrap();
    let plain: String = (0..50).map(|i| format!("K{i}={marker}-value-{i}\n")).collect();
    s.seal("e.env", format!("A=start\n{plain}"), &[]);
    let edit = |n: &str| {
        let mut c = s.cmd();
        c.args(["edit", "e.env"]).env("EDITOR", &editor).env("EDIT_N", n);
        c
    };
    let mut k = 0;
    let typical = measure(|| {
        k += 1;
        let st = Instant::now();
        let out = edit(&format!("m{k}")).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        st.elapsed()
    });
    t.typical_ms = typical.as_millis();
    let mut current = format!("edited-m{k}");
    for i in 0..n {
        let old = s.read("e.env");
        let new = format!("{i}");
        t.trials += 1;
        t.finished_before_kill += kill_after(edit(&new), delay(rng, typical)) as u32;
        check_leftovers(s, &s.work, marker.as_bytes(), &mut t);
        let got = s.decrypt("e.env");
        if s.read("e.env") == old {
            t.unchanged += 1;
            assert_eq!(got, format!("A={current}\n{plain}").into_bytes());
        } else {
            t.replaced += 1;
            assert_eq!(got, format!("A=edited-{new}\n{plain}").into_bytes(), "trial {i}: a valid new version");
        }
        let out = edit(&new).output().unwrap();
        assert!(out.status.success(), "re-run after a kill: {}", describe(&out));
        current = format!("edited-{new}");
        assert_eq!(s.decrypt("e.env"), format!("A={current}\n{plain}").into_bytes());
    }
    t
}

fn rewrap_trials(s: &Sandbox, rng: &mut Rng, marker: &str, n: u32) -> Tally {
    let mut t = Tally::default();
    let dir = s.path("rw");
    fs::create_dir_all(&dir).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..6 {
        let plain = format!("A={marker}-{i}\nB=second-{i}\n").into_bytes();
        files.push((format!("rw/f{i}.env"), plain));
    }
    files.push(("rw/c.json".into(), format!("{{\"a\":\"{marker}\"}}").into_bytes()));
    let mut bin = rng.bytes(300_000);
    bin[1000..1000 + marker.len()].copy_from_slice(marker.as_bytes());
    files.push(("rw/b.bin".into(), bin));
    for (name, plain) in &files {
        s.seal(name, plain, &[]);
    }
    let journal = s.path(".rw.envseal-rewrap.jsonl");
    let typical = measure(|| {
        s.ok(&["keys", "rotate", "alias/default"]);
        let _ = fs::remove_file(&journal);
        let st = Instant::now();
        s.ok(&["rewrap", "-r", "rw", "--to-latest"]);
        st.elapsed()
    });
    t.typical_ms = typical.as_millis();
    for i in 0..n {
        s.ok(&["keys", "rotate", "alias/default"]);
        // A new rotation is a new job: the journal of the last one must not mark files done.
        let _ = fs::remove_file(&journal);
        let before: Vec<Vec<u8>> = files.iter().map(|(f, _)| s.read(f)).collect();
        let mut c = s.cmd();
        c.args(["rewrap", "-r", "rw", "--to-latest"]);
        t.trials += 1;
        t.finished_before_kill += kill_after(c, delay(rng, typical)) as u32;
        // Stale temp files are left for --resume to remove: check them, but keep them.
        for name in listing(&dir) {
            if is_temp_name(&name) {
                assert!(name.starts_with(".envseal-tmp-"), "unexpected temp file {name}");
                assert!(!contains(&fs::read(dir.join(&name)).unwrap(), marker.as_bytes()), "plaintext in {name}");
                t.temp_left += 1;
            }
        }
        assert!(listing(&s.tmp).is_empty(), "left in the child's TMPDIR");
        let mut changed = 0;
        for ((f, plain), old) in files.iter().zip(&before) {
            if &s.read(f) != old {
                changed += 1;
            }
            assert_eq!(&s.decrypt(f), plain, "trial {i}: {f} opens after the kill");
        }
        if changed == 0 {
            t.unchanged += 1;
        } else {
            t.replaced += 1;
        }
        let out = s.cmd().args(["rewrap", "-r", "rw", "--to-latest", "--resume"]).output().unwrap();
        assert!(out.status.success(), "rewrap --resume after a kill: {}", describe(&out));
        let left: Vec<String> = listing(&dir).into_iter().filter(|n| is_temp_name(n)).collect();
        assert!(left.is_empty(), "--resume removes stale temp files: {left:?}");
        for (f, plain) in &files {
            assert_eq!(&s.decrypt(f), plain);
        }
    }
    let latest = String::from_utf8(s.ok(&["keys", "describe", "alias/default", "--json"]).stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(&latest).unwrap();
    let latest = v["current_version"].as_u64().map(|n| n.to_string()).or(v["version"].as_str().map(str::to_string));
    if let Some(latest) = latest {
        for (f, _) in &files {
            let info: serde_json::Value = serde_json::from_slice(&s.ok(&["inspect", f, "--json"]).stdout).unwrap();
            assert_eq!(info["keys"][0]["key_version"].as_str(), Some(latest.as_str()), "{f} at the latest version");
        }
    }
    t
}
