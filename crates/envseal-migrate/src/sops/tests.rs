//! Files written by the real sops 3.11 with an age key (testdata/sops/, README there).

use envseal_core::values::ValueType;
use envseal_stores::Format;

use super::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/sops");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap()
}

fn identities() -> Vec<Box<dyn age::Identity + Send + Sync>> {
    age_identities(&String::from_utf8(read("age-key.txt")).unwrap()).unwrap()
}

fn no_backend(_: &MasterKey) -> Result<Option<Arc<dyn Kms>>, String> {
    Ok(None)
}

fn open(format: SopsFormat, bytes: &[u8]) -> Result<Decrypted, MigrateError> {
    let f = SopsFile::parse(format, bytes)?;
    let key = futures_block(f.data_key(&identities(), &no_backend))?;
    f.decrypt(&key)
}

fn futures_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn rendered(d: &Decrypted, f: Format) -> String {
    String::from_utf8(d.to_document(f).unwrap().render()).unwrap()
}

#[test]
fn dotenv_file_from_sops() {
    let d = open(SopsFormat::Dotenv, &read("app.sops.env")).unwrap();
    let out = rendered(&d, Format::Dotenv);
    // Comment decrypted, empty value kept, unencrypted suffix untouched, `#` inside a value kept.
    assert_eq!(
        out,
        "# a comment\nDB_PASSWORD=hunter2\nEMPTY=\nAPI_unencrypted=plainvalue\nURL=\"https://x.y/?a=b#frag\"\n"
    );
    assert_eq!(d.plain_keys.as_deref(), Some(r"/API_unencrypted"));
    assert!(d.warnings.iter().any(|w| w.contains("comment")));
}

#[test]
fn yaml_file_from_sops() {
    let d = open(SopsFormat::Yaml, &read("app.sops.yaml")).unwrap();
    let doc = d.to_document(Format::Yaml).unwrap();
    let got: Vec<(String, ValueType, String)> =
        doc.entries().into_iter().map(|e| (e.path.display(), e.ty, e.text)).collect();
    let want = envseal_stores::parse(Format::Yaml, &read("app.yaml")).unwrap();
    let mut want: Vec<(String, ValueType, String)> =
        want.entries().into_iter().map(|e| (e.path.display(), e.ty, e.text)).collect();
    // sops stores 1.50 as the float 1.5.
    for w in &mut want {
        if w.0 == "db.ratio" {
            w.2 = "1.5".into();
        }
    }
    assert_eq!(got, want);
    let out = String::from_utf8(doc.render()).unwrap();
    assert!(out.contains("# the password") && !out.contains("sops:") && !out.contains("ENC["), "{out}");
    assert!(out.contains("sops_thing"), "a data key named sops_* stays data:\n{out}");
}

#[test]
fn json_file_from_sops() {
    let d = open(SopsFormat::Json, &read("app.sops.json")).unwrap();
    let doc = d.to_document(Format::Json).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&doc.render()).unwrap();
    assert_eq!(v["a"], "x");
    assert_eq!(v["n"], 10);
    assert_eq!(v["b"], false);
    assert_eq!(v["arr"][1], "two");
    assert_eq!(v["arr"][2]["k"], "v");
    assert_eq!(v["nested"]["deep"]["s"], "multi\nline");
    assert_eq!(v["sops_x"], "y");
    assert!(v.get("sops").is_none());
}

#[test]
fn ini_file_from_sops() {
    let d = open(SopsFormat::Ini, &read("app.sops.ini")).unwrap();
    let doc = d.to_document(Format::Json).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&doc.render()).unwrap();
    assert_eq!(v["section"]["key"], "value");
    assert_eq!(v["section"]["num"], "5");
    assert_eq!(v["other"]["pw"], "s3cret");
    assert!(v.get("sops").is_none());
    assert!(d.to_document(Format::Dotenv).is_err());
}

#[test]
fn tampering_is_caught() {
    let src = String::from_utf8(read("app.sops.env")).unwrap();
    // A value in clear changed: the MAC covers it.
    let t = src.replace("API_unencrypted=plainvalue", "API_unencrypted=evil");
    assert!(matches!(open(SopsFormat::Dotenv, t.as_bytes()), Err(MigrateError::MacMismatch)));
    // An encrypted value moved to another key: its path is its AAD.
    let line = src.lines().find(|l| l.starts_with("DB_PASSWORD=")).unwrap();
    let t = src.replace(line, &line.replace("DB_PASSWORD=", "OTHER=")).to_string();
    assert!(matches!(open(SopsFormat::Dotenv, t.as_bytes()), Err(MigrateError::ValueTampered(p)) if p == "OTHER"));
    // A value removed.
    let t = src.replace(&format!("{line}\n"), "");
    assert!(matches!(open(SopsFormat::Dotenv, t.as_bytes()), Err(MigrateError::MacMismatch)));
    // A plaintext value slipped in where sops encrypts.
    let t = src.replace("EMPTY=", "EMPTY=injected");
    assert!(matches!(open(SopsFormat::Dotenv, t.as_bytes()), Err(MigrateError::Malformed(_))));
    // The timestamp the MAC is bound to.
    let t = src.replace("sops_lastmodified=2026", "sops_lastmodified=2025");
    assert!(matches!(open(SopsFormat::Dotenv, t.as_bytes()), Err(MigrateError::MacMismatch)));
}

#[test]
fn wrong_or_missing_identity() {
    let f = SopsFile::parse(SopsFormat::Dotenv, &read("app.sops.env")).unwrap();
    let other = age_identities("AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX").unwrap();
    let e = futures_block(f.data_key(&other, &no_backend)).unwrap_err();
    assert!(matches!(&e, MigrateError::NoKeyOpened(a) if a.len() == 1), "{e}");
    let e = futures_block(f.data_key(&[], &no_backend)).unwrap_err();
    assert!(e.to_string().contains("no age identity"), "{e}");
    assert_eq!(f.master_keys()[0][0], MasterKey::Age { recipient: f.metadata.age[0].recipient.clone() });
}

#[test]
fn not_sops_and_helpers() {
    assert!(matches!(SopsFile::parse(SopsFormat::Dotenv, b"A=1\n"), Err(MigrateError::NotSops)));
    assert!(matches!(SopsFile::parse(SopsFormat::Json, b"{\"a\": 1}"), Err(MigrateError::NotSops)));
    assert_eq!(go_rfc3339("2026-12-07T23:27:33.123+00:00"), "2026-12-07T23:27:33Z");
    assert_eq!(go_rfc3339("2026-12-07T23:27:33-05:00"), "2026-12-07T23:27:33-05:00");
    let v =
        MasterKey::VaultTransit { address: "http://127.0.0.1:8200".into(), mount: "transit".into(), key: "k".into() };
    assert_eq!(v.envseal_uri().unwrap(), "vault-transit+http://127.0.0.1:8200/transit/k");
    assert_eq!(SopsFormat::from_path(std::path::Path::new("x/.env.prod")), Some(SopsFormat::Dotenv));
}
