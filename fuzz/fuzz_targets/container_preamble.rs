//! Container preamble (FORMAT.md §4.5 step 1): the slice parser and the streaming parser must
//! agree, and a parsed preamble must re-encode to exactly the bytes it was parsed from (the
//! encoding is canonical), which parse back to the same value.
#![no_main]

use envseal_core::container::Preamble;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = Preamble::parse(data);
    let streamed = Preamble::read_from(&mut &data[..]);
    match (&parsed, &streamed) {
        (Ok((p, n)), Ok(s)) => {
            assert_eq!(p, s, "slice and stream parsers disagree");
            let enc = p.encode().expect("a parsed preamble encodes");
            assert_eq!(enc, &data[..*n], "parse -> encode is not the identity");
            let (again, m) = Preamble::parse(&enc).expect("an encoded preamble parses");
            assert_eq!((&again, m), (p, enc.len()));
            let _ = p.kms_context();
        }
        (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "parsers report different errors"),
        _ => panic!("slice and stream parsers disagree on success: {parsed:?} vs {streamed:?}"),
    }
});
