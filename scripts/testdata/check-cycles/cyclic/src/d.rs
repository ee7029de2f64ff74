use super::c::C;

pub struct Thing;

pub fn wrap() -> C {
    C(Thing)
}
