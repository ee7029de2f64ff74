//! Round-trip latency of GenerateDataKey + Decrypt against a running Transit server.
//!
//! ```text
//! VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=... \
//!   cargo run --release -p envseal-kms-vault --example latency
//! ```
//!
//! Settings: `VAULT_*` / `BAO_*` as in `VaultConfig::from_env`; `ENVSEAL_VAULT_KEY` names the
//! key (else a new `envseal-…` key is created); `ENVSEAL_LATENCY_OPS` the number of round
//! trips per run (default 2000); `ENVSEAL_LATENCY_TASKS` the concurrency of the second run
//! (default 8). Each round trip is one `generate_data_key` and one `decrypt` of its result,
//! under a two-entry encryption context.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envseal_core::kms::{KeyManager, KeySpec, Kms, decrypt_data_key};
use envseal_core::{EncryptionContext, KmsError};
use envseal_kms_vault::VaultKms;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

async fn round_trip(kms: &VaultKms, key: &str, ctx: &EncryptionContext) -> Result<Duration, KmsError> {
    let start = Instant::now();
    let g = kms.generate_data_key(key, ctx).await?;
    let u = decrypt_data_key(kms, &g.wrapped, ctx).await?;
    assert_eq!(u.data_key.expose_secret(), g.data_key.expose_secret());
    Ok(start.elapsed())
}

fn report(label: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "{label:<28} {:>6} round trips in {:>8.1?}: {:>8.0} round trips/s, p50 {:>8.1?}, p99 {:>8.1?}, max {:>8.1?}",
        samples.len(),
        wall,
        samples.len() as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1],
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), KmsError> {
    let kms = VaultKms::from_env()?;
    let ops = env_usize("ENVSEAL_LATENCY_OPS", 2000);
    let tasks = env_usize("ENVSEAL_LATENCY_TASKS", 8);
    let key = match std::env::var("ENVSEAL_VAULT_KEY") {
        Ok(k) if !k.is_empty() => k,
        _ => kms.create_key(&KeySpec::default()).await?.key_id,
    };
    let ctx = EncryptionContext::from_pairs([("app", "latency"), ("env", "bench")]).expect("valid context");
    println!("Transit at {} (mount {}), key {key}, {ops} round trips per run", kms.addr(), kms.mount());

    // Warm-up: connection set-up and the server's key cache.
    for _ in 0..50 {
        round_trip(&kms, &key, &ctx).await?;
    }

    let start = Instant::now();
    let mut samples = Vec::with_capacity(ops);
    for _ in 0..ops {
        samples.push(round_trip(&kms, &key, &ctx).await?);
    }
    report("sequential", samples, start.elapsed());

    let key = Arc::new(key);
    let ctx = Arc::new(ctx);
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let (kms, key, ctx) = (kms.clone(), key.clone(), ctx.clone());
        let n = ops / tasks + usize::from(t < ops % tasks);
        handles.push(tokio::spawn(async move {
            let mut s = Vec::with_capacity(n);
            for _ in 0..n {
                s.push(round_trip(&kms, &key, &ctx).await?);
            }
            Ok::<_, KmsError>(s)
        }));
    }
    let mut samples = Vec::with_capacity(ops);
    for h in handles {
        samples.extend(h.await.expect("task panicked")?);
    }
    report(&format!("{tasks} concurrent tasks"), samples, start.elapsed());
    Ok(())
}
