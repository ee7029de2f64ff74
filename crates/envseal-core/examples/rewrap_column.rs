//! Rewrap a "database column" of 10,000 field envelopes after a key rotation.
//!
//! ```sh
//! cargo run --release -p envseal-core --example rewrap_column
//! ```
//!
//! The column is sealed with a cached [`Sealer`] on the mock HSM, the key is rotated, and
//! [`Rewrapper::rewrap_envelopes`] moves every envelope to the new key version with 32 items in
//! flight. Envelopes sealed under one cached data key share one ReEncrypt (FORMAT.md §5.7), so the
//! number of KMS calls follows the number of data keys, not of rows. A second pass, with a small
//! cache (100 values per data key) and 2 ms of simulated KMS latency, shows the concurrency at
//! work. Only the wrapped-key entry of each envelope changes; every value opens afterwards.
//!
//! A third pass shows a job meeting a KMS outage: the column goes in chunks, each row's result is
//! recorded in a circuit [`Breaker`], and once several rows in a row failed with a retryable error
//! (after their retries) no further chunk is started. Failed rows keep their old envelope.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envseal_core::envelope::Envelope;
use envseal_core::kms::KeyManager;
use envseal_core::rewrap::breaker::Breaker;
use envseal_core::rewrap::{RetryPolicy, Rewrapper, Target};
use envseal_core::{CachePolicy, EncryptionContext, Kms, Sealer};
use envseal_kms_mock::{Fault, MockKms};

const ROWS: usize = 10_000;
const CONCURRENCY: usize = 32;

async fn run(label: &str, policy: CachePolicy, latency: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let mock = Arc::new(MockKms::new());
    let key = mock.create_default_key();
    let kms: Arc<dyn Kms> = mock.clone();
    let ctx = EncryptionContext::from_pairs([("table", "users"), ("column", "ssn")])?;

    let sealer = Sealer::new(kms.clone(), key.clone()).with_cache(policy);
    let mut column = Vec::with_capacity(ROWS);
    for row in 0..ROWS {
        let v = format!("{:03}-{:02}-{:04}", row % 1000, row % 100, row);
        column.push((row, sealer.seal(v.as_bytes(), &ctx).await?, ctx.clone()));
    }
    let data_keys = sealer.cache_stats().misses;

    mock.rotate_key(&key).await?;
    mock.set_latency(latency);
    mock.reset_counts();

    let rewrapper = Rewrapper::new(kms.clone(), Target::Latest);
    let started = Instant::now();
    let results = rewrapper.rewrap_envelopes(column.clone(), CONCURRENCY).await;
    let elapsed = started.elapsed();
    let calls = mock.counts();
    mock.set_latency(Duration::ZERO);

    let (mut rewrapped, mut unchanged, mut failed) = (0, 0, 0);
    let opener = Sealer::new(kms.clone(), key.clone()).with_cache(CachePolicy::default());
    for (row, r) in &results {
        match r {
            Ok(new) if *new == column[*row].1 => unchanged += 1,
            Ok(new) => {
                rewrapped += 1;
                assert_eq!(Envelope::parse(new)?.entry()?.key_version, "2");
                opener.open(new, &ctx).await?;
            }
            Err(_) => failed += 1,
        }
    }
    println!("{label}");
    println!("  rows {ROWS}, data keys {data_keys}, concurrency {CONCURRENCY}, KMS latency {latency:?}");
    println!("  rewrapped {rewrapped}, unchanged {unchanged}, failed {failed} (every rewrapped value opens)");
    println!(
        "  KMS calls: ReEncrypt {}, Decrypt (verification) {}, describe {}",
        calls.re_encrypt, calls.decrypt, calls.key_management
    );
    println!(
        "  time {:.1} ms ({:.2} µs per row)",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / ROWS as f64
    );

    // A second pass finds everything at the target: no KMS write.
    let new_column: Vec<_> =
        results.into_iter().filter_map(|(row, r)| r.ok().map(|b| (row, b, column[row].2.clone()))).collect();
    mock.reset_counts();
    let started = Instant::now();
    let again = Rewrapper::new(kms, Target::Latest).rewrap_envelopes(new_column, CONCURRENCY).await;
    let skipped = again.iter().filter(|(_, r)| r.is_ok()).count();
    println!(
        "  second pass: {skipped} already at the target in {:.1} ms, ReEncrypt calls {}",
        started.elapsed().as_secs_f64() * 1e3,
        mock.counts().re_encrypt
    );
    Ok(())
}

/// A rewrap in chunks of `CHUNK` rows during an outage of the KMS: the breaker stops the job.
async fn outage() -> Result<(), Box<dyn std::error::Error>> {
    const CHUNK: usize = 1_000;
    let mock = Arc::new(MockKms::new());
    let key = mock.create_default_key();
    let kms: Arc<dyn Kms> = mock.clone();
    let ctx = EncryptionContext::from_pairs([("table", "users"), ("column", "ssn")])?;
    let sealer =
        Sealer::new(kms.clone(), key.clone()).with_cache(CachePolicy { max_messages: 10, ..Default::default() });
    let mut column = Vec::with_capacity(ROWS);
    for row in 0..ROWS {
        column.push((row, sealer.seal(format!("row {row}").as_bytes(), &ctx).await?, ctx.clone()));
    }
    mock.rotate_key(&key).await?;
    mock.set_outage(Some(Fault::Unavailable));

    // Short retries, so that the example does not wait out the default backoff.
    let retry = RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(5));
    let rewrapper = Rewrapper::new(kms, Target::Latest).with_retry(retry);
    let breaker = Breaker::default();
    let (mut done, mut failed, mut chunks) = (0, 0, 0);
    for chunk in column.chunks(CHUNK) {
        if breaker.is_open() {
            break;
        }
        chunks += 1;
        for (_, r) in rewrapper.rewrap_envelopes(chunk.to_vec(), CONCURRENCY).await {
            match r {
                Ok(_) => {
                    done += 1;
                    breaker.success();
                }
                Err(e) => {
                    failed += 1;
                    breaker.failure_of(&e);
                }
            }
        }
    }
    mock.set_outage(None);
    println!("KMS outage, chunks of {CHUNK} rows:");
    println!(
        "  breaker open: {} after {chunks} chunk(s); rewrapped {done}, failed {failed} (old envelopes kept), \
         not started {}",
        breaker.is_open(),
        ROWS - done - failed
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run("default cache (one data key per context):", CachePolicy::default(), Duration::ZERO).await?;
    let small = CachePolicy { max_messages: 100, ..CachePolicy::default() };
    run("small cache (100 values per data key), 2 ms per KMS call:", small, Duration::from_millis(2)).await?;
    outage().await?;
    Ok(())
}
