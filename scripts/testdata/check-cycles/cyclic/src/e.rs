pub struct E(pub crate::a::A);
