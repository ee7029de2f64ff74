//! Buffers that hold secrets on their way through an HTTP stack: a [`Bytes`] that wipes its
//! memory when the last reference to it (the HTTP library's included) is dropped.

use bytes::Bytes;
use zeroize::Zeroizing;

/// `buf` as [`Bytes`] (no copy) that zeroizes the buffer when the last clone is dropped.
pub fn into_bytes(buf: Zeroizing<Vec<u8>>) -> Bytes {
    Bytes::from_owner(Owner(buf))
}

/// Owner for [`Bytes::from_owner`]: the buffer is zeroized when it is dropped.
struct Owner(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_without_copying() {
        let buf = Zeroizing::new(b"secret body".to_vec());
        let ptr = buf.as_ptr();
        let b = into_bytes(buf);
        let clone = b.clone();
        drop(b);
        assert_eq!(&clone[..], b"secret body");
        assert_eq!(clone.as_ptr(), ptr, "no copy was made");
    }
}
