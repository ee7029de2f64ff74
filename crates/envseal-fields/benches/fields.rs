//! Field seal/open of a 64-byte value with a warm cache, one thread: the key-reference form
//! (`Column`), the self-contained form (`envseal_core::Sealer`), and the raw 64-byte AES-256-GCM
//! seal under a ready key (the floor), in the same run. Medians of 7 runs, with min–max.
//!
//! Run: `cargo bench -p envseal-fields --features rusqlite --bench fields` (`-- --quick` for
//! shorter runs).
//! A measurement, not a test: it asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envseal_core::aead::AeadKey;
use envseal_core::{CachePolicy, EncryptionContext, Engine, Sealer};
use envseal_fields::FieldCipher;
use envseal_kms_mock::MockKms;
use zeroize::Zeroizing;

const BATCH: u64 = 1000;

/// Ops per second of `f` (which does BATCH ops), median and min–max of `runs` runs of `secs`.
fn measure(runs: usize, secs: f64, mut f: impl FnMut()) -> (f64, f64, f64) {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed().as_secs_f64() < secs {
                f();
                n += BATCH;
            }
            n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], rates[0], rates[rates.len() - 1])
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (runs, secs) = if quick { (3, 0.3) } else { (7, 1.0) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let value = [0x61u8; 64];
    let mut rows: Vec<(&str, (f64, f64, f64))> = Vec::new();

    // The floor.
    let raw = AeadKey::new(Engine::default(), &[7; 32]);
    let nonce = [1u8; 12];
    let mut buf = [0u8; 64];
    rows.push((
        "raw AES-256-GCM seal, 64 B, ready key",
        measure(runs, secs, || {
            for _ in 0..BATCH {
                std::hint::black_box(raw.seal_in_place(&nonce, &[], &mut buf));
            }
        }),
    ));

    // Key-reference form: a column handle, the row's primary key in the context.
    let kms = Arc::new(MockKms::new());
    let key = kms.create_default_key();
    let policy = CachePolicy { max_messages: 1 << 32, max_bytes: u64::MAX, ..CachePolicy::default() };
    // The warm path never touches the vault: an in-memory SQLite database holds it.
    let conn = Arc::new(std::sync::Mutex::new(rusqlite::Connection::open_in_memory().unwrap()));
    let vault = Arc::new(envseal_fields::sqlite::SqliteVault::new(conn, "envseal_key_vault").unwrap());
    vault.create_table().unwrap();
    let cipher = FieldCipher::builder(kms.clone(), key.clone(), vault)
        .context(EncryptionContext::from_pairs([("app", "bench")]).unwrap())
        .cache(policy)
        .build()
        .unwrap();
    let col = cipher.column("users", "email").unwrap();
    let sealed = rt.block_on(col.seal(&value, Some("123456"))).unwrap();
    rows.push((
        "key-reference seal, 64 B (Column::seal)",
        measure(runs, secs, || {
            rt.block_on(async {
                for _ in 0..BATCH {
                    std::hint::black_box(col.seal(&value, Some("123456")).await.unwrap());
                }
            })
        }),
    ));
    let mut out = Vec::with_capacity(256);
    rows.push((
        "key-reference seal, 64 B, reused buffer (seal_into)",
        measure(runs, secs, || {
            rt.block_on(async {
                for _ in 0..BATCH {
                    out.clear();
                    col.seal_into(&value, Some("123456"), &mut out).await.unwrap();
                    std::hint::black_box(&out);
                }
            })
        }),
    ));
    rows.push((
        "key-reference open, 64 B (Column::open)",
        measure(runs, secs, || {
            rt.block_on(async {
                for _ in 0..BATCH {
                    std::hint::black_box(col.open(sealed.as_bytes(), Some("123456")).await.unwrap());
                }
            })
        }),
    ));
    let mut pt = Zeroizing::new(Vec::with_capacity(256));
    rows.push((
        "key-reference open, 64 B, reused buffer (open_into)",
        measure(runs, secs, || {
            rt.block_on(async {
                for _ in 0..BATCH {
                    pt.clear();
                    col.open_into(sealed.as_bytes(), Some("123456"), &mut pt).await.unwrap();
                    std::hint::black_box(&pt);
                }
            })
        }),
    ));

    // Self-contained form (the core's Sealer), its context without a per-row key, as in the core
    // bench.
    let sealer = Sealer::new(kms, key).with_cache(policy);
    let ctx = EncryptionContext::from_pairs([("table", "users"), ("column", "email")]).unwrap();
    let env = rt.block_on(sealer.seal(&value, &ctx)).unwrap();
    rows.push((
        "self-contained seal, 64 B (Sealer::seal)",
        measure(runs, secs, || {
            rt.block_on(async {
                for _ in 0..BATCH {
                    std::hint::black_box(sealer.seal(&value, &ctx).await.unwrap());
                }
            })
        }),
    ));
    rows.push((
        "self-contained open, 64 B (Sealer::open)",
        measure(runs, secs, || {
            rt.block_on(async {
                for _ in 0..BATCH {
                    std::hint::black_box(sealer.open(&env, &ctx).await.unwrap());
                }
            })
        }),
    ));

    let floor = rows[0].1.0;
    println!("\nenvseal-fields benchmark: 64-byte field, warm cache, one thread ({} runs of {secs} s)\n", runs);
    println!("{:<56} {:>10} {:>17} {:>8}", "measure", "median", "min-max", "vs raw");
    for (name, (med, min, max)) in &rows {
        println!("{name:<56} {:>6.2} M/s {:>7.2}-{:<6.2} M/s {:>6.2}x", med / 1e6, min / 1e6, max / 1e6, med / floor);
    }
    println!(
        "\nenvelope sizes for a 64-byte value: key-reference {} bytes ({} over the plaintext), self-contained {} bytes ({} over)",
        sealed.as_bytes().len(),
        sealed.as_bytes().len() - 64,
        env.len(),
        env.len() - 64
    );
}
