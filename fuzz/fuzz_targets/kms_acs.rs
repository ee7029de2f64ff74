//! Alibaba Cloud RPC requests: query and form parameters, then signature verification (ACS3
//! Authorization header and canonical request, or RPC V2 parameters). Input is the text
//! request form of `envseal_fuzz::TextRequest`.
#![no_main]

use envseal_fuzz::TextRequest;
use envseal_kms_server::fuzzing as f;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(req) = TextRequest::parse(data) else { return };
    let r = req.as_fuzz();
    let _ = f::alibaba_params(&r);
    let _ = f::acs_verify(&r);
});
