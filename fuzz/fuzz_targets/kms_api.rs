//! Both KMS APIs behind their signature checks: the harness signs each request, so the fuzzed
//! JSON body (AWS, `X-Amz-Target` then `\n` then body) or the fuzzed parameters (Alibaba, a
//! query string) reach the actions, over a fresh seeded mock KMS with one key.
#![no_main]

use std::sync::Arc;

use envseal_kms_mock::MockKms;
use envseal_kms_server::fuzzing::Harness;
use envseal_kms_server::{Credentials, ServerConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [sel, rest @ ..] = data else { return };
    let mock = MockKms::with_seed(7);
    mock.create_default_key();
    let h = Harness::new(ServerConfig::new(Arc::new(mock), Credentials::new()));
    if sel % 2 == 0 {
        let (target, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let Ok(target) = std::str::from_utf8(target) else { return };
        let _ = h.aws(target, body);
    } else {
        let Ok(params) = std::str::from_utf8(rest) else { return };
        let _ = h.alibaba(params);
    }
});
