//! Encryption context decoding (FORMAT.md §2.3): a decoded context re-encodes to exactly the
//! bytes consumed (only canonical encodings are accepted) and rebuilds from its own pairs.
#![no_main]

use envseal_core::EncryptionContext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((ctx, n)) = EncryptionContext::decode_prefix(data) else { return };
    assert_eq!(ctx.canonical_bytes(), &data[..n], "non-canonical context accepted");
    let rebuilt = EncryptionContext::from_pairs(ctx.iter()).expect("a decoded context rebuilds");
    assert_eq!(rebuilt, ctx);
    let (again, m) = EncryptionContext::decode_prefix(&ctx.canonical_bytes()).expect("re-decodes");
    assert_eq!((again, m), (ctx, n));
});
