//! Issue 12 (trust, round 2), through the real binary: a rewrap never loses the only working
//! wrapped key, opening tries every entry, readers trust only the keys a rule names, a rule's
//! context is checked on every open, removing a recipient revokes it, sealed values do not show
//! their type or short lengths, and `--plain-keys` matches whole JSON pointers.
//!
//! Each `issue12_*` test failed on the code before the fix (commit a96f3d8).

use std::path::Path;

use envseal_core::EncryptionContext;
use envseal_kms_local::{LocalKms, Unlock};

use crate::util::*;

/// The `#ENVSEAL_<field>=` line of a sealed .env file.
fn meta_line<'a>(text: &'a str, field: &str) -> &'a str {
    let p = format!("#ENVSEAL_{field}=");
    text.lines().find(|l| l.starts_with(&p)).unwrap_or_else(|| panic!("no {p} line in\n{text}"))
}

/// A JSON field of a `#ENVSEAL_KEY=` line.
fn key_field(line: &str, field: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line.split_once('=').unwrap().1).unwrap();
    v[field].as_str().unwrap().to_string()
}

/// `text` with `line` inserted before the first line starting with `before`.
fn insert_before(text: &str, before: &str, line: &str) -> String {
    let at = text.find(&format!("\n{before}")).unwrap() + 1;
    format!("{}{line}\n{}", &text[..at], &text[at..])
}

fn local(dir: &Path) -> LocalKms {
    LocalKms::open(dir, Unlock::MasterKeyFile(None)).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The exact reproduction from the issue: rotate, prepend an entry with the same backend and key
/// id whose unauthenticated label already says the newest version and whose blob is random,
/// rewrap --to-latest. The file must still open afterwards.
#[test]
fn issue12_rewrap_never_loses_the_only_working_entry() {
    let s = Sandbox::new();
    s.seal("app.env", "A=secret-alpha\nB=secret-bravo\n");
    s.ok(&["keys", "rotate", "alias/default"]);
    let text = s.text("app.env");
    let good = meta_line(&text, "KEY").to_string();
    let forged = format!(
        "#ENVSEAL_KEY={{\"backend\":\"local\",\"key_id\":\"{}\",\"key_version\":\"2\",\"blob\":\"{}\"}}",
        key_field(&good, "key_id"),
        b64(&random_bytes(120, 7))
    );
    s.write("app.env", insert_before(&text, &good, &forged));
    assert_eq!(s.decrypt("app.env"), b"A=secret-alpha\nB=secret-bravo\n", "the good entry still opens it");

    let out = s.run(&["rewrap", "app.env", "--to-latest", "--json"]);
    let after = s.text("app.env");
    // Whatever the job reports, the file must open afterwards, through a verified entry at the
    // newest version.
    assert_eq!(s.decrypt("app.env"), b"A=secret-alpha\nB=secret-bravo\n", "rewrap lost the file:\n{after}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not be verified") || stderr.contains("unverifiable"), "reported: {stderr}");
    let inspected = s.inspect("app.env");
    let versions: Vec<&str> =
        inspected["keys"].as_array().unwrap().iter().map(|k| k["key_version"].as_str().unwrap()).collect();
    assert!(versions.contains(&"2"), "{inspected}");

    // With --drop-unverifiable the forged entry goes, and the file still opens.
    s.ok(&["rewrap", "app.env", "--to-latest", "--drop-unverifiable"]);
    assert_eq!(s.inspect("app.env")["keys"].as_array().unwrap().len(), 1);
    assert_eq!(s.decrypt("app.env"), b"A=secret-alpha\nB=secret-bravo\n");
}

/// An entry that unwraps (same key, the file's own KMS context) but to another data key fails
/// the commitment: opening moves on to the next entry instead of giving up.
#[test]
fn issue12_opening_tries_every_entry_after_a_commitment_failure() {
    let s = Sandbox::new();
    s.seal("app.env", "A=secret-alpha\n");
    let text = s.text("app.env");
    let good = meta_line(&text, "KEY").to_string();
    let file_id = meta_line(&text, "FILE_ID").split_once('=').unwrap().1.trim_matches('"').to_string();
    let kms = local(&s.home);
    let id: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&file_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    let kctx = envseal_core::values::kms_context(&EncryptionContext::new(), &id.try_into().unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let other = rt.block_on(envseal_core::Kms::generate_data_key(&kms, "alias/default", &kctx)).unwrap();
    let forged = format!(
        "#ENVSEAL_KEY={{\"backend\":\"local\",\"key_id\":\"{}\",\"key_version\":\"{}\",\"blob\":\"{}\"}}",
        other.wrapped.key_id,
        other.wrapped.key_version,
        b64(&other.wrapped.blob)
    );
    s.write("app.env", insert_before(&text, &good, &forged));
    assert_eq!(s.decrypt("app.env"), b"A=secret-alpha\n");
    assert_eq!(s.ok(&["get", "app.env", "A"]).stdout, b"secret-alpha");
    // Writers keep working and keep the file openable.
    s.ok(&["set", "app.env", "B", "secret-bravo"]);
    assert_eq!(s.decrypt("app.env"), b"A=secret-alpha\nB=secret-bravo\n");
}

/// A rule that names a key makes readers strict: a file wrapped only under another key (one the
/// reader could decrypt with) is refused before any KMS call.
#[test]
fn issue12_readers_trust_only_the_keys_a_rule_names() {
    let s = Sandbox::new();
    s.ok(&["keys", "create", "--alias", "alias/prod"]);
    s.ok(&["keys", "create", "--alias", "alias/other"]);
    s.write(".envseal.toml", "[[rule]]\npath = \"*.env\"\nkms = [\"local:\"]\nkey = \"alias/prod\"\n");
    s.write("app.env", "A=secret-alpha\n");
    s.ok(&["encrypt", "app.env"]);
    assert_eq!(s.decrypt("app.env"), b"A=secret-alpha\n");
    // A forged file, sealed under another key the reader holds (where no rule applies), then
    // put in place.
    s.write("elsewhere/forged.env", "A=attacker-value\n");
    s.ok(&["encrypt", "elsewhere/forged.env", "--key", "alias/other"]);
    std::fs::rename(s.path("elsewhere/forged.env"), s.path("forged.env")).unwrap();
    let err = s.fails(&["decrypt", "forged.env"], 6);
    assert!(err.contains("not allowed"), "{err}");
    let out = s.run(&["run", "-f", "forged.env", "--", "env"]);
    assert_error(&out, 6, true);
    assert!(!contains(&out.stdout, b"attacker-value"));
    // Explicit choices open it.
    assert_eq!(s.ok(&["decrypt", "forged.env", "--allow-key", "local:#alias/other"]).stdout, b"A=attacker-value\n");
    assert_eq!(s.ok(&["decrypt", "forged.env", "--discover"]).stdout, b"A=attacker-value\n");
    let out = s.cmd().args(["decrypt", "forged.env"]).env("ENVSEAL_ALLOW_KEYS", "local:#alias/other").output().unwrap();
    assert_success(&out, &["decrypt", "forged.env"]);
}

/// A rule's context is written when sealing and checked on every open: the staging file put in
/// place of the production one is refused by run, get, set, edit and decrypt.
#[test]
fn issue12_a_substituted_file_is_refused() {
    let s = Sandbox::new();
    s.write(
        ".envseal.toml",
        "[[rule]]\npath = \"prod/*.env\"\ncontext = { env = \"prod\" }\n\n[[rule]]\npath = \"staging/*.env\"\ncontext = { env = \"staging\" }\n",
    );
    s.write("prod/app.env", "DB=prod-password\n");
    s.write("staging/app.env", "DB=staging-password\n");
    s.ok(&["encrypt", "prod/app.env"]);
    s.ok(&["encrypt", "staging/app.env"]);
    assert_eq!(s.ok(&["get", "prod/app.env", "DB"]).stdout, b"prod-password");
    std::fs::copy(s.path("staging/app.env"), s.path("prod/app.env")).unwrap();
    let out = s.run(&["run", "-f", "prod/app.env", "--", "env"]);
    assert_error(&out, 5, true);
    assert!(!contains(&out.stdout, b"staging-password"));
    s.fails(&["get", "prod/app.env", "DB"], 5);
    s.fails(&["decrypt", "prod/app.env"], 5);
    s.fails(&["set", "prod/app.env", "X", "y"], 5);
    s.fails(&["edit", "prod/app.env"], 5);
    // --context states a context on the command line too.
    s.fails(&["get", "staging/app.env", "DB", "--context", "env=prod"], 5);
    assert_eq!(s.ok(&["get", "staging/app.env", "DB", "--context", "env=staging"]).stdout, b"staging-password");
}

/// After `--add-key B` and `--remove-key A`, A's holder cannot open values set later, even
/// with A's entry from an old copy of the file.
#[test]
fn issue12_removing_a_recipient_revokes_it() {
    let s = Sandbox::new();
    let a = s.root.join("ks-a");
    let b = s.root.join("ks-b");
    mkdir_mode(&a, 0o700);
    mkdir_mode(&b, 0o700);
    let (ua, ub) = (format!("local:{}", a.display()), format!("local:{}", b.display()));
    s.ok(&["keys", "--kms", &ua, "list"]);
    s.ok(&["keys", "--kms", &ub, "list"]);
    s.write("app.env", "OLD=old-secret\n");
    s.ok(&["encrypt", "app.env", "--kms", &ua]);
    let old_copy = s.text("app.env");
    let a_line = meta_line(&old_copy, "KEY").to_string();
    let a_id = key_field(&a_line, "key_id");
    s.ok(&["rewrap", "app.env", "--add-key", &format!("{ub}#alias/default"), "--kms", &ua]);
    s.ok(&["rewrap", "app.env", "--remove-key", &a_id, "--kms", &ub]);
    s.ok(&["set", "app.env", "NEW", "new-secret", "--kms", &ub]);
    assert_eq!(s.ok(&["get", "app.env", "NEW", "--kms", &ub]).stdout, b"new-secret");
    // A's holder splices A's old entry into the new file.
    let new = s.text("app.env");
    let b_line = meta_line(&new, "KEY").to_string();
    s.write("spliced.env", new.replace(&b_line, &a_line));
    let out = s.run(&["decrypt", "spliced.env", "--kms", &ua]);
    assert!(!out.status.success(), "A opened the file after its removal");
    assert!(!contains(&out.stdout, b"new-secret"));
    assert!(!contains(&out.stdout, b"old-secret"));
}

/// Sealed values keep their type inside the ciphertext and short values are padded to one
/// length: `true`/`false` and short numbers cannot be told apart.
#[test]
fn issue12_sealed_values_hide_type_and_short_lengths() {
    let s = Sandbox::new();
    s.write("c.json", r#"{"t": true, "f": false, "n1": 7, "n2": 12345, "s": "ab", "z": null}"#);
    s.ok(&["encrypt", "c.json"]);
    let doc: serde_json::Value = serde_json::from_slice(&s.read("c.json")).unwrap();
    let sealed: Vec<&str> = ["t", "f", "n1", "n2", "s", "z"].iter().map(|k| doc[k].as_str().unwrap()).collect();
    for v in &sealed {
        assert!(v.starts_with("ENC[v2:"), "{v}");
        for t in [":s:", ":n:", ":b:", ":z:"] {
            assert!(!v.contains(t), "type letter in clear: {v}");
        }
    }
    assert!(sealed.windows(2).all(|w| w[0].len() == w[1].len()), "lengths differ: {sealed:?}");
    let plain = s.ok(&["decrypt", "c.json"]).stdout;
    let back: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(back, serde_json::json!({"t": true, "f": false, "n1": 7, "n2": 12345, "s": "ab", "z": null}));
}

/// `--plain-keys` matches the whole JSON pointer of a value: the old example `'^PUBLIC_'` can no
/// longer leave a nested secret in clear, and the values left in clear are listed.
#[test]
fn issue12_plain_keys_match_whole_pointers() {
    let s = Sandbox::new();
    s.write("c.json", r#"{"PUBLIC_cfg": {"db_password": "hunter2"}, "PUBLIC_URL": "https://example.test"}"#);
    s.ok(&["encrypt", "c.json", "--plain-keys", "^PUBLIC_"]);
    let text = s.text("c.json");
    assert!(!text.contains("hunter2"), "{text}");
    s.write("d.json", r#"{"PUBLIC_cfg": {"db_password": "hunter2"}, "PUBLIC_URL": "https://example.test"}"#);
    let out = s.ok(&["encrypt", "d.json", "--plain-keys", "/PUBLIC_URL"]);
    let text = s.text("d.json");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("https://example.test"), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/PUBLIC_URL"), "values left in clear are listed: {stderr}");
}

/// `envseal rekey`: a new data key and file id (value-level) or salt (container) for the same
/// recipients; the old entry opens nothing of the result.
#[test]
fn rekey_gives_new_keys_and_shuts_out_old_entries() {
    let s = Sandbox::new();
    s.seal("app.env", "A=secret-alpha\nB=secret-bravo\n");
    let before = s.text("app.env");
    s.write("blob.bin", random_bytes(200_000, 3));
    s.ok(&["encrypt", "blob.bin", "-o", "blob.sealed"]);
    let bin_before = s.read("blob.sealed");
    let out = s.ok(&["rekey", "app.env", "blob.sealed", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rekeyed"].as_array().unwrap().len(), 2, "{v}");
    let after = s.text("app.env");
    assert_ne!(meta_line(&before, "FILE_ID"), meta_line(&after, "FILE_ID"));
    assert_eq!(s.decrypt("app.env"), b"A=secret-alpha\nB=secret-bravo\n");
    assert_eq!(s.ok(&["decrypt", "blob.sealed"]).stdout, random_bytes(200_000, 3));
    // The old entry spliced into the new file opens nothing.
    s.write("spliced.env", after.replace(meta_line(&after, "KEY"), meta_line(&before, "KEY")));
    let out = s.run(&["decrypt", "spliced.env"]);
    assert!(!out.status.success());
    assert!(!contains(&out.stdout, b"secret-alpha"));
    let bin_after = s.read("blob.sealed");
    assert_ne!(bin_before[15..47], bin_after[15..47], "new salt");
    // A damaged container is not re-keyed, and stays as it was.
    let mut bad = bin_after.clone();
    let n = bad.len();
    bad[n - 5] ^= 1;
    s.write("bad.sealed", &bad);
    s.fails(&["rekey", "bad.sealed"], 7);
    assert_eq!(s.read("bad.sealed"), bad);
}

/// A file sealed in format 1 (by an earlier envseal) opens, keeps format 1 on `set` (one line
/// changes), and moves to format 2 on `rekey`, keeping the same values in clear.
#[test]
fn format1_files_still_work_and_rekey_upgrades_them() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let kms = local(&s.home);
    let file_id = [9u8; 32];
    let kctx = envseal_core::values::kms_context(&EncryptionContext::new(), &file_id).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let g = rt.block_on(envseal_core::Kms::generate_data_key(&kms, "alias/default", &kctx)).unwrap();
    let mut doc = envseal_stores::parse(
        envseal_stores::Format::Dotenv,
        b"PUBLIC_URL=https://example.test\nPUBLIC_cfg_PASSWORD=hunter2\nSECRET=s3cret\n",
    )
    .unwrap();
    envseal_stores::seal_fixed(
        doc.as_mut(),
        envseal_stores::FixedSeal {
            version: 1,
            data_key: &g.data_key,
            file_id,
            keys: vec![g.wrapped],
            context: EncryptionContext::new(),
            plain_keys: Some("^PUBLIC_URL".into()),
            padding: 0,
            time: "2026-11-01T00:00:00Z".into(),
        },
    )
    .unwrap();
    s.write("old.env", doc.render());
    assert!(s.text("old.env").contains("ENC[v1:s:"));
    assert_eq!(s.ok(&["get", "old.env", "SECRET"]).stdout, b"s3cret");
    let before = s.read("old.env");
    s.ok(&["set", "old.env", "SECRET", "n3w"]);
    let changed = changed_lines(&before, &s.read("old.env"));
    assert!(changed.iter().any(|l| l.starts_with("SECRET=ENC[v1:s:")), "{changed:?}");
    s.ok(&["rekey", "old.env"]);
    let text = s.text("old.env");
    assert!(text.contains("#ENVSEAL_VERSION=2") && !text.contains("ENC[v1:"), "{text}");
    assert!(text.contains("PUBLIC_URL=https://example.test\n"), "the same value stays in clear: {text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(s.decrypt("old.env"), b"PUBLIC_URL=https://example.test\nPUBLIC_cfg_PASSWORD=hunter2\nSECRET=n3w\n");
}

/// `--remove-key` on a container proves a remaining entry opens it; `--no-rekey` keeps the data
/// key of a value-level file; `--allow-key` limits which entries a rewrap sends to the KMS.
#[test]
fn remove_key_variants() {
    let s = Sandbox::new();
    s.ok(&["keys", "create", "--alias", "alias/two"]);
    s.write("b.bin", random_bytes(5000, 4));
    s.ok(&["encrypt", "b.bin", "--kms", "local:,local:#alias/two"]);
    let i = s.inspect("b.bin");
    let first = i["keys"][0]["key_id"].as_str().unwrap().to_string();
    s.ok(&["rewrap", "b.bin", "--remove-key", &first]);
    assert_eq!(s.inspect("b.bin")["keys"].as_array().unwrap().len(), 1);
    assert_eq!(s.ok(&["decrypt", "b.bin"]).stdout, random_bytes(5000, 4));

    s.write("v.env", "A=1\n");
    s.ok(&["encrypt", "v.env", "--kms", "local:,local:#alias/two"]);
    let before = s.text("v.env");
    let id = s.inspect("v.env")["keys"][0]["key_id"].as_str().unwrap().to_string();
    s.ok(&["rewrap", "v.env", "--remove-key", &id, "--no-rekey"]);
    let after = s.text("v.env");
    assert_eq!(meta_line(&before, "FILE_ID"), meta_line(&after, "FILE_ID"), "no re-key");
    assert_eq!(s.decrypt("v.env"), b"A=1\n");

    // Only entries of the allowed key reach the KMS: the other is left as it is.
    s.ok(&["keys", "rotate", "alias/default"]);
    s.ok(&["keys", "rotate", "alias/two"]);
    s.write("w.env", "B=2\n");
    s.ok(&["encrypt", "w.env", "--kms", "local:,local:#alias/two"]);
    s.ok(&["keys", "rotate", "alias/default"]);
    s.ok(&["keys", "rotate", "alias/two"]);
    s.ok(&["rewrap", "w.env", "--to-latest", "--allow-key", "local:#alias/two"]);
    let keys = s.inspect("w.env")["keys"].clone();
    let versions: Vec<&str> = keys.as_array().unwrap().iter().map(|k| k["key_version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["2", "3"], "{keys}");
}
