//! Audit logs (docs/AUDIT.md): verification and queries over arbitrary bytes never panic, and a
//! log that verifies keeps verifying when read again.
#![no_main]

use envseal_audit::{AuditKey, Query, query, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = AuditKey::from_bytes([7; 32]);
    let r = verify(data, Some(&key));
    let again = verify(data, Some(&key));
    assert_eq!(r.ok(), again.ok());
    assert!(r.ok() || !r.problems().is_empty() || r.to_string().contains("OK"));
    let _ = verify(data, None);
    let q = Query { event: Some("Gen*".into()), principal: Some("*a*".into()), ..Query::default() };
    for rec in query(data, &q).take(1000) {
        if let Ok(rec) = rec {
            let line = serde_json::to_string(&rec).expect("a record serializes");
            let _: envseal_audit::Record = serde_json::from_str(&line).expect("and parses back");
        }
    }
});
