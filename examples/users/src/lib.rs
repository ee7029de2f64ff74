//! The example application (README.md): [`run`] does every step and writes what it sees.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use envseal_core::Kms;
use envseal_core::kms::KeyManager;
use envseal_core::rewrap::{Rewrapper, Target};
use envseal_fields::pg::{PgCheckpoints, PgTable, PgVault};
use envseal_fields::rotate::{self, IndexSpec, RekeySpec, RewrapSpec};
use envseal_fields::{CachePolicy, EncryptionContext, FieldCipher, Record};
use envseal_kms_local::{LocalKms, Unlock};
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};

/// The application's record: e-mail, phone and SSN sealed, e-mail and phone searchable.
#[derive(Record, Clone, Debug, PartialEq)]
#[envseal(table = "users")]
pub struct User {
    /// Primary key, bound into every sealed value's context.
    #[envseal(primary_key)]
    pub id: i64,
    /// Display name, in clear.
    pub name: String,
    /// E-mail, sealed, with a case-insensitive blind index.
    #[envseal(encrypt, index = "email_idx", normalize = "lowercase", bits = 16)]
    pub email: String,
    /// Phone number, sealed, with a digits-only blind index.
    #[envseal(encrypt, index = "phone_idx", normalize = "digits", bits = 16)]
    pub phone: String,
    /// National id, sealed.
    #[envseal(encrypt)]
    pub ssn: String,
}

/// The user with id `i` (deterministic, so the final check knows what to expect).
pub fn user(i: i64) -> User {
    User {
        id: i,
        name: format!("User {i}"),
        email: format!("User.{i}@Example.org"),
        phone: format!("+1 555 {:03} {:04}", i % 1000, i % 10_000),
        ssn: format!("{:03}-{:02}-{:04}", 100 + i % 800, 10 + i % 90, i % 10_000),
    }
}

const SCHEMA: &str = "DROP TABLE IF EXISTS users;
CREATE TABLE users (
    id BIGINT PRIMARY KEY, name TEXT NOT NULL,
    email BYTEA NOT NULL, phone BYTEA NOT NULL, ssn BYTEA NOT NULL,
    email_idx BYTEA NOT NULL, phone_idx BYTEA NOT NULL);
CREATE INDEX users_email_idx ON users (email_idx);
CREATE INDEX users_phone_idx ON users (phone_idx);";

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn insert(pool: &PgPool, cipher: &FieldCipher, u: &User) -> Res<()> {
    let s = u.seal(cipher).await?;
    sqlx::query("INSERT INTO users VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(s.id)
        .bind(&s.name)
        .bind(&s.email)
        .bind(&s.phone)
        .bind(&s.ssn)
        .bind(&s.email_idx)
        .bind(&s.phone_idx)
        .execute(pool)
        .await?;
    Ok(())
}

fn sealed_row(r: &PgRow) -> Res<UserSealed> {
    Ok(UserSealed {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        phone: r.try_get("phone")?,
        ssn: r.try_get("ssn")?,
        email_idx: r.try_get("email_idx")?,
        phone_idx: r.try_get("phone_idx")?,
    })
}

/// Finds users by a blind index: the rows whose term matches, opened, false positives dropped.
async fn find(
    pool: &PgPool,
    cipher: &FieldCipher,
    q: envseal_fields::IndexQuery<User>,
    column: &str,
) -> Res<(Vec<User>, usize)> {
    let sql = format!("SELECT * FROM users WHERE {column} = ANY($1)");
    let rows = sqlx::query(&sql).bind(q.terms().to_vec()).fetch_all(pool).await?;
    let mut hits = Vec::new();
    for r in &rows {
        let u = User::open(&sealed_row(r)?, cipher).await?;
        if q.matches(&u)? {
            hits.push(u);
        }
    }
    Ok((hits, rows.len()))
}

/// Runs the example against the database at `url` with `n` users, writing what happens to
/// `out`.
///
/// # Errors
/// Database, KMS and envseal errors; a check that fails.
pub async fn run(url: &str, n: i64, out: &mut dyn Write) -> Res<()> {
    let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    let vault = Arc::new(PgVault::new(pool.clone(), "envseal_key_vault")?);
    vault.create_table().await?;
    let jobs = PgCheckpoints::new(pool.clone(), "envseal_jobs")?;
    jobs.create_table().await?;
    let dir = tempfile::tempdir()?;
    let local = Arc::new(LocalKms::open_or_create(dir.path().join("keystore"), Unlock::master_key_file())?);
    let kms: Arc<dyn Kms> = local.clone();
    // Writers reuse a data key for 2 seconds here (5 minutes by default), so that the re-key's
    // settle period below is short.
    let policy = CachePolicy { max_age: Duration::from_secs(2), ..CachePolicy::default() };
    let cipher = FieldCipher::builder(kms.clone(), "alias/default", vault.clone())
        .context(EncryptionContext::from_pairs([("app", "users-example")])?)
        .cache(policy)
        .build()?;

    // 1. Inserts.
    let t = Instant::now();
    for i in 1..=n {
        insert(&pool, &cipher, &user(i)).await?;
    }
    let secs = t.elapsed().as_secs_f64();
    let st = cipher.stats();
    writeln!(
        out,
        "1. inserted {n} users in {secs:.2} s ({:.0} rows/s); {} data keys, {} index keys, {} KMS calls",
        n as f64 / secs,
        st.data_keys_created,
        st.index_keys_created,
        st.kms_calls
    )?;
    let row: (i32, i32) = sqlx::query_as("SELECT octet_length(email), octet_length(ssn) FROM users WHERE id = 1")
        .fetch_one(&pool)
        .await?;
    writeln!(
        out,
        "   row 1 as stored: e-mail {} bytes (plaintext {} + {}), SSN {} bytes",
        row.0,
        user(1).email.len(),
        envseal_fields::keyref::OVERHEAD,
        row.1
    )?;

    // 2. Queries through the blind indexes.
    let probe = n / 2;
    let q = User::email_idx(&cipher, &format!("  user.{probe}@EXAMPLE.ORG")).await?;
    let (hits, rows) = find(&pool, &cipher, q, "email_idx").await?;
    writeln!(
        out,
        "2. e-mail lookup: {rows} row(s) with the term, {} real match(es): id {:?}",
        hits.len(),
        hits.iter().map(|u| u.id).collect::<Vec<_>>()
    )?;
    if hits != [user(probe)] {
        return Err("the e-mail lookup did not find exactly the user".into());
    }
    let q = User::phone_idx(&cipher, &user(probe).phone.replace(' ', "-")).await?;
    let (hits, rows) = find(&pool, &cipher, q, "phone_idx").await?;
    writeln!(out, "   phone lookup: {rows} row(s) with the term, {} real match(es)", hits.len())?;
    if !hits.contains(&user(probe)) {
        return Err("the phone lookup missed the user".into());
    }

    // 3. KMS key rotation, then rewrap of the key vault (the users table is not touched).
    local.rotate_key("alias/default").await?;
    let rw = Rewrapper::new(kms.clone(), Target::Latest);
    let r = rotate::rewrap_vault(vault.as_ref(), &rw, &jobs, &RewrapSpec::new("example-rewrap")).await?;
    writeln!(
        out,
        "3. rewrap after a key rotation: {} vault entries rewrapped in {:.2} s, {} failed",
        r.rewrapped, r.elapsed_secs, r.failed
    )?;

    // 4. Re-key the SSN column and rotate the e-mail index while inserts continue.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (pool, cipher, stop) = (pool.clone(), cipher.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut next, t) = (n + 1, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                insert(&pool, &cipher, &user(next)).await?;
                next += 1;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((next - n - 1, t.elapsed().as_secs_f64()))
        })
    };
    let mut spec = RekeySpec::new("example-rekey", "users", "id", vec!["email".into(), "ssn".into()]);
    spec.indexes = vec![IndexSpec { name: "email_idx".into(), column: "email_idx".into() }];
    spec.settle = policy.max_age;
    spec.batch = 500;
    spec.sleep = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
    let table = PgTable::new(pool.clone(), "users", "id", spec.store_columns()).await?;
    let report = rotate::rekey(&cipher, &table, &jobs, &spec).await?;
    stop.store(true, Ordering::Relaxed);
    let (inserted, during) = writer.await??;
    writeln!(
        out,
        "4. re-key of e-mail and SSN with the e-mail index rotated to generation {}: {} rows in {:.2} s ({:.0} rows/s, \
         {} redone after concurrent writes, {} sweeps), complete: {}",
        report.generations["email_idx"],
        report.rekeyed,
        report.elapsed_secs,
        report.rekeyed as f64 / report.elapsed_secs,
        report.conflicts,
        report.sweeps,
        report.complete
    )?;
    writeln!(out, "   meanwhile the application inserted {inserted} users ({:.0} rows/s)", inserted as f64 / during)?;
    if !report.complete || report.failed > 0 {
        return Err("the re-key did not complete".into());
    }

    // 5. Every row opens to what was inserted.
    let fresh = FieldCipher::builder(kms, "alias/default", vault.clone())
        .context(EncryptionContext::from_pairs([("app", "users-example")])?)
        .build()?;
    let rows = sqlx::query("SELECT * FROM users ORDER BY id").fetch_all(&pool).await?;
    let mut by_id = BTreeMap::new();
    for r in &rows {
        let u = User::open(&sealed_row(r)?, &fresh).await?;
        if u != user(u.id) {
            return Err(format!("row {} opened to another user", u.id).into());
        }
        by_id.insert(u.id, ());
    }
    writeln!(
        out,
        "5. all {} rows open to what was inserted ({} KMS calls to open them)",
        by_id.len(),
        fresh.stats().kms_calls
    )?;
    if by_id.len() as i64 != n + inserted {
        return Err("rows are missing".into());
    }
    Ok(())
}
