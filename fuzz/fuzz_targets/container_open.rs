//! Container body (FORMAT.md §4.5-4.6): a fuzzed container opened with the vectors' fixed data
//! key. The in-memory, streaming and threaded decryptors must return the same plaintext or the
//! same error, on every AEAD engine.
#![no_main]

use envseal_core::Error;
use envseal_core::container::Preamble;
use envseal_fuzz::{ENGINES, container_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((pre, n)) = Preamble::parse(data) else { return };
    let body = &data[n..];
    let key = container_key();
    let mut first: Option<Result<Vec<u8>, String>> = None;
    for &engine in ENGINES {
        let result = match pre.open(engine, &key) {
            Err(e) => Err(format!("{:?}", Error::from(e))),
            Ok(dec) => {
                let mut out = vec![0u8; body.len()];
                let slice = dec
                    .decrypt_slice(body, &mut out)
                    .map(|len| out[..len].to_vec())
                    .map_err(|e| format!("{:?}", Error::from(e)));
                let mut streamed = Vec::new();
                let stream = dec.decrypt_stream(body, &mut streamed).map(|_| streamed).map_err(|e| format!("{e:?}"));
                assert_eq!(slice, stream, "decrypt_slice and decrypt_stream disagree");
                let mut threaded = Vec::new();
                let parallel =
                    dec.decrypt_parallel(body, &mut threaded).map(|_| threaded).map_err(|e| format!("{e:?}"));
                assert_eq!(slice, parallel, "decrypt_slice and decrypt_parallel disagree");
                slice
            }
        };
        match &first {
            None => first = Some(result),
            Some(f) => assert_eq!(f, &result, "AEAD engines disagree"),
        }
    }
});
