//! `envseal edit` with scripted editors: only the changed value's ciphertext changes; no-op,
//! failing and invalid edits leave the file as it was; the private temp file never survives.

use std::path::{Path, PathBuf};

use crate::util::*;

/// A scripted editor: records the temp file's path, mode and content, then runs `body` (with
/// the temp file as `$1`).
struct Editor {
    script: PathBuf,
    record: PathBuf,
}

impl Editor {
    fn new(s: &Sandbox, name: &str, body: &str) -> Self {
        let dir = s.root.join("editors");
        std::fs::create_dir_all(&dir).unwrap();
        let record = dir.join(format!("{name}.record"));
        let script = dir.join(format!("{name}.sh"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$1\" > '{rec}'\nstat -c %a \"$1\" >> '{rec}'\ncp \"$1\" '{rec}.seen'\n{body}\n",
                rec = record.display()
            ),
        )
        .unwrap();
        chmod(&script, 0o755);
        Editor { script, record }
    }

    /// The temp file the editor was given, after checking it was private.
    fn temp_path(&self) -> PathBuf {
        let rec = std::fs::read_to_string(&self.record).expect("the editor ran");
        let mut it = rec.lines();
        let path = PathBuf::from(it.next().unwrap());
        assert_eq!(it.next(), Some("600"), "the temp file is 0600");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".envseal-edit-"), "{name}");
        path
    }

    /// What the editor was shown.
    fn seen(&self) -> Vec<u8> {
        std::fs::read(format!("{}.seen", self.record.display())).unwrap()
    }

    fn run(&self, s: &Sandbox, file: &str) -> std::process::Output {
        s.cmd().args(["edit", file]).env("EDITOR", &self.script).output().unwrap()
    }
}

/// The temp file is gone, and so is any other `.envseal-edit-*` file in the places envseal
/// may use (the sandbox's TMPDIR and runtime dir; /dev/shm is shared, so only our file).
fn assert_temp_gone(s: &Sandbox, ed: &Editor) {
    let p = ed.temp_path();
    assert!(!p.exists(), "{} survived", p.display());
    let dir = p.parent().unwrap();
    assert!(
        dir == Path::new("/dev/shm") || dir == s.runtime || dir == s.tmp,
        "temp file in an unexpected place: {}",
        dir.display()
    );
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
}

#[test]
fn sed_editor_changes_one_value() {
    let s = Sandbox::new();
    let original = testdata("dotenv/sample.env");
    let before = s.seal("s.env", &original);
    let ed = Editor::new(&s, "sed", "sed -i 's/^API_KEY=.*/API_KEY=\"edited-api-key\"/' \"$1\"");
    let out = ed.run(&s, "s.env");
    assert_success(&out, &["edit"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("re-sealed"));
    assert_eq!(ed.seen(), original, "the editor sees the plaintext exactly");
    let after = s.read("s.env");
    let changed = changed_lines(&before, &after);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].starts_with("API_KEY=\"ENC[v2:"));
    assert!(!contains(&after, b"edited-api-key"));
    let expected = String::from_utf8(original).unwrap().replace("sk_test_51Hx9fakefakefake", "edited-api-key");
    assert_eq!(String::from_utf8(s.decrypt("s.env")).unwrap(), expected);
    assert_temp_gone(&s, &ed);
}

#[test]
fn editor_adding_and_removing_lines() {
    let s = Sandbox::new();
    s.seal("g.env", testdata("dotenv/grammar.env"));
    let ed = Editor::new(&s, "add", "sed -i '/^PLAIN=/d' \"$1\" && printf '\\nADDED=\"added value\"\\n' >> \"$1\"");
    assert_success(&ed.run(&s, "g.env"), &["edit"]);
    let plain = String::from_utf8(s.decrypt("g.env")).unwrap();
    assert!(!plain.contains("PLAIN=value"));
    assert!(plain.ends_with("LAST=no final newline\nADDED=\"added value\"\n"), "{plain}");
    assert_eq!(s.ok(&["get", "g.env", "ADDED"]).stdout, b"added value");
    assert!(!String::from_utf8(s.read("g.env")).unwrap().contains("added value"));
    assert_temp_gone(&s, &ed);
}

#[test]
fn json_edit() {
    let s = Sandbox::new();
    let before = s.seal("c.json", "{\n  \"a\": \"alpha-secret\",\n  \"b\": \"bravo-secret\"\n}\n");
    let ed = Editor::new(&s, "json", "sed -i 's/bravo-secret/bravo-edited/' \"$1\"");
    assert_success(&ed.run(&s, "c.json"), &["edit"]);
    assert!(ed.temp_path().extension().is_some_and(|e| e == "json"), "editors get the right syntax");
    let (b, a): (serde_json::Value, serde_json::Value) =
        (serde_json::from_slice(&before).unwrap(), serde_json::from_slice(&s.read("c.json")).unwrap());
    assert_eq!(b["a"], a["a"]);
    assert_ne!(b["b"], a["b"]);
    assert_eq!(s.ok(&["get", "c.json", "b"]).stdout, b"bravo-edited");
    assert_temp_gone(&s, &ed);
}

#[test]
fn unchanged_edit_says_no_changes() {
    let s = Sandbox::new();
    let before = s.seal("s.env", testdata("dotenv/sample.env"));
    let ed = Editor::new(&s, "noop", "true");
    let out = ed.run(&s, "s.env");
    assert_success(&out, &["edit"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no changes"));
    assert_eq!(s.read("s.env"), before);
    assert_temp_gone(&s, &ed);
}

#[test]
fn failing_editor_leaves_file_unchanged() {
    let s = Sandbox::new();
    s.seal("s.env", testdata("dotenv/sample.env"));
    let work = snapshot(&s.work);
    let ed = Editor::new(&s, "fail", "sed -i 's/^API_KEY=.*/API_KEY=lost/' \"$1\"; exit 1");
    let out = ed.run(&s, "s.env");
    let err = assert_error(&out, 1, false);
    assert!(err.contains("unchanged"), "{err}");
    assert_eq!(snapshot(&s.work), work);
    assert_temp_gone(&s, &ed);
}

#[test]
fn invalid_edit_without_a_terminal_leaves_file_unchanged() {
    let s = Sandbox::new();
    s.seal("s.env", testdata("dotenv/sample.env"));
    s.seal("c.json", "{\"a\":\"alpha-secret\"}");
    let work = snapshot(&s.work);
    for (file, body) in [
        ("s.env", "printf 'A=\"unterminated\\n' >> \"$1\""),
        ("s.env", "printf 'not a key value line\\n' >> \"$1\""),
        ("c.json", "printf '{\"a\": ' > \"$1\""),
    ] {
        let ed = Editor::new(&s, "invalid", body);
        let out = ed.run(&s, file); // stdin is a pipe, not a terminal: no retry prompt
        let err = assert_error(&out, 3, true);
        assert!(err.contains("unchanged"), "{err}");
        assert!(!err.contains("alpha-secret") && !err.contains("sk_test"), "no values in messages");
        assert_eq!(snapshot(&s.work), work, "{file}");
        assert_temp_gone(&s, &ed);
    }
}

/// The invalid-edit hint must not suggest `--format binary`, which `edit` does not have.
#[test]
fn invalid_edit_hint_fits_the_command() {
    let s = Sandbox::new();
    s.seal("s.env", "A=alpha-secret\n");
    let ed = Editor::new(&s, "invalid", "printf 'A=\"unterminated\\n' >> \"$1\"");
    let err = assert_error(&ed.run(&s, "s.env"), 3, true);
    assert!(!err.contains("--format"), "{err}");
}

#[test]
fn visual_wins_over_editor() {
    let s = Sandbox::new();
    s.seal("a.env", "A=alpha-secret\n");
    let visual = Editor::new(&s, "visual", "sed -i 's/^A=.*/A=from-visual/' \"$1\"");
    let editor = Editor::new(&s, "editor", "sed -i 's/^A=.*/A=from-editor/' \"$1\"");
    let out =
        s.cmd().args(["edit", "a.env"]).env("VISUAL", &visual.script).env("EDITOR", &editor.script).output().unwrap();
    assert_success(&out, &["edit"]);
    assert_eq!(s.ok(&["get", "a.env", "A"]).stdout, b"from-visual");
    assert!(!editor.record.exists());
    assert_temp_gone(&s, &visual);
}

#[test]
fn edit_refuses_symlinks_and_plain_files() {
    let s = Sandbox::new();
    s.seal("real.env", "A=alpha-secret\n");
    std::os::unix::fs::symlink("real.env", s.path("link.env")).unwrap();
    s.write("plain.env", "A=alpha\n");
    let work = snapshot(&s.work);
    let ed = Editor::new(&s, "never", "true");
    let err = assert_error(&ed.run(&s, "link.env"), 3, true);
    assert!(err.contains("symlink"));
    assert_error(&ed.run(&s, "plain.env"), 3, true);
    assert!(!ed.record.exists(), "the editor must not start");
    assert_eq!(snapshot(&s.work), work);
}

/// Removes the observer hard link even when the test fails.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn observe_wipe(s: &Sandbox, save: &str) -> Vec<u8> {
    s.seal("a.env", "A=alpha-secret\n");
    let observer = format!("envseal-e2e-observer-{}-{}", std::process::id(), save.len());
    // A hard link to whatever file is at the temp path once the editor has saved: it shows
    // what envseal's wipe did to the saved plaintext.
    let ed = Editor::new(s, "observe", &format!("{save}\nln \"$1\" \"$(dirname \"$1\")/{observer}\""));
    let out = ed.run(s, "a.env");
    let link = ed.temp_path().parent().unwrap().join(&observer);
    let _guard = RemoveOnDrop(link.clone());
    assert_success(&out, &["edit"]);
    assert_eq!(s.ok(&["get", "a.env", "A"]).stdout, b"edited-secret");
    std::fs::read(&link).unwrap()
}

/// docs/CLI.md: the temp file is "overwritten and removed afterwards". An editor that writes in
/// place gets its saved plaintext overwritten.
#[test]
fn temp_file_is_wiped_after_an_in_place_save() {
    let s = Sandbox::new();
    let left = observe_wipe(&s, "printf 'A=edited-secret\\n' > \"$1\"");
    assert!(!contains(&left, b"edited-secret"), "plaintext left: {:?}", String::from_utf8_lossy(&left));
}

/// Editors that save by writing a new file and renaming it over the old one (sed -i, vim with
/// `backupcopy=no`, "safe write" editors): envseal overwrites the inode it created, not the one
/// holding the saved plaintext, which is only unlinked.
#[test]
fn temp_file_is_wiped_after_a_save_by_rename() {
    let s = Sandbox::new();
    let left = observe_wipe(&s, "sed -i 's/^A=.*/A=edited-secret/' \"$1\"");
    assert!(!contains(&left, b"edited-secret"), "plaintext left: {:?}", String::from_utf8_lossy(&left));
}
