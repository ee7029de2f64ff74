//! The AEAD seam: AES-256-GCM from one of two engines.
//!
//! Every AES-GCM operation in envseal goes through [`AeadKey`]. The default engine is AWS-LC
//! (`aws-lc` feature, ~23 GB/s here); RustCrypto `aes-gcm` 0.11 is the pure-Rust alternative
//! (`rustcrypto` feature). Both produce identical bytes; the test suite runs against each.

use crate::error::FormatError;

/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// AES-256 key length.
pub const KEY_LEN: usize = 32;

/// Which AES-256-GCM implementation to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// AWS-LC through aws-lc-rs.
    #[cfg(feature = "aws-lc")]
    AwsLc,
    /// RustCrypto aes-gcm (pure Rust).
    #[cfg(feature = "rustcrypto")]
    RustCrypto,
}

#[cfg(not(any(feature = "aws-lc", feature = "rustcrypto")))]
compile_error!("envseal-core needs an AEAD engine: enable feature `aws-lc` or `rustcrypto`");

impl Engine {
    /// Every engine compiled into this build, the default first.
    pub const ALL: &'static [Engine] = &[
        #[cfg(feature = "aws-lc")]
        Engine::AwsLc,
        #[cfg(feature = "rustcrypto")]
        Engine::RustCrypto,
    ];

    /// Short name (`aws-lc`, `rustcrypto`).
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "aws-lc")]
            Engine::AwsLc => "aws-lc",
            #[cfg(feature = "rustcrypto")]
            Engine::RustCrypto => "rustcrypto",
        }
    }
}

impl Default for Engine {
    /// AWS-LC when compiled in, else RustCrypto.
    fn default() -> Self {
        Engine::ALL[0]
    }
}

/// An AES-256-GCM key schedule. Both engines wipe their key schedules on drop.
pub struct AeadKey {
    inner: Inner,
}

enum Inner {
    #[cfg(feature = "aws-lc")]
    AwsLc(aws_lc_rs::aead::LessSafeKey),
    #[cfg(feature = "rustcrypto")]
    RustCrypto(Box<aes_gcm::Aes256Gcm>),
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey([REDACTED])")
    }
}

/// AEAD authentication failure (deliberately opaque).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

impl AeadKey {
    /// Builds the key schedule for `key` on `engine`.
    pub fn new(engine: Engine, key: &[u8; KEY_LEN]) -> Self {
        let inner = match engine {
            #[cfg(feature = "aws-lc")]
            Engine::AwsLc => Inner::AwsLc(awslc::key(&aws_lc_rs::aead::AES_256_GCM, key)),
            #[cfg(feature = "rustcrypto")]
            Engine::RustCrypto => Inner::RustCrypto(rc::key(key)),
        };
        Self { inner }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match &self.inner {
            #[cfg(feature = "aws-lc")]
            Inner::AwsLc(k) => awslc::seal(k, nonce, aad, buf),
            #[cfg(feature = "rustcrypto")]
            Inner::RustCrypto(k) => rc::seal(k.as_ref(), nonce, aad, buf),
        }
    }

    /// Encrypts `plaintext` into `out` (`plaintext.len() + TAG_LEN` bytes: ciphertext, then
    /// tag) without an intermediate copy where the engine supports it.
    ///
    /// # Panics
    /// If `out` has the wrong length (a caller bug).
    pub fn seal_to(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8], out: &mut [u8]) {
        assert_eq!(out.len(), plaintext.len() + TAG_LEN, "seal_to output length");
        match &self.inner {
            #[cfg(feature = "aws-lc")]
            Inner::AwsLc(k) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                // The "extra" input of the scatter API is encrypted out of place into the
                // output, followed by the tag: one pass over the data.
                // Invariant: lengths were checked above; GCM's size limit is far away.
                k.seal_in_place_scatter(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), &mut [], plaintext, out)
                    .expect("AES-GCM input within limits");
            }
            #[cfg(feature = "rustcrypto")]
            Inner::RustCrypto(_) => {
                let (ct, tag_out) = out.split_at_mut(plaintext.len());
                ct.copy_from_slice(plaintext);
                let tag = self.seal_in_place(nonce, aad, ct);
                tag_out.copy_from_slice(&tag);
            }
        }
    }

    /// Decrypts `buf` in place if `tag` verifies. On failure `buf` holds no plaintext that the
    /// caller may use (engines may leave partial output; callers discard the buffer).
    ///
    /// # Errors
    /// [`AuthError`] if authentication fails.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthError> {
        match &self.inner {
            #[cfg(feature = "aws-lc")]
            Inner::AwsLc(k) => awslc::open(k, nonce, aad, buf, tag),
            #[cfg(feature = "rustcrypto")]
            Inner::RustCrypto(k) => rc::open(k.as_ref(), nonce, aad, buf, tag),
        }
    }

    /// Decrypts `ciphertext` into `out` (same length) if `tag` verifies, without an extra copy
    /// where the engine supports it.
    ///
    /// # Errors
    /// [`AuthError`] if authentication fails; `out` must then be discarded.
    pub fn open_to(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), AuthError> {
        debug_assert_eq!(ciphertext.len(), out.len());
        match &self.inner {
            #[cfg(feature = "aws-lc")]
            Inner::AwsLc(k) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                k.open_separate_gather(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), ciphertext, tag, out)
                    .map_err(|_| AuthError)
            }
            #[allow(unreachable_patterns)]
            _ => {
                out.copy_from_slice(ciphertext);
                self.open_in_place(nonce, aad, out, tag)
            }
        }
    }
}

/// An AES-256-GCM-SIV key schedule (RFC 8452): the nonce-misuse-resistant AEAD of value-level
/// format 2 (FORMAT.md §10), where sealing is deterministic on purpose. Same engines as
/// [`AeadKey`]; both wipe their key schedules on drop.
pub struct SivKey {
    inner: SivInner,
}

enum SivInner {
    #[cfg(feature = "aws-lc")]
    AwsLc(aws_lc_rs::aead::LessSafeKey),
    #[cfg(feature = "rustcrypto")]
    RustCrypto(Box<aes_gcm_siv::Aes256GcmSiv>),
}

impl std::fmt::Debug for SivKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SivKey([REDACTED])")
    }
}

impl SivKey {
    /// Builds the key schedule for `key` on `engine`.
    pub fn new(engine: Engine, key: &[u8; KEY_LEN]) -> Self {
        let inner = match engine {
            #[cfg(feature = "aws-lc")]
            Engine::AwsLc => SivInner::AwsLc(awslc::key(&aws_lc_rs::aead::AES_256_GCM_SIV, key)),
            #[cfg(feature = "rustcrypto")]
            Engine::RustCrypto => SivInner::RustCrypto(rc::key(key)),
        };
        Self { inner }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match &self.inner {
            #[cfg(feature = "aws-lc")]
            SivInner::AwsLc(k) => awslc::seal(k, nonce, aad, buf),
            #[cfg(feature = "rustcrypto")]
            SivInner::RustCrypto(k) => rc::seal(k.as_ref(), nonce, aad, buf),
        }
    }

    /// Decrypts `buf` in place if `tag` verifies; on failure `buf` must be discarded.
    ///
    /// # Errors
    /// [`AuthError`] if authentication fails.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthError> {
        match &self.inner {
            #[cfg(feature = "aws-lc")]
            SivInner::AwsLc(k) => awslc::open(k, nonce, aad, buf, tag),
            #[cfg(feature = "rustcrypto")]
            SivInner::RustCrypto(k) => rc::open(k.as_ref(), nonce, aad, buf, tag),
        }
    }
}

/// The aws-lc-rs side of both key types (the algorithm is the only difference).
#[cfg(feature = "aws-lc")]
mod awslc {
    use aws_lc_rs::aead::{Aad, Algorithm, LessSafeKey, Nonce, UnboundKey};

    use super::{AuthError, KEY_LEN, NONCE_LEN, TAG_LEN};

    pub(super) fn key(algorithm: &'static Algorithm, key: &[u8; KEY_LEN]) -> LessSafeKey {
        // Invariant: both AES-256 algorithms accept exactly 32-byte keys, which the type
        // guarantees.
        LessSafeKey::new(UnboundKey::new(algorithm, key).expect("32-byte AES-256 key"))
    }

    #[inline]
    pub(super) fn seal(k: &LessSafeKey, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        // Invariant: AES-GCM and AES-GCM-SIV sealing only fail for inputs above 2^36 bytes, far
        // above any chunk, field or value this crate seals.
        let tag = k
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .expect("AEAD input within limits");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    #[inline]
    pub(super) fn open(
        k: &LessSafeKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthError> {
        k.open_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), tag, buf)
            .map(|_| ())
            .map_err(|_| AuthError)
    }
}

/// The RustCrypto side of both key types (`aes-gcm` and `aes-gcm-siv` share the `aead` traits).
#[cfg(feature = "rustcrypto")]
mod rc {
    use aes_gcm::aead::{AeadInOut, KeyInit};

    use super::{AuthError, KEY_LEN, NONCE_LEN, TAG_LEN};

    pub(super) fn key<C: KeyInit>(key: &[u8; KEY_LEN]) -> Box<C> {
        // Invariant: both ciphers take 32-byte keys, which the type guarantees.
        Box::new(C::new_from_slice(key).expect("32-byte AES-256 key"))
    }

    #[inline]
    pub(super) fn seal<C: AeadInOut>(k: &C, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        // Invariant: as for aws-lc-rs, sealing only fails above the algorithms' size limits.
        let tag = k
            .encrypt_inout_detached(nonce.as_slice().try_into().expect("12-byte nonce"), aad, buf.into())
            .expect("AEAD input within limits");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_slice());
        out
    }

    #[inline]
    pub(super) fn open<C: AeadInOut>(
        k: &C,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthError> {
        let nonce = nonce.as_slice().try_into().expect("12-byte nonce");
        let tag = tag.as_slice().try_into().expect("16-byte tag");
        k.decrypt_inout_detached(nonce, aad, buf.into(), tag).map_err(|_| AuthError)
    }
}

/// Splits `ct || tag` into its parts.
///
/// # Errors
/// [`FormatError::Truncated`] if shorter than a tag.
pub(crate) fn split_tag(buf: &mut [u8]) -> Result<(&mut [u8], [u8; TAG_LEN]), FormatError> {
    if buf.len() < TAG_LEN {
        return Err(FormatError::Truncated);
    }
    let (ct, tag) = buf.split_at_mut(buf.len() - TAG_LEN);
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(tag);
    Ok((ct, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NIST GCM test case 15 (AES-256, 96-bit IV, no AAD) from the GCM specification, and
    /// case 16 (with AAD).
    #[test]
    fn known_answers_on_every_engine() {
        let key: [u8; 32] = hex::decode("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
            .unwrap()
            .try_into()
            .unwrap();
        let nonce: [u8; 12] = hex::decode("cafebabefacedbaddecaf888").unwrap().try_into().unwrap();
        let pt = hex::decode(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        )
        .unwrap();
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let ct = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662";
        let tag = "76fc6ece0f4e1768cddf8853bb2d551b";
        for &engine in Engine::ALL {
            let k = AeadKey::new(engine, &key);
            let mut buf = pt.clone();
            let t = k.seal_in_place(&nonce, &aad, &mut buf);
            assert_eq!(hex::encode(&buf), ct, "{engine:?}");
            assert_eq!(hex::encode(t), tag, "{engine:?}");
            let mut out = vec![0u8; pt.len() + TAG_LEN];
            k.seal_to(&nonce, &aad, &pt, &mut out);
            assert_eq!(hex::encode(&out), format!("{ct}{tag}"), "{engine:?} seal_to");
            k.open_in_place(&nonce, &aad, &mut buf, &t).unwrap();
            assert_eq!(buf, pt);
            let mut out = vec![0; pt.len()];
            k.open_to(&nonce, &aad, &hex::decode(ct).unwrap(), &t, &mut out).unwrap();
            assert_eq!(out, pt);
            let mut bad = t;
            bad[0] ^= 1;
            assert_eq!(k.open_in_place(&nonce, &aad, &mut buf.clone(), &bad), Err(AuthError));
            assert_eq!(k.open_in_place(&nonce, b"other", &mut hex::decode(ct).unwrap(), &t), Err(AuthError));
        }
    }

    /// RFC 8452 Appendix C.2 (AEAD_AES_256_GCM_SIV): the first cases, on every engine.
    #[test]
    fn siv_known_answers_on_every_engine() {
        let mut key = [0u8; 32];
        key[0] = 1;
        let mut nonce = [0u8; 12];
        nonce[0] = 3;
        let cases: [(&str, &str); 4] = [
            ("", "07f5f4169bbf55a8400cd47ea6fd400f"),
            ("0100000000000000", "c2ef328e5c71c83b843122130f7364b761e0b97427e3df28"),
            ("010000000000000000000000", "9aab2aeb3faa0a34aea8e2b18ca50da9ae6559e48fd10f6e5c9ca17e"),
            ("01000000000000000000000000000000", "85a01b63025ba19b7fd3ddfc033b3e76c9eac6fa700942702e90862383c6c366"),
        ];
        for &engine in Engine::ALL {
            let k = SivKey::new(engine, &key);
            for (pt, want) in cases {
                let pt = hex::decode(pt).unwrap();
                let mut buf = pt.clone();
                let tag = k.seal_in_place(&nonce, b"", &mut buf);
                assert_eq!(format!("{}{}", hex::encode(&buf), hex::encode(tag)), want, "{engine:?}");
                k.open_in_place(&nonce, b"", &mut buf, &tag).unwrap();
                assert_eq!(buf, pt);
                let mut bad = tag;
                bad[15] ^= 0x80;
                assert_eq!(k.open_in_place(&nonce, b"", &mut pt.clone(), &bad), Err(AuthError));
            }
        }
    }

    #[test]
    fn engines_agree_on_random_inputs() {
        let key = crate::random::array::<32>();
        let nonce = crate::random::array::<12>();
        for len in [0usize, 1, 15, 16, 17, 4095, 65536] {
            let mut outs = Vec::new();
            for &engine in Engine::ALL {
                let mut buf = vec![0x5a; len];
                let tag = AeadKey::new(engine, &key).seal_in_place(&nonce, b"aad", &mut buf);
                outs.push((buf, tag));
            }
            assert!(outs.windows(2).all(|w| w[0] == w[1]));
        }
    }
}
