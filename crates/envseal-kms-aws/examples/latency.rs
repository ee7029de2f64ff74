//! GenerateDataKey + Decrypt round trips against a running AWS KMS endpoint: sequentially, then
//! from concurrent tasks; prints ops/s and p50/p99 latency of one round trip.
//!
//! Configuration comes from the environment, as for any AWS SDK (`AWS_ENDPOINT_URL` for moto or
//! LocalStack, credentials, `AWS_REGION`), plus:
//! - `ENVSEAL_BENCH_KEY`: key id, ARN or alias to use (default: create a key);
//! - `ENVSEAL_BENCH_N`: round trips per phase (default 500);
//! - `ENVSEAL_BENCH_CONCURRENCY`: concurrent tasks in the second phase (default 8).
//!
//! ```text
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1 \
//!     cargo run --release -p envseal-kms-aws --example latency
//! ```
//! `bench/kms_loops.py boto3 N` runs the same loop with boto3; `bench/suite.sh` runs both against
//! one moto.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envseal_core::kms::KeySpec;
use envseal_core::{EncryptionContext, Kms};
use envseal_kms_aws::AwsKms;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One GenerateDataKey + Decrypt; its duration.
async fn round_trip(kms: &dyn Kms, key: &str, ctx: &EncryptionContext) -> Duration {
    let t = Instant::now();
    let g = kms.generate_data_key(key, ctx).await.expect("GenerateDataKey");
    let d = kms.decrypt(&g.wrapped, ctx).await.expect("Decrypt");
    assert_eq!(d.plaintext.expose_secret(), g.data_key.expose_secret());
    t.elapsed()
}

fn report(phase: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).saturating_sub(1).min(lat.len() - 1)];
    println!(
        "{phase:<28} n={:<5} {:>8.1} round trips/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let n = env_usize("ENVSEAL_BENCH_N", 500).max(1);
    let tasks = env_usize("ENVSEAL_BENCH_CONCURRENCY", 8).max(1);
    let kms = Arc::new(AwsKms::from_env().await);
    let key = match std::env::var("ENVSEAL_BENCH_KEY") {
        Ok(k) => k,
        Err(_) => kms.key_manager().unwrap().create_key(&KeySpec::default()).await.expect("CreateKey").key_id,
    };
    let ctx = EncryptionContext::from_pairs([("purpose", "latency"), ("tenant", "t-1")]).unwrap();
    println!("envseal-kms-aws (aws-sdk-kms), {kms:?}");

    for _ in 0..20 {
        round_trip(&*kms, &key, &ctx).await;
    }

    let t = Instant::now();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        lat.push(round_trip(&*kms, &key, &ctx).await);
    }
    report("sequential", lat, t.elapsed());

    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..tasks {
        let (kms, key, ctx) = (kms.clone(), key.clone(), ctx.clone());
        let share = n / tasks + usize::from(i < n % tasks);
        set.spawn(async move {
            let mut lat = Vec::with_capacity(share);
            for _ in 0..share {
                lat.push(round_trip(&*kms, &key, &ctx).await);
            }
            lat
        });
    }
    let mut lat = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        lat.extend(r.expect("task"));
    }
    report(&format!("{tasks} concurrent tasks"), lat, t.elapsed());
}
