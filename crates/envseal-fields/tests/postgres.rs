//! envseal-fields on a real PostgreSQL, started by the test on a private port and data directory
//! (`envseal_testkit::postgres`): typed records through sqlx, `WHERE email_idx = ANY($1)`, the
//! key vault table, rewrap after a KMS key rotation (the table's bytes unchanged), and an online
//! re-key with index rotation while another connection keeps writing, interrupted and resumed.
//!
//! Without PostgreSQL these tests print `SKIPPED:` and pass, unless `ENVSEAL_REQUIRE_SERVERS=1`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{Flaky, SEALED, User, UserSealed, assert_opens, assert_rekeyed, cipher, local_kms, user};
use envseal_core::Kms;
use envseal_core::envelope::Envelope;
use envseal_core::kms::KeyManager;
use envseal_core::rewrap::{Rewrapper, Target};
use envseal_fields::pg::{PgCheckpoints, PgTable, PgVault};
use envseal_fields::rotate::{self, CheckpointStore, IndexSpec, RekeySpec, RewrapSpec};
use envseal_fields::{CachePolicy, EntryState, Error, FieldCipher, IndexTerm, KeyKind, KeyVault, Record, keyref};
use envseal_testkit::postgres::TempPostgres;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, Row as _};

const CREATE_USERS: &str = "CREATE TABLE users (
    id BIGINT PRIMARY KEY, name TEXT NOT NULL,
    email BYTEA NOT NULL, phone BYTEA NOT NULL, ssn BYTEA,
    email_idx BYTEA NOT NULL, phone_idx BYTEA NOT NULL, contact_idx BYTEA NOT NULL);
  CREATE INDEX users_email_idx ON users (email_idx);
  CREATE INDEX users_phone_idx ON users (phone_idx);
  CREATE INDEX users_contact_idx ON users (contact_idx);";

struct Db {
    pg: TempPostgres,
    _dir: tempfile::TempDir,
    pool: PgPool,
    vault: Arc<PgVault>,
    jobs: PgCheckpoints,
    kms: Arc<envseal_kms_local::LocalKms>,
}

async fn db(test: &str) -> Option<Db> {
    let pg = TempPostgres::start_or_skip(test)?;
    pg.create_database("app").unwrap();
    let pool = PgPoolOptions::new().max_connections(4).connect(&pg.url("app")).await.unwrap();
    pool.execute(CREATE_USERS).await.unwrap();
    let vault = Arc::new(PgVault::new(pool.clone(), "envseal_key_vault").unwrap());
    vault.create_table().await.unwrap();
    let jobs = PgCheckpoints::new(pool.clone(), "envseal_jobs").unwrap();
    jobs.create_table().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kms = local_kms(&dir.path().join("keystore"));
    Some(Db { pg, _dir: dir, pool, vault, jobs, kms })
}

impl Db {
    fn cipher(&self, policy: CachePolicy) -> FieldCipher {
        cipher(self.kms.clone(), self.vault.clone(), policy)
    }
}

const INSERT: &str = "INSERT INTO users VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const UPDATE: &str = "UPDATE users SET name = $2, email = $3, phone = $4, ssn = $5, email_idx = $6, phone_idx = $7, contact_idx = $8 WHERE id = $1";

/// Runs INSERT or UPDATE with a row's columns as $1..$8.
async fn write(pool: &PgPool, sql: &str, s: &UserSealed) {
    sqlx::query(sql)
        .bind(s.id)
        .bind(&s.name)
        .bind(&s.email)
        .bind(&s.phone)
        .bind(&s.ssn)
        .bind(&s.email_idx)
        .bind(&s.phone_idx)
        .bind(&s.contact_idx)
        .execute(pool)
        .await
        .unwrap();
}

async fn insert(pool: &PgPool, s: &UserSealed) {
    write(pool, INSERT, s).await
}

fn read(r: &PgRow) -> UserSealed {
    UserSealed {
        id: r.get("id"),
        name: r.get("name"),
        email: r.get("email"),
        phone: r.get("phone"),
        ssn: r.get("ssn"),
        email_idx: r.get("email_idx"),
        phone_idx: r.get("phone_idx"),
        contact_idx: r.get("contact_idx"),
    }
}

async fn by_index(pool: &PgPool, column: &str, terms: &[IndexTerm]) -> Vec<UserSealed> {
    let sql = format!("SELECT * FROM users WHERE {column} = ANY($1) ORDER BY id");
    sqlx::query(&sql).bind(terms.to_vec()).fetch_all(pool).await.unwrap().iter().map(read).collect()
}

async fn all(pool: &PgPool) -> Vec<UserSealed> {
    sqlx::query("SELECT * FROM users ORDER BY id").fetch_all(pool).await.unwrap().iter().map(read).collect()
}

async fn populate(db: &Db, c: &FieldCipher, n: i64) {
    for i in 1..=n {
        insert(&db.pool, &user(i).seal(c).await.unwrap()).await;
    }
}

#[tokio::test]
async fn postgres_typed_records_and_blind_index_queries() {
    let Some(db) = db("postgres_typed_records_and_blind_index_queries").await else { return };
    let c = db.cipher(CachePolicy::default());
    populate(&db, &c, 300).await;
    assert_eq!(c.stats().data_keys_created, 3);

    // The server sees BYTEA values of 29 bytes over the plaintext, and a vault of 6 entries.
    let sizes = db
        .pg
        .psql(
            "app",
            "SELECT octet_length(email) - length('User1@Example.com'), pg_typeof(email) FROM users WHERE id = 1",
        )
        .unwrap();
    assert_eq!(sizes, format!("{}|bytea", keyref::OVERHEAD));
    assert_eq!(db.pg.psql("app", "SELECT count(*) FROM envseal_key_vault").unwrap(), "6");
    assert_eq!(
        db.pg.psql("app", "SELECT count(*) FROM users WHERE position('Example'::bytea in email) > 0").unwrap(),
        "0"
    );

    let q = User::email_idx(&c, &"USER123@example.com".to_string()).await.unwrap();
    let mut hits = Vec::new();
    for s in by_index(&db.pool, "email_idx", q.terms()).await {
        let u = User::open(&s, &c).await.unwrap();
        if q.matches(&u).unwrap() {
            hits.push(u);
        }
    }
    assert_eq!(hits, vec![user(123)]);

    let u9 = user(9);
    let q = User::contact_idx(&c, &u9.email, &u9.phone).await.unwrap();
    let rows = by_index(&db.pool, "contact_idx", q.terms()).await;
    assert!(rows.len() > 3, "a 4-bit index matches about 1 row in 16");
    let mut real = 0;
    for s in &rows {
        real += usize::from(q.matches(&User::open(s, &c).await.unwrap()).unwrap());
    }
    assert_eq!(real, 1);

    // Another process (a fresh cipher) opens every row through the vault table.
    let other = db.cipher(CachePolicy::default());
    for (s, u) in all(&db.pool).await.iter().zip((1..).map(user)) {
        assert_opens(&other, s, &u).await;
    }
    assert_eq!(other.stats().open_misses, 3, "one vault read and KMS call per data key");
}

#[tokio::test]
async fn postgres_rewrap_touches_only_the_vault() {
    let Some(db) = db("postgres_rewrap_touches_only_the_vault").await else { return };
    let c = db.cipher(CachePolicy { max_messages: 30, ..CachePolicy::default() });
    populate(&db, &c, 100).await;
    let digest = "SELECT md5(string_agg(id::text || encode(email, 'hex') || encode(phone, 'hex') || coalesce(encode(ssn, 'hex'), '') || encode(email_idx, 'hex'), ',' ORDER BY id)) FROM users";
    let before = db.pg.psql("app", digest).unwrap();
    let n = db.vault.list(0, 1000).await.unwrap().len() as u64;

    db.kms.rotate_key("alias/default").await.unwrap();
    let rw = Rewrapper::new(db.kms.clone() as Arc<dyn Kms>, Target::Latest);
    let r = rotate::rewrap_vault(db.vault.as_ref(), &rw, &db.jobs, &RewrapSpec::new("rewrap")).await.unwrap();
    assert_eq!((r.entries, r.rewrapped, r.failed), (n, n, 0), "{r:?}");
    assert_eq!(db.pg.psql("app", digest).unwrap(), before, "not one byte of the table changed");
    for e in db.vault.list(0, 1000).await.unwrap() {
        assert_eq!(Envelope::parse(&e.envelope).unwrap().entry().unwrap().key_version, "2");
    }
    let fresh = db.cipher(CachePolicy::default());
    for (s, u) in all(&db.pool).await.iter().zip((1..).map(user)) {
        assert_opens(&fresh, s, &u).await;
    }
    assert_eq!(db.jobs.load("rewrap").await.unwrap().unwrap().phase, rotate::Phase::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rekey_online_with_a_concurrent_writer_interrupted_and_resumed() {
    let Some(db) = db("postgres_rekey_online_with_a_concurrent_writer_interrupted_and_resumed").await else { return };
    let policy = CachePolicy { max_age: Duration::from_secs(1), ..CachePolicy::default() };
    let app = db.cipher(policy);
    populate(&db, &app, 600).await;
    let old: HashSet<_> = db.vault.list(0, 1000).await.unwrap().into_iter().map(|r| r.id).collect();

    let mut spec = RekeySpec::new("rekey-users", "users", "id", SEALED.iter().map(|s| s.to_string()).collect());
    spec.indexes = vec![IndexSpec { name: "email_idx".into(), column: "email_idx".into() }];
    spec.batch = 50;
    spec.concurrency = 3;
    spec.settle = Duration::from_secs(2);
    let table = PgTable::new(db.pool.clone(), "users", "id", spec.store_columns()).await.unwrap();

    let flaky = Flaky::new(&table, 4);
    assert!(rotate::rekey(&app, &flaky, &db.jobs, &spec).await.is_err());
    let cp = db.jobs.load("rekey-users").await.unwrap().unwrap();
    assert_eq!(cp.phase, rotate::Phase::Walk);
    assert!(cp.processed >= 100, "{cp:?}");
    assert_eq!(cp.last.as_deref(), Some("150"), "batches are in primary-key order: {cp:?}");

    let (writer_app, pool) = (app.clone(), db.pool.clone());
    let writer = tokio::spawn(async move {
        let mut last: BTreeMap<i64, User> = BTreeMap::new();
        for k in 0..150i64 {
            let id = if k % 3 == 0 { 5000 + k } else { 1 + (k * 53) % 600 };
            let mut u = user(id);
            u.email = format!("moved{k}@example.net");
            let s = u.seal(&writer_app).await.unwrap();
            write(&pool, if id >= 5000 { INSERT } else { UPDATE }, &s).await;
            last.insert(id, u);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last
    });
    let report = rotate::rekey(&app, &table, &db.jobs, &spec).await.unwrap();
    let written = writer.await.unwrap();
    assert!(report.resumed && report.complete, "{report:?}");
    assert_eq!(report.failed, 0);
    assert!(report.retired_keys >= 3, "{report:?}");

    let fresh = db.cipher(CachePolicy::default());
    let rows = all(&db.pool).await;
    assert_eq!(rows.len(), 600 + 50);
    for s in &rows {
        assert_rekeyed(&fresh, s, &written.get(&s.id).cloned().unwrap_or_else(|| user(s.id)), &old).await;
    }
    for r in db.vault.list(0, 10_000).await.unwrap() {
        if old.contains(&r.id) && r.kind == KeyKind::Data {
            assert_eq!(r.state, EntryState::Retired);
        }
    }
    let q = User::email_idx(&fresh, &"MOVED3@example.net".to_string()).await.unwrap();
    assert!(by_index(&db.pool, "email_idx", q.terms()).await.iter().any(|s| s.id == 5003));
}

#[tokio::test]
async fn postgres_rekey_a_text_primary_key_and_a_dry_run() {
    let Some(db) = db("postgres_rekey_a_text_primary_key_and_a_dry_run").await else { return };
    db.pool.execute("CREATE TABLE notes (slug TEXT PRIMARY KEY, body BYTEA)").await.unwrap();
    let c = db.cipher(CachePolicy::default());
    let col = c.column("notes", "body").unwrap();
    for i in 0..120 {
        let slug = format!("note-{i:03}");
        let body =
            if i % 10 == 0 { None } else { Some(col.seal(format!("body {i}").as_bytes(), Some(&slug)).await.unwrap()) };
        sqlx::query("INSERT INTO notes VALUES ($1, $2)").bind(&slug).bind(&body).execute(&db.pool).await.unwrap();
    }
    let mut spec = RekeySpec::new("notes", "notes", "slug", vec!["body".into()]);
    spec.batch = 16;
    spec.settle = Duration::ZERO;
    let table = PgTable::new(db.pool.clone(), "notes", "slug", spec.store_columns()).await.unwrap();
    let mut dry = spec.clone();
    dry.dry_run = true;
    let r = rotate::rekey(&c, &table, &db.jobs, &dry).await.unwrap();
    assert_eq!((r.scanned, r.stale["body"]), (120, 108));
    assert!(db.jobs.load("notes").await.unwrap().is_none(), "a dry run stores no checkpoint");
    let r = rotate::rekey(&c, &table, &db.jobs, &spec).await.unwrap();
    assert_eq!((r.rekeyed, r.complete), (108, true));
    let rows = sqlx::query("SELECT slug, body FROM notes ORDER BY slug").fetch_all(&db.pool).await.unwrap();
    for r in rows {
        let slug: String = r.get(0);
        let body: Option<envseal_fields::Sealed> = r.get(1);
        if let Some(b) = body {
            let i: u32 = slug[5..].parse().unwrap();
            assert_eq!(
                col.open(b.as_bytes(), Some(&slug)).await.unwrap().expose_secret(),
                format!("body {i}").as_bytes()
            );
        }
    }
    // Wrong column types are refused before anything is read.
    let e = PgTable::new(db.pool.clone(), "notes", "slug", vec!["slug".into()]).await.unwrap_err();
    assert!(matches!(e, Error::Schema(_)), "{e}");
}
