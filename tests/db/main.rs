//! `envseal db rewrap|rekey` against a real PostgreSQL started by the test: rows sealed by the
//! library (envseal-fields), then the real binary rewraps the key vault after a key rotation
//! (the table's bytes unchanged) and re-keys the table with an index rotation; the library opens
//! every row afterwards. Without PostgreSQL: `SKIPPED:` (a failure with
//! `ENVSEAL_REQUIRE_SERVERS=1`).

#[path = "../e2e/util.rs"]
#[allow(dead_code)]
mod util;

use std::sync::Arc;

use envseal_core::Kms;
use envseal_fields::pg::PgVault;
use envseal_fields::{CachePolicy, EncryptionContext, FieldCipher, IndexDef, Normalize, keyref};
use envseal_kms_local::{LocalKms, Unlock};
use envseal_testkit::postgres::TempPostgres;
use util::Sandbox;

const DIGEST: &str =
    "SELECT md5(string_agg(id::text || encode(email, 'hex') || encode(email_idx, 'hex'), ',' ORDER BY id)) FROM users";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

struct World {
    s: Sandbox,
    pg: TempPostgres,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl World {
    fn cipher(&self) -> (FieldCipher, sqlx::PgPool) {
        self.rt.block_on(async {
            let kms: Arc<dyn Kms> =
                Arc::new(LocalKms::open_or_create(&self.s.home, Unlock::master_key_file()).unwrap());
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&self.url).await.unwrap();
            let vault = Arc::new(PgVault::new(pool.clone(), "envseal_key_vault").unwrap());
            vault.create_table().await.unwrap();
            let c = FieldCipher::builder(kms, "alias/default", vault)
                .context(EncryptionContext::from_pairs([("app", "cli-test")]).unwrap())
                .cache(CachePolicy { max_messages: 20, ..CachePolicy::default() })
                .build()
                .unwrap();
            (c, pool)
        })
    }

    fn open_all(&self) -> Vec<String> {
        let (c, pool) = self.cipher();
        self.rt.block_on(async {
            let col = c.column("users", "email").unwrap();
            let rows: Vec<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT id, email FROM users ORDER BY id").fetch_all(&pool).await.unwrap();
            let mut out = Vec::new();
            for (id, e) in rows {
                let pt = col.open(&e, Some(&id.to_string())).await.unwrap();
                out.push(String::from_utf8(pt.expose_secret().to_vec()).unwrap());
            }
            out
        })
    }
}

fn def() -> IndexDef {
    IndexDef::new("email_idx", [("email", Normalize::Lowercase)], 16).unwrap()
}

fn world(test: &str) -> Option<World> {
    let pg = TempPostgres::start_or_skip(test)?;
    pg.create_database("app").unwrap();
    pg.psql("app", "CREATE TABLE users (id BIGINT PRIMARY KEY, email BYTEA NOT NULL, email_idx BYTEA NOT NULL)")
        .unwrap();
    let w = World { s: Sandbox::new(), url: pg.url("app"), pg, rt: rt() };
    w.s.ok(&["init"]);
    let (c, pool) = w.cipher();
    w.rt.block_on(async {
        let col = c.column("users", "email").unwrap();
        let idx = c.index("users", &def()).unwrap();
        for i in 1..=50i64 {
            let v = format!("person{i}@example.com");
            let s = col.seal(v.as_bytes(), Some(&i.to_string())).await.unwrap();
            let t = idx.term(&[v.as_bytes()]).await.unwrap();
            sqlx::query("INSERT INTO users VALUES ($1, $2, $3)")
                .bind(i)
                .bind(&s)
                .bind(&t)
                .execute(&pool)
                .await
                .unwrap();
        }
    });
    Some(w)
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn db_rewrap_after_a_rotation_changes_only_the_vault() {
    let Some(w) = world("db_rewrap_after_a_rotation_changes_only_the_vault") else { return };
    let before = w.pg.psql("app", DIGEST).unwrap();
    let entries = w.pg.psql("app", "SELECT count(*) FROM envseal_key_vault").unwrap();
    assert_eq!(entries, "4", "50 values at 20 per data key, and one index key");
    w.s.ok(&["keys", "rotate", "alias/default"]);

    let dry = json(&w.s.ok(&["db", "rewrap", "--url", &w.url, "--dry-run", "--json"]));
    assert_eq!((dry["entries"].as_u64(), dry["rewrapped"].as_u64()), (Some(4), Some(4)), "{dry}");
    let vault_before =
        w.pg.psql("app", "SELECT md5(string_agg(encode(envelope, 'hex'), ',' ORDER BY seq)) FROM envseal_key_vault")
            .unwrap();

    let r = json(&w.s.ok(&["db", "rewrap", "--url", &w.url, "--to-latest", "--json"]));
    assert_eq!((r["rewrapped"].as_u64(), r["failed"].as_u64()), (Some(4), Some(0)), "{r}");
    assert_eq!(w.pg.psql("app", DIGEST).unwrap(), before, "the sealed columns are untouched");
    assert_ne!(
        w.pg.psql("app", "SELECT md5(string_agg(encode(envelope, 'hex'), ',' ORDER BY seq)) FROM envseal_key_vault")
            .unwrap(),
        vault_before
    );
    assert_eq!(w.open_all(), (1..=50).map(|i| format!("person{i}@example.com")).collect::<Vec<_>>());
    // Again: nothing left to do.
    let out = w.s.ok(&["db", "rewrap", "--url", &w.url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 rewrapped, 4 already at the target"), "{text}");
}

#[test]
fn db_rekey_reseals_rows_and_rotates_the_index() {
    let Some(w) = world("db_rekey_reseals_rows_and_rotates_the_index") else { return };
    let (c, pool) = w.cipher();
    let old: std::collections::HashSet<_> =
        w.rt.block_on(async { c.vault().list(0, 100).await.unwrap() }).into_iter().map(|r| r.id).collect();
    let base = ["--url", &w.url, "--table", "users", "--pk", "id", "--column", "email", "--context", "app=cli-test"];

    let dry =
        json(&w.s.ok(&[&["db", "rekey"], &base[..], &["--rotate-index", "email_idx", "--dry-run", "--json"]].concat()));
    assert_eq!((dry["scanned"].as_u64(), dry["stale"]["email"].as_u64()), (Some(50), Some(50)), "{dry}");

    let r = json(
        &w.s.ok(&[
            &["db", "rekey"],
            &base[..],
            &["--rotate-index", "email_idx", "--settle", "0s", "--batch", "7", "--json"],
        ]
        .concat()),
    );
    assert_eq!(
        (r["rekeyed"].as_u64(), r["complete"].as_bool(), r["failed"].as_u64()),
        (Some(50), Some(true), Some(0)),
        "{r}"
    );
    assert_eq!(r["generations"]["email_idx"].as_u64(), Some(2));
    assert_eq!(w.open_all(), (1..=50).map(|i| format!("person{i}@example.com")).collect::<Vec<_>>());
    let rows: Vec<(Vec<u8>, Vec<u8>)> =
        w.rt.block_on(async { sqlx::query_as("SELECT email, email_idx FROM users").fetch_all(&pool).await.unwrap() });
    for (e, t) in rows {
        assert!(!old.contains(&keyref::key_id_of(&e).unwrap()));
        assert_eq!(t[0], 2, "terms of the new generation");
    }
    // The application finds rows through the rotated index.
    let (fresh, pool) = w.cipher();
    let terms = w.rt.block_on(fresh.index("users", &def()).unwrap().terms(&[b"Person7@Example.com"])).unwrap();
    assert_eq!(terms.len(), 1);
    let hits: Vec<(i64,)> = w.rt.block_on(async {
        sqlx::query_as("SELECT id FROM users WHERE email_idx = ANY($1)").bind(terms).fetch_all(&pool).await.unwrap()
    });
    assert!(hits.contains(&(7,)));
}

/// `envseal db rekey` of users.email with this base context, no settle.
fn rekey_args<'a>(w: &'a World, context: &'a str) -> Vec<&'a str> {
    vec![
        "db",
        "rekey",
        "--url",
        &w.url,
        "--table",
        "users",
        "--pk",
        "id",
        "--column",
        "email",
        "--context",
        context,
        "--settle",
        "0s",
    ]
}

#[test]
fn db_errors_are_classified() {
    let Some(w) = world("db_errors_are_classified") else { return };
    // A column that is not BYTEA: a usage error, before anything is read or written.
    let e = w.s.fails(&["db", "rekey", "--url", &w.url, "--table", "users", "--pk", "id", "--column", "id"], 2);
    assert!(e.contains("not bytea"), "{e}");
    let e = w.s.fails(&["db", "rekey", "--url", &w.url, "--table", "users;drop", "--pk", "id", "--column", "email"], 2);
    assert!(e.contains("invalid"), "{e}");
    // The wrong base context: the KMS refuses the vault entries; the job stops before writing.
    let before = w.pg.psql("app", DIGEST).unwrap();
    let e = w.s.fails(&rekey_args(&w, "app=other"), 5);
    assert!(e.contains("context"), "{e}");
    assert_eq!(w.pg.psql("app", DIGEST).unwrap(), before);
    // A row whose value was altered: reported by key, every other row re-keyed.
    w.pg.psql("app", "UPDATE users SET email = set_byte(email, 30, get_byte(email, 30) # 1) WHERE id = 17").unwrap();
    let e = w.s.fails(&rekey_args(&w, "app=cli-test"), 7);
    assert!(e.contains("1 rows could not be opened") && e.contains(": 17"), "{e}");
    // No server there.
    let e = w.s.fails(&["db", "rewrap", "--url", "postgres://envseal@127.0.0.1:1/app"], 1);
    assert!(e.contains("cannot connect"), "{e}");
}
