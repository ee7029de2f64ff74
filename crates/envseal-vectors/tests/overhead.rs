//! Checks the overhead formulas of FORMAT.md §7 against real output sealed through the mock KMS
//! backend (backend "mock", 36-character UUID key ids, version "1", 120-byte blobs).

use std::sync::Arc;

use envseal_core::container::{self, Preamble, Recipient, SealOptions};
use envseal_core::{EncryptionContext, Kms, Sealer, envelope};
use envseal_kms_mock::MockKms;

/// FORMAT.md §2.4: `1 + |backend| + 2 + |key id| + 2 + |version| + 2 + |blob|`.
fn entry_len(backend: usize, key_id: usize, version: usize, blob: usize) -> usize {
    7 + backend + key_id + version + blob
}

/// FORMAT.md §7.1: `112 + C + S`, with `C` the encoded context and `S` the encoded entries.
fn preamble_len(ctx: &EncryptionContext, entries: &[usize]) -> usize {
    112 + ctx.canonical_bytes().len() + entries.iter().sum::<usize>()
}

/// FORMAT.md §7.1: `L + 16 * max(1, ceil(L / chunk_size))`.
fn body_len(len: usize, chunk_size: usize) -> usize {
    len + 16 * len.div_ceil(chunk_size).max(1)
}

const MOCK_BLOB: usize = 3 + 1 + 36 + 4 + 16 + 12 + 32 + 16;
const MOCK_ENTRY: usize = 1 + 4 + 2 + 36 + 2 + 1 + 2 + MOCK_BLOB;

#[test]
fn mock_entry_constants() {
    assert_eq!(MOCK_BLOB, 120);
    assert_eq!(MOCK_ENTRY, 168);
    assert_eq!(entry_len(4, 36, 1, 120), 168);
}

#[tokio::test(flavor = "current_thread")]
async fn container_overhead_matches_the_formula() {
    let mock = MockKms::new();
    let key = mock.create_default_key();
    assert_eq!(key.len(), 36);
    for (pairs, chunk_size, len) in [
        (&[][..], container::DEFAULT_CHUNK_SIZE, 0usize),
        (&[][..], container::DEFAULT_CHUNK_SIZE, 1 << 20),
        (&[("app", "billing"), ("tenant", "Zürich")][..], 64, 200),
        (&[("app", "billing")][..], 64, 128),
    ] {
        let ctx = EncryptionContext::from_pairs(pairs.iter().copied()).unwrap();
        let options = SealOptions { chunk_size, ..SealOptions::default() };
        let mut out = Vec::new();
        let recipients = [Recipient { kms: &mock, key: &key }];
        container::seal(&recipients, &ctx, &options, vec![7u8; len].as_slice(), &mut out).await.unwrap();
        let (p, n) = Preamble::parse(&out).unwrap();
        assert_eq!(p.entries[0].blob.len(), MOCK_BLOB);
        assert_eq!(n, preamble_len(&ctx, &[MOCK_ENTRY]), "{pairs:?}");
        assert_eq!(out.len() - n, body_len(len, chunk_size as usize), "{pairs:?} {len}");
    }
    // FORMAT.md §7.3 worked examples: empty context, one mock entry.
    assert_eq!(preamble_len(&EncryptionContext::new(), &[MOCK_ENTRY]), 282);
    assert_eq!(282 + body_len(0, 65536), 298);
    assert_eq!(282 + body_len(1 << 20, 65536) - (1 << 20), 538);
}

#[tokio::test(flavor = "current_thread")]
async fn field_overhead_matches_the_formula() {
    let mock = Arc::new(MockKms::new());
    let key = mock.create_default_key();
    let kms: Arc<dyn Kms> = mock.clone();
    let sealer = Sealer::new(kms, key);
    for (pairs, len) in [(&[][..], 0usize), (&[("table", "users")][..], 16), (&[][..], 1000)] {
        let ctx = EncryptionContext::from_pairs(pairs.iter().copied()).unwrap();
        let sealed = sealer.seal(&vec![1u8; len], &ctx).await.unwrap();
        // FORMAT.md §7.2: 3 + 16 + 32 + entry + 12 + 16 (the context is not stored).
        assert_eq!(sealed.len() - len, 3 + 16 + 32 + MOCK_ENTRY + 12 + 16);
        assert_eq!(sealed.len() - len, 247);
        assert_eq!(envelope::Envelope::parse(&sealed).unwrap().entry_bytes.len(), MOCK_ENTRY);
        // Text form: "esf1:" + unpadded base64url, ceil(4 * bytes / 3) characters.
        let text = envelope::to_text(&sealed);
        assert_eq!(text.len(), 5 + (4 * sealed.len()).div_ceil(3));
    }
    // FORMAT.md §7.3: a 16-byte value is 263 bytes, 356 characters as text; an empty one 335.
    assert_eq!(5 + (4 * 263usize).div_ceil(3), 356);
    assert_eq!(5 + (4 * 247usize).div_ceil(3), 335);
}
