use crate::Thing;

pub struct C(pub Thing);
