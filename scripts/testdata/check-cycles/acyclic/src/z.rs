use crate::X;

pub struct Z(pub X);
