//! The field envelope's text form rules of FORMAT.md §5.6, checked on a frozen vector.

use envseal_core::envelope::{from_text, to_text};
use envseal_core::{Error, FormatError};
use envseal_vectors::{Vector, default_dir};

fn sealed() -> Vec<u8> {
    let path = default_dir().join("field/ok_1_byte_with_context.json");
    let v = Vector::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.sealed
}

#[test]
fn worked_example_of_appendix_b() {
    let text = to_text(&sealed());
    assert_eq!(
        text,
        "esf1:5QEBYGFiY2RlZmdoaWprbG1ub53ewTFyrC7dK_A9hf4AI0_MruytjwiS3DQYS8nlIvs5BHRlc3QACHRlc3Qta2V5\
         AAExADCwsbKztLW2t7i5uru8vb6_wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t8AAAAAAAAAAAAAAATDU0Vg\
         H0lgNVgqQ3syqPrh4Q"
    );
    assert_eq!(from_text(&text).unwrap(), sealed());
}

#[test]
fn strict_decoding() {
    let text = to_text(&sealed());
    // 148 bytes: 148 = 3 × 49 + 1, so the text ends in 2 characters carrying 8 bits (4 unused).
    assert!(matches!(from_text(&text[5..]), Err(Error::Format(FormatError::NotSealed))));
    let padded = format!("{text}==");
    assert!(matches!(from_text(&padded), Err(Error::Format(FormatError::Malformed(_)))));
    let standard = text.replace('_', "/");
    assert!(matches!(from_text(&standard), Err(Error::Format(FormatError::Malformed(_)))));
    // Non-zero unused bits in the last character: "4Q" → "4R".
    let non_canonical = format!("{}R", &text[..text.len() - 1]);
    assert!(matches!(from_text(&non_canonical), Err(Error::Format(FormatError::Malformed(_)))));
    let huge = format!("esf1:{}", "A".repeat(22_391_468));
    assert!(matches!(from_text(&huge), Err(Error::Format(FormatError::LimitExceeded { .. }))));
    let at_limit = format!("esf1:{}", "A".repeat(22_391_464));
    assert!(from_text(&at_limit).is_ok());
}
