//! Wrap + unwrap throughput against a PKCS#11 token: `generate_data_key` then `decrypt`.
//!
//! ```text
//! cargo run --release -p envseal-kms-pkcs11 --example latency [-- ITERATIONS]
//! ```
//!
//! With `ENVSEAL_PKCS11_URI` set (and `ENVSEAL_PKCS11_PIN`), it measures that token, using the
//! URI's `object=` key (created if missing, else `envseal-latency`). Otherwise it creates a
//! temporary SoftHSM2 token and re-runs itself with `SOFTHSM2_CONF` pointing at it.

#[path = "../tests/common/softhsm.rs"]
mod softhsm;

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use envseal_core::kms::{KeySpec, decrypt_data_key};
use envseal_core::{EncryptionContext, KeyManager, Kms, KmsError};
use envseal_kms_pkcs11::Pkcs11Kms;

const URI_ENV: &str = "ENVSEAL_PKCS11_URI";

fn main() -> ExitCode {
    let iterations: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    if std::env::var_os(URI_ENV).is_none() && std::env::var_os(softhsm::CHILD_ENV).is_none() {
        return run_in_temporary_softhsm();
    }
    let (kms, key) = match std::env::var(URI_ENV) {
        Ok(uri) => match Pkcs11Kms::open(&uri) {
            Ok(kms) => {
                let key = kms.default_key().unwrap_or("envseal-latency").to_string();
                (kms, key)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        Err(_) => {
            let token = softhsm::TestToken {
                dir: std::env::var_os(softhsm::CHILD_ENV).unwrap_or_default().into(),
                module: softhsm::module().expect("the parent found the module"),
            };
            (token.kms(), "latency".to_string())
        }
    };
    match softhsm::block_on(measure(&kms, &key, iterations)) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    inline(&kms, &key, iterations);
    ExitCode::SUCCESS
}

fn run_in_temporary_softhsm() -> ExitCode {
    if let Some(reason) = softhsm::unavailable() {
        eprintln!("SoftHSM2 is not available ({reason}): apt-get install -y softhsm2, or set {URI_ENV}");
        return ExitCode::FAILURE;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let conf = softhsm::init_token(tmp.path());
    let status = Command::new(std::env::current_exe().expect("own path"))
        .args(std::env::args().skip(1))
        .env("SOFTHSM2_CONF", &conf)
        .env(softhsm::CHILD_ENV, tmp.path())
        .status()
        .expect("re-run under SoftHSM2");
    if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn report(what: &str, n: usize, elapsed: Duration) {
    let per = elapsed / n as u32;
    println!("{what:<48} {:>9.0} /s  {:>8.1} µs each", n as f64 / elapsed.as_secs_f64(), per.as_secs_f64() * 1e6);
}

async fn measure(kms: &Pkcs11Kms, key: &str, n: usize) -> Result<(), KmsError> {
    match kms.describe_key(key).await {
        Ok(_) => {}
        Err(KmsError::KeyNotFound { .. }) => {
            kms.create_named_key(key, &KeySpec::default()).await?;
        }
        Err(e) => return Err(e),
    }
    let ctx = EncryptionContext::from_pairs([("app", "latency"), ("file", "bench.env")]).expect("valid context");
    println!("token {:?} via {}, key {key:?}, {n} iterations", kms.token_label(), kms.module_path().display());
    for _ in 0..100 {
        let g = kms.generate_data_key(key, &ctx).await?;
        decrypt_data_key(kms, &g.wrapped, &ctx).await?;
    }

    let start = Instant::now();
    let mut wrapped = Vec::with_capacity(n);
    for _ in 0..n {
        wrapped.push(kms.generate_data_key(key, &ctx).await?.wrapped);
    }
    report("generate_data_key (wrap), sequential", n, start.elapsed());

    let start = Instant::now();
    for w in &wrapped {
        decrypt_data_key(kms, w, &ctx).await?;
    }
    report("decrypt (unwrap), sequential", n, start.elapsed());

    let start = Instant::now();
    for _ in 0..n {
        let g = kms.generate_data_key(key, &ctx).await?;
        decrypt_data_key(kms, &g.wrapped, &ctx).await?;
    }
    report("wrap + unwrap pairs, sequential", n, start.elapsed());

    for tasks in [2usize, 8] {
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (kms, key, ctx) = (kms.clone(), key.to_string(), ctx.clone());
            let per_task = n / tasks;
            handles.push(tokio::spawn(async move {
                for _ in 0..per_task {
                    let g = kms.generate_data_key(&key, &ctx).await?;
                    decrypt_data_key(&kms, &g.wrapped, &ctx).await?;
                }
                Ok::<(), KmsError>(())
            }));
        }
        for h in handles {
            h.await.expect("task")?;
        }
        report(&format!("wrap + unwrap pairs, {tasks} concurrent tasks"), n / tasks * tasks, start.elapsed());
    }
    Ok(())
}

/// The same pairs outside Tokio: the calls run inline, without the blocking-pool hop.
fn inline(kms: &Pkcs11Kms, key: &str, n: usize) {
    use std::task::{Context, Poll, Waker};
    let ctx = EncryptionContext::from_pairs([("app", "latency"), ("file", "bench.env")]).expect("valid context");
    let fut = async {
        let start = Instant::now();
        for _ in 0..n {
            let g = kms.generate_data_key(key, &ctx).await.expect("wrap");
            decrypt_data_key(kms, &g.wrapped, &ctx).await.expect("unwrap");
        }
        start.elapsed()
    };
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    let elapsed = loop {
        if let Poll::Ready(e) = fut.as_mut().poll(&mut cx) {
            break e;
        }
    };
    report("wrap + unwrap pairs, inline (no Tokio runtime)", n, elapsed);
}
