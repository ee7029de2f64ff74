//! Bounds-checked big-endian reader and writer helpers for the binary formats.

use crate::error::FormatError;

/// A source of bytes for the parsers: a slice ([`Reader`]) or a stream (the container's
/// preamble reader). `take` returns exactly `n` bytes or fails (`Truncated` at the end).
pub(crate) trait Take {
    /// The error type: [`FormatError`] for slices, [`crate::Error`] where I/O can fail.
    type Error: From<FormatError>;
    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&[u8], Self::Error>;
}

/// A u16-length-prefixed byte string of at most `max` bytes, checked before it is read.
pub(crate) fn take_bytes16<T: Take>(t: &mut T, max: usize, what: &'static str) -> Result<Vec<u8>, T::Error> {
    let b = t.take(2)?;
    let len = u16::from_be_bytes([b[0], b[1]]) as usize;
    if len > max {
        return Err(FormatError::LimitExceeded { what, value: len as u64, max: max as u64 }.into());
    }
    Ok(t.take(len)?.to_vec())
}

/// A u16-length-prefixed UTF-8 string of at most `max` bytes.
pub(crate) fn take_string16<T: Take>(t: &mut T, max: usize, what: &'static str) -> Result<String, T::Error> {
    String::from_utf8(take_bytes16(t, max, what)?).map_err(|_| FormatError::Malformed("string is not UTF-8").into())
}

/// A cursor over a byte slice that never reads past the end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.buf.len() - self.pos < n {
            return Err(FormatError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A u16-length-prefixed byte string of at most `max` bytes (checked before reading).
    pub(crate) fn bytes16(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(FormatError::LimitExceeded { what, value: len as u64, max: max as u64 });
        }
        self.take(len)
    }

    /// A u16-length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn string16(&mut self, max: usize, what: &'static str) -> Result<String, FormatError> {
        let b = self.bytes16(max, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| FormatError::Malformed("string is not UTF-8"))
    }
}

impl Take for Reader<'_> {
    type Error = FormatError;
    fn take(&mut self, n: usize) -> Result<&[u8], FormatError> {
        Reader::take(self, n)
    }
}

pub(crate) fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    debug_assert!(b.len() <= u16::MAX as usize);
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}
