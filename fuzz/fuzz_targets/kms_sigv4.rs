//! AWS SigV4 verification: the Authorization header's parser and the canonical request over
//! fuzzed method, path, query, headers and body. Input is the text request form of
//! `envseal_fuzz::TextRequest`.
#![no_main]

use envseal_fuzz::TextRequest;
use envseal_kms_server::fuzzing as f;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(req) = TextRequest::parse(data) else { return };
    let _ = f::sigv4_verify(&req.as_fuzz());
});
