//! Exponential backoff with full jitter, shared by every retry loop (backends, rewrap).
//!
//! The delay before retry `n` (from 0) is uniform in `[0, min(max, base × 2^n))`, drawn from the
//! OS CSPRNG, so that many clients retrying together spread out instead of hammering a KMS in
//! step.

use std::time::Duration;

/// The backoff cap before retry `retry` (from 0): `min(max, base × 2^retry)`.
pub fn cap(base: Duration, max: Duration, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// A full-jitter delay: uniform in `[0, cap)`, from the OS CSPRNG.
pub fn full_jitter(cap: Duration) -> Duration {
    jitter(cap, u64::from_le_bytes(crate::random::array()))
}

/// `cap × r / 2^64`, i.e. uniform in `[0, cap)` for a uniform `r`.
pub(crate) fn jitter(cap: Duration, r: u64) -> Duration {
    let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(((nanos as u128 * r as u128) >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_jitter() {
        let (b, m) = (Duration::from_millis(10), Duration::from_millis(100));
        assert_eq!(cap(b, m, 0), Duration::from_millis(10));
        assert_eq!(cap(b, m, 3), Duration::from_millis(80));
        assert_eq!(cap(b, m, 200), Duration::from_millis(100));
        assert_eq!(jitter(m, 0), Duration::ZERO);
        assert!(jitter(m, u64::MAX) < m);
        assert_eq!(jitter(m, 1 << 63), Duration::from_millis(50));
        assert!((0..50).all(|_| full_jitter(m) < m));
    }
}
