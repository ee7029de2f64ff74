pub struct B;

pub fn make() -> crate::a::A {
    crate::a::A(B)
}
