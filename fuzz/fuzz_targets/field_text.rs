//! Field envelope text form `esf1:` + base64url (FORMAT.md §5.6): only canonical text decodes,
//! so decode -> encode gives back the input; the bytes then go through the byte parser.
#![no_main]

use envseal_core::envelope::{Envelope, from_text, to_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(bytes) = from_text(text) {
        assert_eq!(to_text(&bytes), text, "non-canonical text form accepted");
        let _ = Envelope::parse(&bytes);
    }
});
