//! envseal-fields on SQLite (rusqlite, the system libsqlite3): typed records in a users table,
//! blind-index queries, tamper checks, a vault in a file of its own, rewrap after a KMS key
//! rotation, and an online re-key while the application keeps writing, interrupted and resumed.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Flaky, SEALED, User, UserSealed, assert_opens, assert_rekeyed, cipher, local_kms, user};
use envseal_core::Kms;
use envseal_core::envelope::Envelope;
use envseal_core::kms::KeyManager;
use envseal_core::rewrap::{Rewrapper, Target};
use envseal_fields::rotate::{self, RekeySpec, RewrapSpec};
use envseal_fields::sqlite::{SharedConnection, SqliteCheckpoints, SqliteTable, SqliteVault};
use envseal_fields::{
    CachePolicy, EntryState, Error, FieldCipher, IndexTerm, KeyKind, KeyVault, Record, Sealed, keyref,
};
use rusqlite::{Connection, params};

const CREATE_USERS: &str = "CREATE TABLE users (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    email BLOB NOT NULL, phone BLOB NOT NULL, ssn BLOB,
    email_idx BLOB NOT NULL, phone_idx BLOB NOT NULL, contact_idx BLOB NOT NULL);
  CREATE INDEX users_email_idx ON users (email_idx);
  CREATE INDEX users_phone_idx ON users (phone_idx);
  CREATE INDEX users_contact_idx ON users (contact_idx);";

const SELECT_USERS: &str = "SELECT id, name, email, phone, ssn, email_idx, phone_idx, contact_idx FROM users";

struct Db {
    _dir: tempfile::TempDir,
    conn: SharedConnection,
    vault: Arc<SqliteVault>,
    jobs: SqliteCheckpoints,
    kms: Arc<envseal_kms_local::LocalKms>,
}

fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let conn = Arc::new(Mutex::new(Connection::open(dir.path().join("app.db")).unwrap()));
    conn.lock().unwrap().execute_batch(CREATE_USERS).unwrap();
    let vault = Arc::new(SqliteVault::new(conn.clone(), "envseal_key_vault").unwrap());
    vault.create_table().unwrap();
    let jobs = SqliteCheckpoints::new(conn.clone(), "envseal_jobs").unwrap();
    jobs.create_table().unwrap();
    let kms = local_kms(&dir.path().join("keystore"));
    Db { _dir: dir, conn, vault, jobs, kms }
}

impl Db {
    fn cipher(&self, policy: CachePolicy) -> FieldCipher {
        cipher(self.kms.clone(), self.vault.clone(), policy)
    }
}

const INSERT: &str = "INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const UPDATE: &str = "UPDATE users SET name = ?2, email = ?3, phone = ?4, ssn = ?5, email_idx = ?6, phone_idx = ?7, contact_idx = ?8 WHERE id = ?1";

/// Runs INSERT or UPDATE with a row's columns as ?1..?8.
fn write(conn: &SharedConnection, sql: &str, s: &UserSealed) {
    conn.lock()
        .unwrap()
        .execute(sql, params![s.id, s.name, s.email, s.phone, s.ssn, s.email_idx, s.phone_idx, s.contact_idx])
        .unwrap();
}

fn insert(conn: &SharedConnection, s: &UserSealed) {
    write(conn, INSERT, s)
}

fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserSealed> {
    Ok(UserSealed {
        id: r.get(0)?,
        name: r.get(1)?,
        email: r.get(2)?,
        phone: r.get(3)?,
        ssn: r.get(4)?,
        email_idx: r.get(5)?,
        phone_idx: r.get(6)?,
        contact_idx: r.get(7)?,
    })
}

fn select(conn: &SharedConnection, sql_where: &str, terms: &[IndexTerm]) -> Vec<UserSealed> {
    let conn = conn.lock().unwrap();
    let marks: Vec<String> = (1..=terms.len()).map(|i| format!("?{i}")).collect();
    let sql = format!("{SELECT_USERS} WHERE {sql_where} IN ({}) ORDER BY id", marks.join(", "));
    let mut stmt = conn.prepare(&sql).unwrap();
    stmt.query_map(rusqlite::params_from_iter(terms.iter()), read).unwrap().collect::<Result<_, _>>().unwrap()
}

fn all(conn: &SharedConnection) -> Vec<UserSealed> {
    let conn = conn.lock().unwrap();
    let mut stmt = conn.prepare(&format!("{SELECT_USERS} ORDER BY id")).unwrap();
    stmt.query_map([], read).unwrap().collect::<Result<_, _>>().unwrap()
}

async fn populate(db: &Db, c: &FieldCipher, n: i64) {
    for i in 1..=n {
        insert(&db.conn, &user(i).seal(c).await.unwrap());
    }
}

#[tokio::test]
async fn typed_records_round_trip_and_blind_index_queries() {
    let db = db();
    let c = db.cipher(CachePolicy::default());
    populate(&db, &c, 300).await;
    let stats = c.stats();
    assert_eq!(stats.data_keys_created, 3, "one data key per sealed column, not per row");
    assert_eq!(stats.index_keys_created, 3);

    // What the table holds: BLOBs of exactly 29 bytes over the plaintext; nothing readable.
    let rows = all(&db.conn);
    assert_eq!(rows.len(), 300);
    for (s, u) in rows.iter().zip((1..).map(user)) {
        assert_eq!(s.email.as_bytes().len(), keyref::OVERHEAD + u.email.len());
        assert!(!String::from_utf8_lossy(s.email.as_bytes()).contains("Example"));
        assert_opens(&c, s, &u).await;
    }

    // Equality through the index, case-insensitively: exactly one row.
    let q = User::email_idx(&c, &"user42@EXAMPLE.com ".to_string()).await.unwrap();
    let found = select(&db.conn, "email_idx", q.terms());
    let mut matched = Vec::new();
    for s in &found {
        let u = User::open(s, &c).await.unwrap();
        if q.matches(&u).unwrap() {
            matched.push(u);
        }
    }
    assert_eq!(matched, vec![user(42)]);
    let q = User::phone_idx(&c, &"1-555-042-0042".to_string()).await.unwrap();
    let found = select(&db.conn, "phone_idx", q.terms());
    assert!(found.iter().any(|s| s.id == 42));

    // A 4-bit index returns about 1 row in 16: false positives, which `matches` drops.
    let u7 = user(7);
    let q = User::contact_idx(&c, &u7.email, &u7.phone).await.unwrap();
    let found = select(&db.conn, "contact_idx", q.terms());
    assert!(found.len() > 3, "a 4-bit index over 300 rows matches ~19 rows, got {}", found.len());
    let mut real = 0;
    for s in &found {
        if q.matches(&User::open(s, &c).await.unwrap()).unwrap() {
            real += 1;
        }
    }
    assert_eq!(real, 1);

    // The sealed companion serializes with serde: text forms in JSON.
    let json = serde_json::to_string(&rows[0]).unwrap();
    assert!(json.contains("\"email\":\"esk1:"), "{json}");
    let back: UserSealed = serde_json::from_str(&json).unwrap();
    assert_opens(&c, &back, &user(1)).await;
}

#[tokio::test]
async fn values_moved_to_another_row_or_column_do_not_open() {
    let db = db();
    let c = db.cipher(CachePolicy::default());
    populate(&db, &c, 3).await;
    db.conn
        .lock()
        .unwrap()
        .execute("UPDATE users SET email = (SELECT email FROM users WHERE id = 1) WHERE id = 2", [])
        .unwrap();
    db.conn
        .lock()
        .unwrap()
        .execute("UPDATE users SET phone = (SELECT email FROM users WHERE id = 3) WHERE id = 3", [])
        .unwrap();
    let rows = all(&db.conn);
    assert_opens(&c, &rows[0], &user(1)).await;
    let e = User::open(&rows[1], &c).await.unwrap_err();
    assert!(matches!(e, Error::Core(envseal_core::Error::Format(envseal_core::FormatError::ValueTampered))), "{e}");
    let e = User::open(&rows[2], &c).await.unwrap_err();
    assert!(matches!(e, Error::WrongScope { .. }), "{e}");
    // A flipped bit anywhere in a value.
    let mut bad = rows[0].email.as_bytes().to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let tampered = UserSealed { email: Sealed::from_bytes(bad), ..rows[0].clone() };
    assert!(User::open(&tampered, &c).await.is_err());
}

#[tokio::test]
async fn a_small_app_keeps_its_key_vault_in_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let kms = local_kms(&dir.path().join("keystore"));
    let vault_path = dir.path().join("keys.db");
    let sealed = {
        let conn = Arc::new(Mutex::new(Connection::open(&vault_path).unwrap()));
        let vault = Arc::new(SqliteVault::new(conn, "envseal_key_vault").unwrap());
        vault.create_table().unwrap();
        let c = cipher(kms.clone(), vault, CachePolicy::default());
        user(5).seal(&c).await.unwrap()
    };
    // Another process: opens the file again.
    let conn = Arc::new(Mutex::new(Connection::open(&vault_path).unwrap()));
    let vault = Arc::new(SqliteVault::new(conn, "envseal_key_vault").unwrap());
    let c = cipher(kms, vault.clone(), CachePolicy::default());
    assert_opens(&c, &sealed, &user(5)).await;
    assert_eq!(vault.list(0, 100).await.unwrap().len(), 6, "3 data keys and 3 index keys");
}

#[tokio::test]
async fn rewrap_after_a_key_rotation_touches_only_the_vault() {
    let db = db();
    let c = db.cipher(CachePolicy { max_messages: 40, ..CachePolicy::default() });
    populate(&db, &c, 100).await;
    let before = all(&db.conn);
    let entries = db.vault.list(0, 1000).await.unwrap();
    // ceil(100/40) data keys for e-mail and phone, ceil(67/40) for the 67 SSNs, 3 index keys.
    assert_eq!(entries.len(), 3 + 3 + 2 + 3);

    db.kms.rotate_key("alias/default").await.unwrap();
    let rw = Rewrapper::new(db.kms.clone() as Arc<dyn Kms>, Target::Latest);
    let mut spec = RewrapSpec::new("rewrap-1");
    spec.batch = 5;
    let r = rotate::rewrap_vault(db.vault.as_ref(), &rw, &db.jobs, &spec).await.unwrap();
    assert_eq!((r.entries, r.rewrapped, r.failed), (11, 11, 0), "{r:?}");
    for e in db.vault.list(0, 1000).await.unwrap() {
        assert_eq!(Envelope::parse(&e.envelope).unwrap().entry().unwrap().key_version, "2");
    }
    let after = all(&db.conn);
    for (a, b) in before.iter().zip(&after) {
        assert_eq!((&a.email, &a.phone, &a.ssn, &a.email_idx), (&b.email, &b.phone, &b.ssn, &b.email_idx));
    }
    // A process starting now opens every row through the rewrapped vault.
    let fresh = db.cipher(CachePolicy::default());
    for (s, u) in after.iter().zip((1..).map(user)) {
        assert_opens(&fresh, s, &u).await;
    }
    let again = rotate::rewrap_vault(db.vault.as_ref(), &rw, &db.jobs, &RewrapSpec::new("rewrap-2")).await.unwrap();
    assert_eq!((again.rewrapped, again.at_target), (0, 11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_online_while_the_app_writes_interrupted_and_resumed() {
    let db = db();
    // The application's writers cache keys for one second.
    let policy = CachePolicy { max_age: Duration::from_secs(1), ..CachePolicy::default() };
    let app = db.cipher(policy);
    populate(&db, &app, 400).await;
    let old: HashSet<_> = db.vault.list(0, 1000).await.unwrap().into_iter().map(|r| r.id).collect();

    let columns: Vec<String> = SEALED.iter().map(|s| s.to_string()).collect();
    let mut spec = RekeySpec::new("rekey-users", "users", "id", columns.clone());
    spec.indexes = vec![rotate::IndexSpec { name: "email_idx".into(), column: "email_idx".into() }];
    spec.batch = 25;
    spec.concurrency = 2;
    spec.settle = Duration::from_secs(2);
    let table = SqliteTable::new(db.conn.clone(), "users", "id", spec.store_columns()).unwrap();

    // First run: interrupted at the 5th batch read.
    let flaky = Flaky::new(&table, 5);
    let e = rotate::rekey(&app, &flaky, &db.jobs, &spec).await.unwrap_err();
    assert!(matches!(e, Error::Database(_)), "{e}");
    let cp = db.jobs_checkpoint("rekey-users").await;
    assert!(cp.last.is_some(), "the checkpoint recorded the batches done");

    // The application keeps writing: updates to existing rows and new rows, through the same
    // cipher (with keys it cached before the job).
    let writer_app = app.clone();
    let conn = db.conn.clone();
    let writer = tokio::spawn(async move {
        let mut last: BTreeMap<i64, User> = BTreeMap::new();
        for k in 0..120i64 {
            let id = if k % 3 == 0 { 1000 + k } else { 1 + (k * 37) % 400 };
            let mut u = user(id);
            u.email = format!("changed{k}@example.org");
            let s = u.seal(&writer_app).await.unwrap();
            write(&conn, if id >= 1000 { INSERT } else { UPDATE }, &s);
            last.insert(id, u);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        last
    });
    let mut spec = spec;
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    spec.progress = Some(Arc::new(move |_p: &rotate::Progress| {
        seen2.fetch_add(1, Ordering::Relaxed);
    }));
    let report = rotate::rekey(&app, &table, &db.jobs, &spec).await.unwrap();
    let written = writer.await.unwrap();
    assert!(report.resumed, "{report:?}");
    assert!(report.complete, "{report:?}");
    assert_eq!(report.failed, 0);
    assert!(seen.load(Ordering::Relaxed) > 0);
    assert_eq!(report.generations["email_idx"], 2);

    // Every row: opens to the last value written (no lost update), under no old key.
    let fresh = db.cipher(CachePolicy::default());
    let rows = all(&db.conn);
    assert_eq!(rows.len(), 400 + 40);
    for s in &rows {
        assert_rekeyed(&fresh, s, &written.get(&s.id).cloned().unwrap_or_else(|| user(s.id)), &old).await;
    }
    // Old data keys retired, still able to open old backups; the new index generation is the only
    // one queried.
    let vault = db.vault.list(0, 10_000).await.unwrap();
    for r in vault.iter().filter(|r| old.contains(&r.id) && r.kind == KeyKind::Data) {
        assert_eq!(r.state, EntryState::Retired);
    }
    let q = User::email_idx(&fresh, &"changed3@example.org".to_string()).await.unwrap();
    assert_eq!(q.terms().len(), 1);
    let found = select(&db.conn, "email_idx", q.terms());
    assert!(found.iter().any(|s| s.id == 1003));
}

impl Db {
    async fn jobs_checkpoint(&self, job: &str) -> rotate::Checkpoint {
        use rotate::CheckpointStore;
        self.jobs.load(job).await.unwrap().expect("checkpoint stored")
    }
}
