//! docs/CLI.md, Safety: Ctrl-C/SIGTERM roll back (exit 130, no temp file, target untouched), a
//! broken pipe exits quietly, and several processes can share one keystore.

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::util::*;

fn kill(child: &Child, sig: &str) {
    let st = std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(st.success());
}

/// Starts `encrypt - -o OUT` from a pipe, feeds part of the input, signals it while it waits
/// for more, then feeds the rest: envseal notices between chunks and rolls back.
fn interrupted_encrypt(s: &Sandbox, out: &str, sig: &str) -> std::process::Output {
    let mut child = s
        .std_cmd()
        .args(["encrypt", "-", "-o", out, "--format", "binary"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&random_bytes(300_000, 20)).unwrap();
    stdin.flush().unwrap();
    // Wait until the temp file exists: envseal is writing.
    for _ in 0..500 {
        if s.leftovers().iter().any(|p| p.file_name().unwrap().to_string_lossy().starts_with(".envseal-tmp-")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    kill(&child, sig);
    std::thread::sleep(Duration::from_millis(100));
    // More input lets a read blocked in the kernel return; envseal may have stopped reading.
    let _ = stdin.write_all(&random_bytes(200_000, 21));
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn interrupt_rolls_back() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    for (sig, out) in [("-INT", "new.sealed"), ("-TERM", "existing.sealed")] {
        if out == "existing.sealed" {
            s.write(out, "keep me");
        }
        let before = snapshot(&s.work);
        let res = interrupted_encrypt(&s, out, sig);
        let err = assert_error(&res, 130, true);
        assert!(err.contains("nothing was changed"), "{err}");
        assert_eq!(snapshot(&s.work), before, "{sig}: target untouched, temp file removed");
    }
    assert_eq!(s.read("existing.sealed"), b"keep me");
}

#[test]
fn broken_pipe_exits_quietly() {
    let s = Sandbox::new();
    s.write("b.bin", random_bytes(2_000_000, 22));
    s.ok(&["encrypt", "b.bin"]);
    let mut child =
        s.std_cmd().args(["decrypt", "b.bin"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.stderr.is_empty(), "quiet on a broken pipe: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{:?}", out.status);
}

#[test]
fn parallel_first_use_creates_one_keystore() {
    let s = Sandbox::new();
    let n = 6;
    for i in 0..n {
        s.write(&format!("f{i}.env"), format!("A=secret-value-{i}\n"));
    }
    let children: Vec<Child> = (0..n)
        .map(|i| s.std_cmd().args(["encrypt", &format!("f{i}.env")]).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for i in 0..n {
        assert_eq!(s.decrypt(&format!("f{i}.env")), format!("A=secret-value-{i}\n").as_bytes());
    }
    let keys: serde_json::Value = serde_json::from_slice(&s.ok(&["keys", "list", "--json"]).stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1, "one keystore, one default key");
}

#[test]
fn parallel_key_changes_are_not_lost() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let n = 6;
    let children: Vec<Child> = (0..n)
        .map(|i| {
            s.std_cmd()
                .args(["keys", "create", "--alias", &format!("alias/k{i}")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let keys: serde_json::Value = serde_json::from_slice(&s.ok(&["keys", "list", "--json"]).stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), n + 1);
    for i in 0..n {
        s.ok(&["keys", "describe", &format!("alias/k{i}")]);
    }
}
