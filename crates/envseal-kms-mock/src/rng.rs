//! Randomness for the mock: the OS CSPRNG, or a deterministic DRBG for reproducible tests.

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// HMAC-SHA-256(key, parts...).
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // Invariant: HMAC accepts keys of any length.
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Where the mock's randomness comes from.
pub(crate) enum Rng {
    /// `envseal_core::random` (the OS CSPRNG).
    Os,
    /// Deterministic: block `i` is HMAC-SHA-256(seed key, u64 BE `i`).
    Seeded(Drbg),
}

impl Rng {
    pub(crate) fn seeded(seed: u64) -> Self {
        Rng::Seeded(Drbg::new(seed))
    }

    /// Fills `buf` with random bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        match self {
            Rng::Os => envseal_core::random::fill(buf),
            Rng::Seeded(d) => d.fill(buf),
        }
    }

    /// `N` random bytes.
    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        self.fill(&mut a);
        a
    }

    /// `N` random bytes for secret use, zeroized on drop.
    pub(crate) fn secret<const N: usize>(&mut self) -> Zeroizing<[u8; N]> {
        let mut a = Zeroizing::new([0u8; N]);
        self.fill(&mut a[..]);
        a
    }

    /// A random (version 4) UUID in its lowercase 8-4-4-4-12 text form.
    pub(crate) fn uuid(&mut self) -> String {
        let mut b: [u8; 16] = self.array();
        b[6] = (b[6] & 0x0f) | 0x40; // version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        let mut s = String::with_capacity(36);
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            s.push_str(&format!("{byte:02x}"));
        }
        s
    }
}

/// A tiny counter-mode DRBG: HMAC-SHA-256(K, counter), K = HMAC-SHA-256("envseal-mock drbg",
/// u64 BE seed). Reproducible, which is the point; it is no better a secret than the seed.
pub(crate) struct Drbg {
    key: Zeroizing<[u8; 32]>,
    counter: u64,
}

impl Drbg {
    fn new(seed: u64) -> Self {
        Self { key: Zeroizing::new(hmac_sha256(b"envseal-mock drbg", &[&seed.to_be_bytes()])), counter: 0 }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        // Each call starts on a fresh block, so the bytes a call gets depend only on the number
        // of blocks drawn before it.
        for chunk in buf.chunks_mut(32) {
            let block = Zeroizing::new(hmac_sha256(&self.key[..], &[&self.counter.to_be_bytes()]));
            self.counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_reproducible_and_seed_dependent() {
        let (mut a, mut b, mut c) = (Rng::seeded(7), Rng::seeded(7), Rng::seeded(8));
        let (x, y, z): ([u8; 40], [u8; 40], [u8; 40]) = (a.array(), b.array(), c.array());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(x[..32], x[8..]);
        assert_ne!(a.uuid(), c.uuid());
    }

    #[test]
    fn uuid_shape() {
        let u = Rng::Os.uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(u.matches('-').count(), 4);
    }

    #[test]
    fn hmac_rfc4231_case2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(mac[..4], [0x5b, 0xdc, 0xc1, 0x46]);
    }
}
