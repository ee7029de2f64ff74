//! AWS Encryption SDK messages (docs/ESDK.md): a fuzzed message is parsed and, when its header
//! names the vectors' raw AES key, opened and decrypted. Decrypting to a staging buffer, through
//! a spool and verifying alone must agree; nothing may panic or allocate from a length field alone.
#![no_main]

use std::future::Future;
use std::io::Cursor;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use envseal_esdk::{DecryptOptions, RawAesKeyring, open, read_header};
use libfuzzer_sys::fuzz_target;

/// Runs a future that never waits (the raw AES keyring does no I/O).
fn ready<T>(f: impl Future<Output = T>) -> Option<T> {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let opts = DecryptOptions::default();
    let mut input = Cursor::new(data);
    let Ok(header) = read_header(&mut input, &opts) else { return };
    let body = &data[input.position() as usize..];
    // The key of the ESDK's public commitment vectors (testdata/esdk): 32 zero bytes.
    let key = RawAesKeyring::new("ProviderName", "KeyId", zeroize::Zeroizing::new(vec![0u8; 32])).unwrap();
    let Some(Ok(dec)) = ready(open(header, &[&key], &opts)) else { return };
    let mut staged = Vec::new();
    let a = dec.decrypt_to_staging(body, &mut staged).map_err(|e| e.to_string());
    let mut spooled = Vec::new();
    let b = dec.decrypt_spooled(body, &mut Cursor::new(Vec::new()), &mut spooled).map_err(|e| e.to_string());
    let c = dec.verify(body).map_err(|e| e.to_string());
    assert_eq!(a, b, "staging and spooled decryption disagree");
    assert_eq!(a, c, "decryption and verification disagree");
    if a.is_ok() {
        assert_eq!(staged, spooled);
    } else {
        assert!(spooled.is_empty(), "a spooled decryption released plaintext of a bad message");
    }
});
