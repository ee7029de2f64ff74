//! envseal-fields on PostgreSQL, one run (issue 18 §6; bench/fields.sh runs it):
//!
//! 1. inserting N rows (default 1,000,000) with 3 sealed columns and 1 blind index, against the
//!    same rows in plaintext (with a plain B-tree index on the e-mail), in the same run:
//!    interleaved rounds, batches of 1,000 rows per `INSERT ... SELECT FROM UNNEST(...)`, one
//!    writer; rows/s per round (median, min–max) and the ratio;
//! 2. KMS calls per million rows (the cipher's own count), with the default cache policy but
//!    `max_age` cut to 10 s (so that step 5's settle period is 10 s), and with a tight one
//!    (100,000 values per data key);
//! 3. table sizes;
//! 4. rewrap of the key vault after a KMS key rotation (seconds; the table is not touched);
//! 5. re-key of the SSN column of all N rows (rows/s) while the application keeps inserting
//!    (its rows/s during the re-key, against its rate in step 1).
//!
//! The KMS is the local keystore (the default backend), PostgreSQL the Debian server started on a
//! private port with its default settings (fsync on). Run:
//! `cargo bench -p envseal-fields --features sqlx-postgres --bench pg -- [--rows N]`.
//! A measurement, not a test.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use envseal_core::Kms;
use envseal_core::kms::KeyManager;
use envseal_core::rewrap::{Rewrapper, Target};
use envseal_fields::pg::{PgCheckpoints, PgTable, PgVault};
use envseal_fields::rotate::{self, RekeySpec, RewrapSpec};
use envseal_fields::{CachePolicy, EncryptionContext, FieldCipher, IndexDef, IndexTerm, Normalize, Sealed};
use envseal_kms_local::{LocalKms, Unlock};
use envseal_testkit::postgres::TempPostgres;
use sqlx::postgres::{PgPool, PgPoolOptions};

const BATCH: usize = 1000;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Row {
    id: i64,
    name: String,
    email: String,
    phone: String,
    ssn: String,
}

fn row(i: i64) -> Row {
    Row {
        id: i,
        name: format!("User {i}"),
        email: format!("user.{i}@example.org"),
        phone: format!("+1 555 {:03} {:04}", i % 1000, i % 10_000),
        ssn: format!("{:03}-{:02}-{:04}", 100 + i % 800, 10 + i % 90, i % 10_000),
    }
}

const SCHEMA: &str = "
CREATE TABLE users_plain (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT NOT NULL, ssn TEXT NOT NULL);
CREATE INDEX users_plain_email ON users_plain (email);
CREATE TABLE users_sealed (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email BYTEA NOT NULL, phone BYTEA NOT NULL, ssn BYTEA NOT NULL, email_idx BYTEA NOT NULL);
CREATE INDEX users_sealed_email_idx ON users_sealed (email_idx);";

/// One batch of rows, ready to insert.
enum Batch {
    Plain {
        id: Vec<i64>,
        name: Vec<String>,
        email: Vec<String>,
        phone: Vec<String>,
        ssn: Vec<String>,
    },
    Sealed {
        id: Vec<i64>,
        name: Vec<String>,
        email: Vec<Sealed>,
        phone: Vec<Sealed>,
        ssn: Vec<Sealed>,
        idx: Vec<IndexTerm>,
    },
}

fn prepare_plain(ids: Range<i64>) -> Batch {
    let rows: Vec<Row> = ids.map(row).collect();
    Batch::Plain {
        id: rows.iter().map(|r| r.id).collect(),
        name: rows.iter().map(|r| r.name.clone()).collect(),
        email: rows.iter().map(|r| r.email.clone()).collect(),
        phone: rows.iter().map(|r| r.phone.clone()).collect(),
        ssn: rows.iter().map(|r| r.ssn.clone()).collect(),
    }
}

/// One `INSERT ... SELECT FROM UNNEST(...)` of a batch.
async fn insert(pool: &PgPool, b: Batch) -> Res<()> {
    match b {
        Batch::Plain { id, name, email, phone, ssn } => {
            sqlx::query("INSERT INTO users_plain SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])")
                .bind(id)
                .bind(name)
                .bind(email)
                .bind(phone)
                .bind(ssn)
                .execute(pool)
                .await?;
        }
        Batch::Sealed { id, name, email, phone, ssn, idx } => {
            sqlx::query(
                "INSERT INTO users_sealed SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[])",
            )
            .bind(id)
            .bind(name)
            .bind(email)
            .bind(phone)
            .bind(ssn)
            .bind(idx)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// Inserts `ids` in batches, preparing batch k + 1 (building the rows, and sealing them when
/// `app` is given) while batch k is in the database, as an application with requests in flight
/// does; the same for plaintext and sealed rows. Returns the time spent preparing.
async fn load(pool: &PgPool, app: Option<&App>, ids: Range<i64>) -> Res<Duration> {
    let end = ids.end;
    let prep = |s: i64| async move {
        let t = Instant::now();
        let r = s..(s + BATCH as i64).min(end);
        let b = match app {
            Some(a) => a.prepare(r).await?,
            None => prepare_plain(r),
        };
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((b, t.elapsed()))
    };
    let mut starts = ids.step_by(BATCH);
    let Some(first) = starts.next() else { return Ok(Duration::ZERO) };
    let (mut cur, mut spent) = prep(first).await?;
    for s in starts {
        let (done, next) = tokio::join!(insert(pool, cur), prep(s));
        done?;
        let (b, d) = next?;
        spent += d;
        cur = b;
    }
    insert(pool, cur).await?;
    Ok(spent)
}

struct App {
    email: envseal_fields::Column,
    phone: envseal_fields::Column,
    ssn: envseal_fields::Column,
    email_idx: envseal_fields::Index,
}

impl App {
    fn new(c: &FieldCipher) -> Res<Self> {
        let def = IndexDef::new("email_idx", [("email", Normalize::Lowercase)], 24)?;
        Ok(Self {
            email: c.column("users_sealed", "email")?,
            phone: c.column("users_sealed", "phone")?,
            ssn: c.column("users_sealed", "ssn")?,
            email_idx: c.index("users_sealed", &def)?,
        })
    }

    /// Seals a batch: 3 values and 1 index term per row.
    async fn prepare(&self, ids: Range<i64>) -> Res<Batch> {
        let n = ids.end.saturating_sub(ids.start) as usize;
        let (mut id, mut name, mut email, mut phone, mut ssn, mut idx) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in ids.map(row) {
            let pk = r.id.to_string();
            email.push(self.email.seal(r.email.as_bytes(), Some(&pk)).await?);
            phone.push(self.phone.seal(r.phone.as_bytes(), Some(&pk)).await?);
            ssn.push(self.ssn.seal(r.ssn.as_bytes(), Some(&pk)).await?);
            idx.push(self.email_idx.term(&[r.email.as_bytes()]).await?);
            id.push(r.id);
            name.push(r.name);
        }
        Ok(Batch::Sealed { id, name, email, phone, ssn, idx })
    }
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

async fn bench(rows: i64) -> Res<()> {
    let pg = TempPostgres::start_with(&[])?;
    pg.create_database("bench")?;
    let pool = PgPoolOptions::new().max_connections(8).connect(&pg.url("bench")).await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    let vault = Arc::new(PgVault::new(pool.clone(), "envseal_key_vault")?);
    vault.create_table().await?;
    let jobs = PgCheckpoints::new(pool.clone(), "envseal_jobs")?;
    jobs.create_table().await?;
    let dir = tempfile::tempdir()?;
    let local = Arc::new(LocalKms::open_or_create(dir.path().join("keystore"), Unlock::master_key_file())?);
    let kms: Arc<dyn Kms> = local.clone();
    let base = EncryptionContext::from_pairs([("app", "bench")])?;
    // The application's writers reuse a data key for at most 10 s (the default is 5 min): the
    // re-key's settle period below is then 10 s.
    let policy = CachePolicy { max_age: Duration::from_secs(10), ..CachePolicy::default() };
    let cipher = FieldCipher::builder(kms.clone(), "alias/default", vault.clone())
        .context(base.clone())
        .cache(policy)
        .build()?;
    let app = App::new(&cipher)?;

    // 1. Inserts, interleaved rounds.
    let rounds = 10i64;
    let per_round = rows / rounds;
    let (mut plain_rates, mut sealed_rates) = (Vec::new(), Vec::new());
    let (mut plain_total, mut sealed_total, mut sealing_total) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut next = 1i64;
    for r in 0..rounds {
        let start = next;
        let end = start + per_round;
        let order = if r % 2 == 0 { [true, false] } else { [false, true] };
        for sealed in order {
            let t = Instant::now();
            let spent = load(&pool, sealed.then_some(&app), start..end).await?;
            let d = t.elapsed();
            if sealed {
                sealing_total += spent;
            }
            if sealed {
                sealed_total += d;
                sealed_rates.push(per_round as f64 / d.as_secs_f64());
            } else {
                plain_total += d;
                plain_rates.push(per_round as f64 / d.as_secs_f64());
            }
        }
        next = end;
        eprint!("\rinserts: round {}/{rounds}", r + 1);
    }
    eprintln!();
    let total = per_round * rounds;
    let (pm, pmin, pmax) = stats(plain_rates);
    let (sm, smin, smax) = stats(sealed_rates);
    println!(
        "envseal-fields on PostgreSQL ({} rows per table, {rounds} interleaved rounds, batches of {BATCH}, one writer)",
        total
    );
    println!(
        "1. insert, plaintext (5 text columns, B-tree on email):        median {pm:>8.0} rows/s (min {pmin:.0}, max {pmax:.0}); total {:.1} s",
        plain_total.as_secs_f64()
    );
    println!(
        "   insert, sealed (3 sealed columns + 1 blind index, B-tree): median {sm:>8.0} rows/s (min {smin:.0}, max {smax:.0}); total {:.1} s",
        sealed_total.as_secs_f64()
    );
    println!(
        "   sealed / plaintext: {:.2}x (medians), {:.2}x (totals)",
        sm / pm,
        plain_total.as_secs_f64() / sealed_total.as_secs_f64()
    );
    println!(
        "   sealing 3 values and computing 1 term per row took {:.1} s in all ({:.2} us per row), overlapped with the database's work on the previous batch",
        sealing_total.as_secs_f64(),
        sealing_total.as_secs_f64() * 1e6 / total as f64
    );

    // 2. KMS calls.
    let st = cipher.stats();
    println!(
        "2. KMS calls for {total} sealed rows: {} ({:.1} per million rows; {} data keys, {} index keys; cache policy: 2^20 values, 1 GiB or {} s per data key)",
        st.kms_calls,
        st.kms_calls as f64 * 1e6 / total as f64,
        st.data_keys_created,
        st.index_keys_created,
        policy.max_age.as_secs()
    );
    let tight = FieldCipher::builder(kms.clone(), "alias/default", vault.clone())
        .context(base.clone())
        .cache(CachePolicy { max_messages: 100_000, ..policy })
        .build()?;
    let tight_app = App::new(&tight)?;
    let sample = 300_000i64.min(rows);
    sqlx::raw_sql("CREATE TEMP TABLE scratch (LIKE users_sealed)").execute(&pool).await.ok();
    let t = Instant::now();
    for i in (0..sample).step_by(BATCH) {
        // Seal only (no insert): the KMS calls depend on the values sealed, not on the table.
        for r in (10_000_000 + i..10_000_000 + i + BATCH as i64).map(row) {
            let pk = r.id.to_string();
            tight_app.email.seal(r.email.as_bytes(), Some(&pk)).await?;
            tight_app.phone.seal(r.phone.as_bytes(), Some(&pk)).await?;
            tight_app.ssn.seal(r.ssn.as_bytes(), Some(&pk)).await?;
            tight_app.email_idx.term(&[r.email.as_bytes()]).await?;
        }
    }
    let ts = tight.stats();
    println!(
        "   with max_messages = 100,000: {} KMS calls for {sample} rows ({:.1} per million rows; sealing only, {:.1} s)",
        ts.kms_calls,
        ts.kms_calls as f64 * 1e6 / sample as f64,
        t.elapsed().as_secs_f64()
    );

    // 3. Sizes.
    let sizes: (i64, i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('users_plain'), pg_total_relation_size('users_sealed'), pg_total_relation_size('envseal_key_vault')",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "3. size on disk (tables with indexes): plaintext {:.0} MiB, sealed {:.0} MiB ({:.2}x), key vault {} KiB",
        sizes.0 as f64 / 1048576.0,
        sizes.1 as f64 / 1048576.0,
        sizes.1 as f64 / sizes.0 as f64,
        sizes.2 / 1024
    );

    // 4. Rewrap after a KMS key rotation.
    let digest = "SELECT md5(string_agg(md5(email || phone || ssn || email_idx), '' ORDER BY id)) FROM users_sealed";
    let before: (String,) = sqlx::query_as(digest).fetch_one(&pool).await?;
    local.rotate_key("alias/default").await?;
    let rw = Rewrapper::new(kms.clone(), Target::Latest);
    let r = rotate::rewrap_vault(vault.as_ref(), &rw, &jobs, &RewrapSpec::new("bench-rewrap")).await?;
    let after: (String,) = sqlx::query_as(digest).fetch_one(&pool).await?;
    println!(
        "4. rewrap of the key vault after a key rotation: {} entries in {:.3} s ({} failed); {} rows of the sealed table unchanged: {}",
        r.rewrapped,
        r.elapsed_secs,
        r.failed,
        total,
        before == after
    );

    // 5. Re-key of the SSN column while the application inserts.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (pool, stop, cipher) = (pool.clone(), stop.clone(), cipher.clone());
        let first = next + 20_000_000;
        tokio::spawn(async move {
            let app = App::new(&cipher)?;
            let (mut i, t) = (first, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                load(&pool, Some(&app), i..i + 10 * BATCH as i64).await?;
                i += 10 * BATCH as i64;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(((i - first) as f64, t.elapsed().as_secs_f64()))
        })
    };
    let mut spec = RekeySpec::new("bench-rekey-ssn", "users_sealed", "id", vec!["ssn".into()]);
    spec.batch = BATCH;
    spec.concurrency = 4;
    spec.settle = policy.max_age;
    spec.sleep = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
    let table = PgTable::new(pool.clone(), "users_sealed", "id", spec.store_columns()).await?;
    let rep = rotate::rekey(&cipher, &table, &jobs, &spec).await?;
    stop.store(true, Ordering::Relaxed);
    let (inserted, secs) = writer.await??;
    println!(
        "5. re-key of the SSN column: {} rows re-keyed in {:.1} s: the walk over the table ({} rows, new ones included) took {:.1} s ({:.0} rows/s), then {:.1} s of settle (the writers' max_age) and {} sweep(s) ({:.1} s); {} redone after concurrent writes, {} KMS calls, complete: {}",
        rep.rekeyed,
        rep.elapsed_secs,
        rep.walked,
        rep.walk_secs,
        rep.walked as f64 / rep.walk_secs,
        rep.settle_secs,
        rep.sweeps,
        rep.elapsed_secs - rep.walk_secs - rep.settle_secs,
        rep.conflicts,
        rep.kms_calls,
        rep.complete
    );
    println!(
        "   the application meanwhile inserted {inserted:.0} sealed rows at {:.0} rows/s ({:.2}x its rate without the re-key, {sm:.0} rows/s)",
        inserted / secs,
        inserted / secs / sm
    );
    drop(pool);
    drop(pg);
    Ok(())
}

fn main() {
    let mut rows = 1_000_000i64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rows" {
            rows = args.next().and_then(|n| n.parse().ok()).unwrap_or(rows);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    if let Err(e) = rt.block_on(bench(rows)) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
