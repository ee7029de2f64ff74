//! Behaviour of the local keystore on disk: creation, permissions, unlock, persistence,
//! concurrency, and the decrypt error order.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use envseal_core::kms::{KeySpec, KeyState, MAX_DIRECT_ENCRYPT, ProtectionLevel};
use envseal_core::{EncryptionContext, KeyManager, Kms, KmsError, WrappedKey};
use envseal_kms_local::{Argon2Params, InitOptions, LocalError, LocalKms, Unlock, UnlockMode};

const MARKER_PASSPHRASE: &str = "MARKER-correct-horse-battery-staple";
const FAST: Argon2Params = Argon2Params { m_cost_kib: 64, t_cost: 1, p_cost: 1 };

/// A private temp dir (tempfile makes them 0755 here), usable as a keystore directory.
fn tmp() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    chmod(t.path(), 0o700);
    t
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(pairs.iter().copied()).unwrap()
}

fn master(dir: &Path) -> LocalKms {
    LocalKms::open_or_create(dir, Unlock::master_key_file()).unwrap()
}

fn passphrase_store(dir: &Path, pass: &str) -> LocalKms {
    LocalKms::init(dir, InitOptions::new(Unlock::passphrase(pass)).with_argon2(FAST)).unwrap()
}

fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Rewrites keystore.json through a JSON edit (the test plays an outside writer).
fn edit_json(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("keystore.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    f(&mut v);
    let tmp = dir.join("edit.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    chmod(&tmp, 0o600);
    fs::rename(&tmp, &path).unwrap();
}

#[tokio::test]
async fn created_on_first_use_with_private_permissions() {
    let t = tmp();
    let dir = t.path().join("nested").join("envseal");
    assert!(!LocalKms::exists(&dir));
    let kms = master(&dir);
    assert_eq!(mode(&dir), 0o700);
    for f in ["keystore.json", "keystore.lock", "master.key"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(fs::read(dir.join("master.key")).unwrap().len(), 32);
    assert_eq!(entries(&dir), set(&["keystore.json", "keystore.lock", "master.key"]));
    assert_eq!(LocalKms::unlock_mode(&dir).unwrap(), UnlockMode::MasterKeyFile);

    let keys = kms.list_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    let d = kms.describe_key("alias/default").await.unwrap();
    assert_eq!(d.key_id, keys[0].key_id);
    assert_eq!(d.aliases, vec!["alias/default".to_string()]);
    assert_eq!(d.state, KeyState::Enabled);
    assert_eq!(d.current_version, "1");
    assert_eq!(kms.backend(), "local");
    assert!(kms.key_manager().is_some());

    // The second call opens what the first created.
    let again = master(&dir);
    assert_eq!(again.keystore_id(), kms.keystore_id());
    let json: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("keystore.json")).unwrap()).unwrap();
    assert_eq!(json["format"], 1);
    assert_eq!(json["unlock"]["mode"], "master-key-file");
    assert_eq!(json["keys"][0]["protection_level"], "SOFTWARE");
    assert_eq!(json["keys"][0]["versions"][0]["id"], "1");
}

#[test]
fn open_missing_and_init_twice() {
    let t = tmp();
    let e = LocalKms::open(t.path().join("none"), Unlock::master_key_file()).unwrap_err();
    assert!(matches!(e, LocalError::NotFound { .. }));
    assert!(e.to_string().contains("run `envseal init`"), "{e}");
    assert!(!t.path().join("none").exists(), "open must not create anything");

    let dir = t.path().join("ks");
    LocalKms::init(&dir, InitOptions::new(Unlock::master_key_file())).unwrap();
    let e = LocalKms::init(&dir, InitOptions::new(Unlock::master_key_file())).unwrap_err();
    assert!(matches!(e, LocalError::AlreadyExists { .. }), "{e}");
    let e = LocalKms::init(t.path().join("p"), InitOptions::new(Unlock::passphrase(""))).unwrap_err();
    assert!(matches!(e, LocalError::InvalidOption(_)), "{e}");
}

#[test]
fn refuses_group_or_world_access() {
    let t = tmp();
    let dir = t.path().join("ks");
    master(&dir);

    let file = dir.join("keystore.json");
    chmod(&file, 0o644);
    let e = LocalKms::open(&dir, Unlock::master_key_file()).unwrap_err();
    assert!(matches!(e, LocalError::InsecurePermissions { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&file.display().to_string()) && msg.contains("0644"), "{msg}");
    assert!(msg.contains(&format!("chmod 600 {}", file.display())), "{msg}");
    chmod(&file, 0o600);

    chmod(&dir, 0o755);
    let e = LocalKms::open(&dir, Unlock::master_key_file()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&format!("chmod 700 {}", dir.display())), "{msg}");
    chmod(&dir, 0o700);

    chmod(&dir.join("master.key"), 0o640);
    let e = LocalKms::open(&dir, Unlock::master_key_file()).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    chmod(&dir.join("master.key"), 0o600);

    LocalKms::open(&dir, Unlock::master_key_file()).unwrap();
}

#[tokio::test]
async fn an_open_keystore_refuses_a_file_made_readable_later() {
    let t = tmp();
    let kms = master(t.path());
    chmod(&t.path().join("keystore.json"), 0o644);
    // The mutation re-reads the file and must refuse it rather than trust or overwrite it.
    let e = kms.create_key(&KeySpec::default()).await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("chmod 600"), "{e}");
}

#[test]
fn refuses_symlinked_files() {
    let t = tmp();
    let dir = t.path().join("ks");
    master(&dir);
    let real = t.path().join("elsewhere.json");
    fs::rename(dir.join("keystore.json"), &real).unwrap();
    std::os::unix::fs::symlink(&real, dir.join("keystore.json")).unwrap();
    let e = LocalKms::open(&dir, Unlock::master_key_file()).unwrap_err();
    assert!(matches!(e, LocalError::Symlink { .. }), "{e}");
    fs::remove_file(dir.join("keystore.json")).unwrap();
    fs::rename(&real, dir.join("keystore.json")).unwrap();

    let key = t.path().join("elsewhere.key");
    fs::rename(dir.join("master.key"), &key).unwrap();
    std::os::unix::fs::symlink(&key, dir.join("master.key")).unwrap();
    let e = LocalKms::open(&dir, Unlock::master_key_file()).unwrap_err();
    assert!(matches!(e, LocalError::Symlink { .. }), "{e}");
    // Given explicitly (a secret mount, say), the same file is accepted.
    LocalKms::open(&dir, Unlock::MasterKeyFile(Some(dir.join("master.key")))).unwrap();
}

#[test]
fn wrong_passphrase_master_key_and_mode() {
    let t = tmp();
    let p = t.path().join("p");
    passphrase_store(&p, MARKER_PASSPHRASE);
    assert_eq!(LocalKms::unlock_mode(&p).unwrap(), UnlockMode::Passphrase);
    assert!(!p.join("master.key").exists());
    let e = LocalKms::open(&p, Unlock::passphrase("not it")).unwrap_err();
    assert!(matches!(e, LocalError::WrongPassphrase { .. }), "{e}");
    let e = LocalKms::open(&p, Unlock::master_key_file()).unwrap_err();
    assert!(matches!(e, LocalError::WrongUnlockMode { .. }), "{e}");
    assert!(e.to_string().contains("protected by a passphrase, not a master key file"), "{e}");
    LocalKms::open(&p, Unlock::passphrase(MARKER_PASSPHRASE)).unwrap();

    let m = t.path().join("m");
    master(&m);
    let e = LocalKms::open(&m, Unlock::passphrase(MARKER_PASSPHRASE)).unwrap_err();
    assert!(matches!(e, LocalError::WrongUnlockMode { .. }), "{e}");
    fs::write(m.join("master.key"), [0x42u8; 32]).unwrap();
    let e = LocalKms::open(&m, Unlock::master_key_file()).unwrap_err();
    assert!(matches!(e, LocalError::WrongMasterKey { .. }), "{e}");
    fs::write(m.join("master.key"), [0x42u8; 31]).unwrap();
    let e = LocalKms::open(&m, Unlock::master_key_file()).unwrap_err();
    assert!(matches!(e, LocalError::MasterKeyFile { .. }), "{e}");
    fs::remove_file(m.join("master.key")).unwrap();
    let e = LocalKms::open(&m, Unlock::master_key_file()).unwrap_err();
    assert!(matches!(e, LocalError::MasterKeyFile { .. }), "{e}");
}

#[tokio::test]
async fn explicit_master_key_file_in_hex() {
    let t = tmp();
    let key_file = t.path().join("mk.hex");
    fs::write(&key_file, format!("{}\n", "ab".repeat(32))).unwrap();
    chmod(&key_file, 0o600);
    let dir = t.path().join("ks");
    let kms = LocalKms::open_or_create(&dir, Unlock::MasterKeyFile(Some(key_file.clone()))).unwrap();
    assert!(!dir.join("master.key").exists());
    let w = kms.encrypt("alias/default", b"hi", &ctx(&[])).await.unwrap();
    let other = LocalKms::open(&dir, Unlock::MasterKeyFile(Some(key_file.clone()))).unwrap();
    assert_eq!(other.decrypt(&w, &ctx(&[])).await.unwrap().plaintext.expose_secret(), b"hi");
    // Raw bytes of the same key work too.
    let raw = t.path().join("mk.raw");
    fs::write(&raw, [0xab; 32]).unwrap();
    chmod(&raw, 0o600);
    LocalKms::open(&dir, Unlock::MasterKeyFile(Some(raw))).unwrap();
    // A new explicit file is created (0600) with the keystore.
    let created = t.path().join("new.key");
    LocalKms::open_or_create(t.path().join("ks2"), Unlock::MasterKeyFile(Some(created.clone()))).unwrap();
    assert_eq!(mode(&created), 0o600);
    assert_eq!(fs::read(&created).unwrap().len(), 32);
}

#[tokio::test]
async fn persistence_across_instances() {
    let t = tmp();
    let a = master(t.path());
    let b = LocalKms::open(t.path(), Unlock::master_key_file()).unwrap();
    let c = ctx(&[("app", "billing")]);
    let old = a.generate_data_key("alias/default", &c).await.unwrap();
    assert_eq!(old.wrapped.key_version, "1");

    // B has loaded the file; A rotates; B must see version 2 without reopening.
    assert_eq!(b.describe_key("alias/default").await.unwrap().current_version, "1");
    let rotated = a.rotate_key("alias/default").await.unwrap();
    assert_eq!(rotated.current_version, "2");
    assert_eq!(rotated.versions.len(), 2);
    let seen = b.describe_key("alias/default").await.unwrap();
    assert_eq!(seen.current_version, "2");
    let new = b.generate_data_key("alias/default", &c).await.unwrap();
    assert_eq!(new.wrapped.key_version, "2");
    assert_eq!(new.wrapped.key_id, seen.key_id);

    // Both versions decrypt in both instances.
    for kms in [&a, &b] {
        let d = kms.decrypt(&old.wrapped, &c).await.unwrap();
        assert_eq!(d.plaintext.expose_secret(), old.data_key.expose_secret());
        assert_eq!(d.key_version, "1");
        let d = kms.decrypt(&new.wrapped, &c).await.unwrap();
        assert_eq!(d.plaintext.expose_secret(), new.data_key.expose_secret());
        assert_eq!(d.key_version, "2");
    }

    // A fresh process-like open after the fact sees everything.
    drop((a, b));
    let c2 = LocalKms::open(t.path(), Unlock::master_key_file()).unwrap();
    assert_eq!(c2.describe_key("alias/default").await.unwrap().current_version, "2");
}

#[test]
fn concurrent_instances_lose_no_update() {
    let t = tmp();
    let dir = t.path().to_path_buf();
    passphrase_store(&dir, "pw");
    let instances: Vec<LocalKms> = (0..2).map(|_| LocalKms::open(&dir, Unlock::passphrase("pw")).unwrap()).collect();
    std::thread::scope(|s| {
        for (n, kms) in instances.iter().enumerate() {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                rt.block_on(async {
                    for i in 0..20 {
                        let spec = KeySpec { description: format!("t{n}-{i}"), ..KeySpec::default() };
                        kms.create_key(&spec).await.unwrap();
                        // Interleave reads, which take the shared lock.
                        kms.list_keys().await.unwrap();
                    }
                });
            });
        }
    });
    let fresh = LocalKms::open(&dir, Unlock::passphrase("pw")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let keys = rt.block_on(fresh.list_keys()).unwrap();
    assert_eq!(keys.len(), 41);
    let descriptions: BTreeSet<String> = keys.iter().map(|k| k.description.clone()).collect();
    assert_eq!(descriptions.len(), 41);
    // No temp file left behind by 40 atomic writes.
    assert_eq!(entries(&dir), set(&["keystore.json", "keystore.lock"]));
}

#[test]
fn concurrent_first_use_creates_one_keystore() {
    let t = tmp();
    let dir = t.path().join("race");
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| master(&dir).keystore_id())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(entries(&dir), set(&["keystore.json", "keystore.lock", "master.key"]));
}

#[tokio::test]
async fn blob_from_another_keystore_is_rejected() {
    let t = tmp();
    let a = master(&t.path().join("a"));
    let b = master(&t.path().join("b"));
    let c = ctx(&[]);
    let w = a.encrypt("alias/default", b"secret", &c).await.unwrap();
    // The key is simply not in this keystore (the blob may be intact).
    assert!(
        matches!(b.decrypt(&w, &c).await, Err(KmsError::KeyNotFound { ref key }) if key.contains("another local keystore"))
    );
    // Even when the other keystore has a key of the same id: the keystore id is checked first.
    let mut forged = w.clone();
    let b_key = b.describe_key("alias/default").await.unwrap().key_id;
    forged.key_id = b_key;
    assert!(matches!(b.decrypt(&forged, &c).await, Err(KmsError::KeyNotFound { .. })));
    // A blob of this keystore whose keystore id was altered is tampering, not "another keystore".
    let mut altered = b.encrypt("alias/default", b"secret", &c).await.unwrap();
    altered.blob[3] ^= 1;
    assert!(matches!(b.decrypt(&altered, &c).await, Err(KmsError::InvalidCiphertext)));
}

#[tokio::test]
async fn decrypt_error_order() {
    let t = tmp();
    let kms = master(t.path());
    let c = ctx(&[("tenant", "a")]);
    let w = kms.encrypt("alias/default", b"payload", &c).await.unwrap();
    let id = w.key_id.clone();
    assert!(!id.starts_with("alias/"));

    // Wrong context.
    assert!(matches!(kms.decrypt(&w, &ctx(&[("tenant", "b")])).await, Err(KmsError::WrongContext)));
    assert!(matches!(kms.decrypt(&w, &ctx(&[])).await, Err(KmsError::WrongContext)));
    // Ciphertext tampered.
    let mut t1 = w.clone();
    *t1.blob.last_mut().unwrap() ^= 1;
    assert!(matches!(kms.decrypt(&t1, &c).await, Err(KmsError::InvalidCiphertext)));
    // Garbage and truncation.
    let mut t2 = w.clone();
    t2.blob.truncate(20);
    assert!(matches!(kms.decrypt(&t2, &c).await, Err(KmsError::InvalidCiphertext)));
    // Entry key id naming another key, or nothing; an alias of the right key is fine.
    let other = kms.create_key(&KeySpec::default()).await.unwrap();
    let mut t3 = w.clone();
    t3.key_id = other.key_id.clone();
    assert!(matches!(kms.decrypt(&t3, &c).await, Err(KmsError::InvalidCiphertext)));
    t3.key_id = "no-such-key".into();
    assert!(matches!(kms.decrypt(&t3, &c).await, Err(KmsError::InvalidCiphertext)));
    t3.key_id = "alias/default".into();
    assert_eq!(kms.decrypt(&t3, &c).await.unwrap().key_id, id);
    t3.key_id = String::new();
    t3.key_version = String::new();
    assert_eq!(kms.decrypt(&t3, &c).await.unwrap().key_version, "1");
    let mut t4 = w.clone();
    t4.key_version = "2".into();
    assert!(matches!(kms.decrypt(&t4, &c).await, Err(KmsError::InvalidCiphertext)));

    // Disabled beats a wrong context; enabled again it decrypts.
    kms.disable_key(&id).await.unwrap();
    assert!(matches!(kms.decrypt(&w, &ctx(&[])).await, Err(KmsError::KeyDisabled { .. })));
    assert!(matches!(kms.encrypt(&id, b"x", &c).await, Err(KmsError::KeyDisabled { .. })));
    kms.enable_key(&id).await.unwrap();

    // Minimum decryption version.
    kms.rotate_key(&id).await.unwrap();
    kms.set_min_decryption_version(&id, "2").await.unwrap();
    match kms.decrypt(&w, &c).await {
        Err(KmsError::KeyVersionBelowMinimum { version, min, .. }) => {
            assert_eq!((version, min), ("1".into(), "2".into()))
        }
        other => panic!("{other:?}"),
    }
    let rewrapped = kms.encrypt(&id, b"payload", &c).await.unwrap();
    assert_eq!(rewrapped.key_version, "2");
    assert!(matches!(kms.set_min_decryption_version(&id, "3").await, Err(KmsError::KeyVersionNotFound { .. })));
    assert!(matches!(kms.set_min_decryption_version(&id, "0").await, Err(KmsError::KeyVersionNotFound { .. })));
    kms.set_min_decryption_version(&id, "1").await.unwrap();
    assert_eq!(kms.decrypt(&w, &c).await.unwrap().plaintext.expose_secret(), b"payload");

    // Pending deletion.
    kms.schedule_key_deletion(&id, 7).await.unwrap();
    assert!(matches!(kms.decrypt(&w, &c).await, Err(KmsError::KeyPendingDeletion { .. })));
}

#[tokio::test]
async fn encrypt_limits_and_re_encrypt() {
    let t = tmp();
    let kms = master(t.path());
    let c = ctx(&[("a", "1")]);
    let max = vec![7u8; MAX_DIRECT_ENCRYPT];
    let w = kms.encrypt("alias/default", &max, &c).await.unwrap();
    assert_eq!(kms.decrypt(&w, &c).await.unwrap().plaintext.expose_secret(), &max[..]);
    let too_big = vec![7u8; MAX_DIRECT_ENCRYPT + 1];
    assert!(matches!(
        kms.encrypt("alias/default", &too_big, &c).await,
        Err(KmsError::PlaintextTooLarge { size, limit }) if size == MAX_DIRECT_ENCRYPT + 1 && limit == MAX_DIRECT_ENCRYPT
    ));
    assert!(matches!(kms.encrypt("alias/nope", b"x", &c).await, Err(KmsError::KeyNotFound { .. })));

    let dest = kms.create_key(&KeySpec::default()).await.unwrap();
    let c2 = ctx(&[("b", "2")]);
    let moved = kms.re_encrypt(&w, &c, &dest.key_id, &c2).await.unwrap();
    assert_eq!(moved.key_id, dest.key_id);
    assert_eq!(moved.backend, "local");
    assert_eq!(kms.decrypt(&moved, &c2).await.unwrap().plaintext.expose_secret(), &max[..]);
    assert!(matches!(kms.re_encrypt(&w, &c2, &dest.key_id, &c2).await, Err(KmsError::WrongContext)));
}

#[tokio::test]
async fn key_management() {
    let t = tmp();
    let kms = master(t.path());
    let km: &dyn KeyManager = kms.key_manager().unwrap();

    let hsm = KeySpec { protection_level: ProtectionLevel::Hsm, ..KeySpec::default() };
    assert!(matches!(km.create_key(&hsm).await, Err(KmsError::Unsupported { .. })));

    let spec = KeySpec {
        description: "app key".into(),
        tags: [("team".to_string(), "pay".to_string())].into(),
        ..KeySpec::default()
    };
    let k = km.create_key(&spec).await.unwrap();
    assert_eq!((k.description.as_str(), k.tags.get("team").map(String::as_str)), ("app key", Some("pay")));
    assert_eq!(k.protection_level, ProtectionLevel::Software);

    // Aliases.
    km.create_alias("alias/app", &k.key_id).await.unwrap();
    assert!(matches!(km.create_alias("alias/app", "alias/default").await, Err(KmsError::AlreadyExists { .. })));
    assert!(matches!(km.create_alias("app", &k.key_id).await, Err(KmsError::InvalidRequest { .. })));
    assert!(matches!(km.create_alias("alias/x", "missing").await, Err(KmsError::KeyNotFound { .. })));
    assert_eq!(km.describe_key("alias/app").await.unwrap().key_id, k.key_id);
    let names: Vec<String> = km.list_aliases().await.unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["alias/app", "alias/default"]);
    km.delete_alias("alias/app").await.unwrap();
    assert!(matches!(km.delete_alias("alias/app").await, Err(KmsError::KeyNotFound { .. })));
    assert!(matches!(km.describe_key("alias/app").await, Err(KmsError::KeyNotFound { .. })));

    // Rotation refuses a disabled key.
    km.disable_key(&k.key_id).await.unwrap();
    assert!(matches!(km.rotate_key(&k.key_id).await, Err(KmsError::KeyDisabled { .. })));
    km.enable_key(&k.key_id).await.unwrap();

    // Deletion window and cancel.
    for bad in [0, 6, 31] {
        assert!(matches!(km.schedule_key_deletion(&k.key_id, bad).await, Err(KmsError::InvalidRequest { .. })));
    }
    let m = km.schedule_key_deletion(&k.key_id, 30).await.unwrap();
    assert_eq!(m.state, KeyState::PendingDeletion);
    assert!(m.deletion_date.is_some());
    assert!(matches!(km.enable_key(&k.key_id).await, Err(KmsError::KeyPendingDeletion { .. })));
    assert!(matches!(km.rotate_key(&k.key_id).await, Err(KmsError::KeyPendingDeletion { .. })));
    km.cancel_key_deletion(&k.key_id).await.unwrap();
    let m = km.describe_key(&k.key_id).await.unwrap();
    assert_eq!((m.state, m.deletion_date), (KeyState::Disabled, None));
    assert!(matches!(km.cancel_key_deletion(&k.key_id).await, Err(KmsError::InvalidRequest { .. })));
}

#[tokio::test]
async fn expired_keys_are_purged_on_the_next_mutation() {
    let t = tmp();
    let kms = master(t.path());
    let doomed = kms.create_key(&KeySpec::default()).await.unwrap();
    kms.create_alias("alias/doomed", &doomed.key_id).await.unwrap();
    kms.schedule_key_deletion(&doomed.key_id, 7).await.unwrap();
    // Move the deletion date into the past, as if 7 days had gone by.
    edit_json(t.path(), |v| {
        for k in v["keys"].as_array_mut().unwrap() {
            if k["id"] == doomed.key_id.as_str() {
                k["deletion_date"] = 1.into();
            }
        }
    });
    // Past its date the key is gone for reads already...
    assert!(matches!(kms.describe_key(&doomed.key_id).await, Err(KmsError::KeyNotFound { .. })));
    assert_eq!(kms.list_keys().await.unwrap().len(), 1);
    assert!(kms.list_aliases().await.unwrap().iter().all(|a| a.name != "alias/doomed"));
    // ...and the next mutation removes it from the file, freeing its alias.
    let fresh = kms.create_key(&KeySpec::default()).await.unwrap();
    let text = fs::read_to_string(t.path().join("keystore.json")).unwrap();
    assert!(!text.contains(&doomed.key_id));
    kms.create_alias("alias/doomed", &fresh.key_id).await.unwrap();
}

#[tokio::test]
async fn altered_material_is_reported_not_used() {
    let t = tmp();
    let kms = master(t.path());
    let id = kms.describe_key("alias/default").await.unwrap().key_id;
    let second = kms.create_key(&KeySpec::default()).await.unwrap();
    // Swap the two keys' material: each is bound to its key id, so neither opens.
    edit_json(t.path(), |v| {
        let keys = v["keys"].as_array_mut().unwrap();
        let a = keys[0]["versions"][0]["material"].clone();
        keys[0]["versions"][0]["material"] = keys[1]["versions"][0]["material"].clone();
        keys[1]["versions"][0]["material"] = a;
    });
    let fresh = LocalKms::open(t.path(), Unlock::master_key_file()).unwrap();
    for key in [id.as_str(), second.key_id.as_str()] {
        let e = fresh.encrypt(key, b"x", &ctx(&[])).await.unwrap_err();
        assert!(matches!(e, KmsError::Unavailable { retryable: false, .. }), "{e}");
        assert!(e.to_string().contains("was altered"), "{e}");
    }
}

#[tokio::test]
async fn corrupt_or_newer_files_are_refused() {
    let t = tmp();
    master(t.path());
    edit_json(t.path(), |v| v["format"] = 2.into());
    let e = LocalKms::open(t.path(), Unlock::master_key_file()).unwrap_err();
    assert!(matches!(e, LocalError::UnsupportedVersion { found: 2, .. }), "{e}");
    edit_json(t.path(), |v| {
        v["format"] = 1.into();
        v["surprise"] = "MARKER-field-value".into();
    });
    let e = LocalKms::open(t.path(), Unlock::master_key_file()).unwrap_err();
    assert!(matches!(e, LocalError::Corrupt { .. }), "{e}");
    assert!(!format!("{e} {e:?}").contains("MARKER"), "{e}");
}

#[tokio::test]
async fn no_secret_in_errors_or_debug() {
    let t = tmp();
    let dir = t.path().join("p");
    let kms = passphrase_store(&dir, MARKER_PASSPHRASE);
    let c = ctx(&[]);
    let generated = kms.generate_data_key("alias/default", &c).await.unwrap();
    let data_key_hex = hex::encode(generated.data_key.expose_secret());
    let m = t.path().join("m");
    master(&m);
    let master_hex = hex::encode(fs::read(m.join("master.key")).unwrap());

    let mut texts = vec![
        format!("{kms:?}"),
        format!("{generated:?}"),
        format!("{:?}", Unlock::passphrase(MARKER_PASSPHRASE)),
        format!("{:?}", InitOptions::new(Unlock::passphrase(MARKER_PASSPHRASE))),
    ];
    let local_errors = [
        LocalKms::open(&dir, Unlock::passphrase(format!("{MARKER_PASSPHRASE}x"))).unwrap_err(),
        LocalKms::open(&dir, Unlock::master_key_file()).unwrap_err(),
        LocalKms::open(&m, Unlock::passphrase(MARKER_PASSPHRASE)).unwrap_err(),
        LocalKms::init(&dir, InitOptions::new(Unlock::passphrase(MARKER_PASSPHRASE))).unwrap_err(),
    ];
    for e in &local_errors {
        texts.push(format!("{e} {e:?}"));
    }
    let mut bad = generated.wrapped.clone();
    bad.blob[40] ^= 1;
    let kms_errors = [
        kms.decrypt(&bad, &c).await.unwrap_err(),
        kms.decrypt(&generated.wrapped, &ctx(&[("x", "y")])).await.unwrap_err(),
        kms.encrypt("alias/none", b"x", &c).await.unwrap_err(),
        kms.encrypt("alias/default", &[0u8; MAX_DIRECT_ENCRYPT + 1], &c).await.unwrap_err(),
    ];
    for e in &kms_errors {
        texts.push(format!("{e} {e:?}"));
    }
    let d = kms.decrypt(&generated.wrapped, &c).await.unwrap();
    texts.push(format!("{d:?}"));
    for text in &texts {
        assert!(!text.contains(MARKER_PASSPHRASE), "{text}");
        assert!(!text.contains(&data_key_hex), "{text}");
        assert!(!text.contains(&master_hex), "{text}");
        assert!(!text.to_lowercase().contains(&data_key_hex[..16]), "{text}");
    }
}

#[test]
fn default_argon2_parameters_are_recorded() {
    let t = tmp();
    // Default parameters (64 MiB, t=3): one real derivation, to check they are what is stored.
    LocalKms::open_or_create(t.path(), Unlock::passphrase("pw")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&fs::read(t.path().join("keystore.json")).unwrap()).unwrap();
    let u = &json["unlock"];
    assert_eq!((u["mode"].as_str(), u["kdf"].as_str()), (Some("passphrase"), Some("argon2id")));
    assert_eq!((u["m_cost_kib"].as_u64(), u["t_cost"].as_u64(), u["p_cost"].as_u64()), (Some(65536), Some(3), Some(1)));
    assert_eq!(u["version"].as_u64(), Some(19));
}

/// The trait objects the CLI uses work as `Arc<dyn Kms>`.
#[tokio::test]
async fn usable_as_trait_object() {
    let t = tmp();
    let kms: Arc<dyn Kms> = Arc::new(master(t.path()));
    let c = ctx(&[]);
    let g = kms.generate_data_key("alias/default", &c).await.unwrap();
    let w: WrappedKey = g.wrapped;
    let k = envseal_core::kms::decrypt_data_key(kms.as_ref(), &w, &c).await.unwrap();
    assert_eq!(k.data_key.expose_secret(), g.data_key.expose_secret());
}

/// Issue 17: a rotation period set with `update_key` is applied; the next wrap after the
/// period uses a new version, old blobs still open, and the sweep rotates idle keys.
#[tokio::test]
async fn automatic_rotation_is_applied() {
    use envseal_core::kms::KeyUpdate;
    use std::time::Duration;

    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("ks");
    let kms = LocalKms::open_or_create(&dir, Unlock::master_key_file()).unwrap();
    let ctx = EncryptionContext::new();
    let old = kms.generate_data_key("alias/default", &ctx).await.unwrap();
    assert_eq!(old.wrapped.key_version, "1");
    let idle = kms.create_key(&Default::default()).await.unwrap();
    let m =
        kms.update_key("alias/default", &KeyUpdate::default().rotation(Some(Duration::from_secs(1)))).await.unwrap();
    assert_eq!(m.rotation_period, Some(Duration::from_secs(1)));
    kms.update_key(&idle.key_id, &KeyUpdate::default().rotation(Some(Duration::from_secs(1)))).await.unwrap();
    assert!(m.next_rotation().is_some());
    // Whole seconds on disk: after two the period has surely passed.
    std::thread::sleep(Duration::from_millis(2100));
    let new = kms.generate_data_key("alias/default", &ctx).await.unwrap();
    assert_eq!(new.wrapped.key_version, "2", "rotated before the wrap");
    assert_eq!(kms.decrypt(&old.wrapped, &ctx).await.unwrap().key_version, "1");
    // Another handle on the same directory sees the policy (it is in the file) and the sweep
    // rotates the idle key once.
    let other = LocalKms::open(&dir, Unlock::master_key_file()).unwrap();
    assert_eq!(other.rotate_due_keys().unwrap(), vec![idle.key_id.clone()]);
    assert_eq!(other.describe_key(&idle.key_id).await.unwrap().current_version, "2");
    assert!(other.rotate_due_keys().unwrap().is_empty(), "not due again yet");
    // Turning it off stops it.
    kms.update_key("alias/default", &KeyUpdate::default().rotation(None)).await.unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(kms.generate_data_key("alias/default", &ctx).await.unwrap().wrapped.key_version, "2");
    // Description, tags and alias moves are kept in the file.
    kms.update_key(&idle.key_id, &KeyUpdate::default().description("d2").tag("team", "a").untag("none")).await.unwrap();
    kms.update_alias("alias/default", &idle.key_id).await.unwrap();
    let m = other.describe_key("alias/default").await.unwrap();
    assert_eq!((m.key_id.as_str(), m.description.as_str()), (idle.key_id.as_str(), "d2"));
    assert_eq!(m.tags.get("team").map(String::as_str), Some("a"));
    assert!(other.update_alias("alias/nope", &idle.key_id).await.is_err());
}
