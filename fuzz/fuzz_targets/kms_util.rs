//! KMS emulator wire helpers: percent decoding (percent-encoding round trip), query pairs,
//! SigV4 and ISO 8601 dates, Alibaba's JSON EncryptionContext parameter.
#![no_main]

use envseal_kms_server::fuzzing as f;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = f::percent_decode(s, true);
    if let Some(d) = f::percent_decode(s, false) {
        assert!(d.len() <= s.len());
    }
    let enc = f::percent_encode(s);
    assert_eq!(f::percent_decode(&enc, true).as_deref(), Some(s), "percent-encoding does not round-trip");
    if let Some(pairs) = f::parse_pairs(s) {
        let joined = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", f::percent_encode(k), f::percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(f::parse_pairs(&joined), Some(pairs), "query pairs do not round-trip");
    }
    let _ = f::parse_amz_date(s);
    let _ = f::parse_iso8601(s);
    let _ = f::context_from_json(s);
});
