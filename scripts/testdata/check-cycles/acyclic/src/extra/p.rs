pub fn z() -> crate::Z {
    crate::Z(crate::X(crate::Config))
}
