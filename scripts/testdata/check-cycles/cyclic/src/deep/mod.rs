mod inner;

pub use inner::X;

pub struct Y;
