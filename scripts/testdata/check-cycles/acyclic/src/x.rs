use crate::Config;
use crate::y::helper;

pub struct X(pub Config);

pub fn run() {
    helper();
}
