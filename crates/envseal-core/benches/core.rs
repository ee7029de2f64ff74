//! Core benchmark: raw AEAD per engine, the stream codec in memory, field seal/open with a warm
//! cache, and `openssl speed -evp aes-256-gcm` in the same run, with ratios.
//!
//! Run: `cargo bench -p envseal-core --bench core` (add `-- --quick` for a shorter run).
//! A measurement, not a test: it asserts nothing.

use std::io::{self, Read};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envseal_core::aead::AeadKey;
use envseal_core::container::PendingContainer;
use envseal_core::{CachePolicy, DataKey, EncryptionContext, Engine, Sealer, WrappedKey};
use envseal_kms_mock::MockKms;

const CHUNK: usize = 64 * 1024;

/// Runs `f` (which processes `bytes` bytes, or one op when bytes = 0) repeatedly for about
/// `secs` seconds after a warm-up; returns ops per second.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let mut n = 0u64;
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        f();
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn openssl_gbps() -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-evp", "aes-256-gcm", "-bytes", &CHUNK.to_string(), "-seconds", "2"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Last line: "AES-256-GCM   <N>k" (thousands of bytes per second).
    let line = text.lines().rev().find(|l| l.to_lowercase().starts_with("aes-256-gcm"))?;
    let v = line.split_whitespace().last()?.trim_end_matches('k').parse::<f64>().ok()?;
    Some(v * 1000.0 / 1e9)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 0.5 } else { 2.0 };
    let key = [7u8; 32];
    let nonce = [1u8; 12];
    let mut rows: Vec<(String, f64, &'static str)> = Vec::new();

    // 1. Raw AEAD, 64 KiB in place (cache-resident), per engine.
    let mut raw_awslc = 0.0;
    for &engine in Engine::ALL {
        let k = AeadKey::new(engine, &key);
        let mut buf = vec![0u8; CHUNK];
        let r = rate(secs, || {
            std::hint::black_box(k.seal_in_place(&nonce, &[], &mut buf));
        }) * CHUNK as f64
            / 1e9;
        if engine == Engine::default() {
            raw_awslc = r;
        }
        rows.push((format!("raw AES-256-GCM seal 64 KiB [{}]", engine.name()), r, "GB/s"));
    }

    // 2. The codec in memory, 64 KiB chunks, at a cache-resident size (4 MiB) and a DRAM-bound
    //    one (64 MiB), against raw AES-GCM over the same bytes chunk by chunk in place.
    let dk = DataKey::from_bytes([9; 32]);
    let entry = WrappedKey { backend: "bench".into(), key_id: "k".into(), key_version: "1".into(), blob: vec![1; 100] };
    let (pre, enc) = PendingContainer::new(EncryptionContext::new(), CHUNK as u32)
        .unwrap()
        .finish(Engine::default(), &dk, vec![entry.clone()])
        .unwrap();
    let dec = pre.open(Engine::default(), &dk).unwrap();
    let k = AeadKey::new(Engine::default(), &key);
    let mut ratios = Vec::new();
    for size in [4usize << 20, 64 << 20] {
        let label = format!("{} MiB", size >> 20);
        let input = vec![0x5au8; size];
        let mut big = input.clone();
        let raw = rate(secs, || {
            for c in big.chunks_mut(CHUNK) {
                std::hint::black_box(k.seal_in_place(&nonce, &[], c));
            }
        }) * size as f64
            / 1e9;
        let mut body = vec![0u8; enc.body_len(size as u64) as usize];
        let enc_slice = rate(secs, || enc.encrypt_slice(&input, &mut body)) * size as f64 / 1e9;
        let mut pt_buf = vec![0u8; size];
        let dec_slice = rate(secs, || {
            dec.decrypt_slice(&body, &mut pt_buf).unwrap();
        }) * size as f64
            / 1e9;
        let mut sealed = Vec::with_capacity(body.len());
        let enc_stream = rate(secs, || {
            sealed.clear();
            enc.encrypt_stream(&input[..], &mut sealed).unwrap();
        }) * size as f64
            / 1e9;
        let mut plain = Vec::with_capacity(size);
        let dec_stream = rate(secs, || {
            plain.clear();
            dec.decrypt_stream(&body[..], &mut plain).unwrap();
        }) * size as f64
            / 1e9;
        rows.push((format!("raw AES-256-GCM in place over {label} [aws-lc]"), raw, "GB/s"));
        rows.push((format!("codec encrypt, slice API, {label}"), enc_slice, "GB/s"));
        rows.push((format!("codec decrypt, slice API, {label}"), dec_slice, "GB/s"));
        rows.push((format!("codec encrypt, Read/Write API, {label}"), enc_stream, "GB/s"));
        rows.push((format!("codec decrypt, Read/Write API, {label}"), dec_stream, "GB/s"));
        ratios.push((label, raw, enc_slice, dec_slice, enc_stream, dec_stream));
    }

    // 3. Field seal/open of a 64-byte value with a warm cache (mock KMS), one thread.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let kms = Arc::new(MockKms::new());
    let kid = kms.create_default_key();
    let sealer =
        Sealer::new(kms.clone(), kid).with_cache(CachePolicy { max_messages: 1 << 32, ..CachePolicy::default() });
    let ctx = EncryptionContext::from_pairs([("table", "users"), ("column", "email")]).unwrap();
    let value = [0x61u8; 64];
    let batch = 1000;
    let env = rt.block_on(sealer.seal(&value, &ctx)).unwrap();
    let seal_ops = rate(secs, || {
        rt.block_on(async {
            for _ in 0..batch {
                std::hint::black_box(sealer.seal(&value, &ctx).await.unwrap());
            }
        })
    }) * batch as f64;
    let open_ops = rate(secs, || {
        rt.block_on(async {
            for _ in 0..batch {
                std::hint::black_box(sealer.open(&env, &ctx).await.unwrap());
            }
        })
    }) * batch as f64;
    // The floor for one field: a bare AES-256-GCM seal of 64 bytes under a ready key (no KMS, no
    // cache lookup, no envelope, no fresh nonce), batched like the sealer.
    let raw_key = AeadKey::new(Engine::default(), &key);
    let mut small = [0u8; 64];
    let raw_small_ops = rate(secs, || {
        for _ in 0..batch {
            std::hint::black_box(raw_key.seal_in_place(&nonce, &[], &mut small));
        }
    }) * batch as f64;
    rows.push(("raw AES-256-GCM seal 64 B [aws-lc]".into(), raw_small_ops / 1e6, "M ops/s"));
    rows.push(("field seal 64 B, warm cache".into(), seal_ops / 1e6, "M ops/s"));
    rows.push(("field open 64 B, warm cache".into(), open_ops / 1e6, "M ops/s"));

    // 4. Memory of the stream codec: stream 256 MiB, then 2 GiB, from a generator to a sink.
    let hwm0 = vm_hwm_kib();
    let mut total = 0;
    for gib in [256u64 << 20, 2048 << 20] {
        let src = io::repeat(0x11).take(gib);
        let mut counter = CountingSink(0);
        enc.encrypt_stream(src, &mut counter).unwrap();
        total += counter.0;
    }
    let hwm1 = vm_hwm_kib();

    let ossl = openssl_gbps();
    println!("\nenvseal-core benchmark ({} mode, one thread)\n", if quick { "quick" } else { "full" });
    println!("{:<58} {:>10}", "measure", "value");
    for (name, v, unit) in &rows {
        println!("{name:<58} {v:>8.2} {unit}");
    }
    match ossl {
        Some(o) => println!("{:<58} {o:>8.2} GB/s", "openssl speed -evp aes-256-gcm, 64 KiB"),
        None => println!("openssl speed: not available"),
    }
    println!("\nratios (codec / raw AES-GCM over the same bytes)");
    for (label, raw, es, ds, et, dt) in &ratios {
        println!(
            "  {label:>6}: slice encrypt {:.2}x, slice decrypt {:.2}x, Read/Write encrypt {:.2}x, Read/Write decrypt {:.2}x",
            es / raw,
            ds / raw,
            et / raw,
            dt / raw
        );
    }
    if let Some(o) = ossl {
        println!("  raw aws-lc / openssl speed: {:.2}x", raw_awslc / o);
    }
    println!(
        "  field seal / raw 64-byte seal: {:.2}x, field open / raw 64-byte seal: {:.2}x (ops/s)",
        seal_ops / raw_small_ops,
        open_ops / raw_small_ops
    );
    println!(
        "\nstream codec memory: peak RSS {} MiB before, {} MiB after streaming {} MiB more (generator → sink)",
        hwm0 / 1024,
        hwm1 / 1024,
        total >> 20
    );
}

struct CountingSink(u64);

impl io::Write for CountingSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
