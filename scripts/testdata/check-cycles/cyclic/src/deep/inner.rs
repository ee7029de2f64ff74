use super::Y;

pub struct X(pub Y);
