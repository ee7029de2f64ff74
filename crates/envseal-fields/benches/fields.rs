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

/// CPU time of this thread, from `/proc/thread-self/stat` (user + system, in clock ticks of
/// 10 ms): what "per core" means on a machine shared with other work.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A measurement: ops per wall-clock second and per CPU second of this thread, median and
/// min–max of the runs.
struct Rates {
    wall: (f64, f64, f64),
    cpu: Option<(f64, f64, f64)>,
}

fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs `f` (which does BATCH ops) `runs` times for `secs` each, after a warm-up.
fn measure(runs: usize, secs: f64, mut f: impl FnMut()) -> Rates {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (t, c) = (Instant::now(), thread_cpu());
        let mut n = 0u64;
        while t.elapsed().as_secs_f64() < secs {
            f();
            n += BATCH;
        }
        wall.push(n as f64 / t.elapsed().as_secs_f64());
        if let (Some(c0), Some(c1)) = (c, thread_cpu()) {
            let used = (c1 - c0).as_secs_f64();
            if used > 0.0 {
                cpu.push(n as f64 / used);
            }
        }
    }
    Rates { wall: spread(wall), cpu: (cpu.len() == runs).then(|| spread(cpu)) }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (runs, secs) = if quick { (3, 0.5) } else { (7, 2.0) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let value = [0x61u8; 64];
    let mut rows: Vec<(&str, Rates)> = Vec::new();

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

    let floor = rows[0].1.wall.0;
    let cpu_floor = rows[0].1.cpu.map(|c| c.0);
    println!("\nenvseal-fields benchmark: 64-byte field, warm cache, one thread ({runs} runs of {secs} s)\n");
    println!(
        "{:<54} {:>22} {:>7} {:>24} {:>7}",
        "measure", "wall clock: median (min-max)", "vs raw", "per CPU second of the thread", "vs raw"
    );
    for (name, r) in &rows {
        let (med, min, max) = r.wall;
        let cpu = match (r.cpu, cpu_floor) {
            (Some((cm, cmin, cmax)), Some(cf)) => {
                format!("{:>6.2} ({:.2}-{:.2}) M/s {:>6.2}x", cm / 1e6, cmin / 1e6, cmax / 1e6, cm / cf)
            }
            _ => "n/a".into(),
        };
        println!("{name:<54} {:>6.2} ({:.2}-{:.2}) M/s {:>6.2}x   {cpu}", med / 1e6, min / 1e6, max / 1e6, med / floor);
    }
    println!(
        "\nenvelope sizes for a 64-byte value: key-reference {} bytes ({} over the plaintext), self-contained {} bytes ({} over)",
        sealed.as_bytes().len(),
        sealed.as_bytes().len() - 64,
        env.len(),
        env.len() - 64
    );
}
