use crate::y::helper;

#[test]
fn t() {
    helper();
    let _ = crate::x::run;
}
