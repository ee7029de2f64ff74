//! RFC 3986 percent-encoding, as AWS SigV4 and both Alibaba Cloud signatures (ACS3 and RPC V2)
//! use it: every byte of the UTF-8 form except the unreserved set `A-Z a-z 0-9 - _ . ~` becomes
//! `%XX` with upper-case hex digits. A space is `%20` (never `+`) and `*` is `%2A`.

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// The percent-encoding of `s`.
pub fn encode(s: &str) -> String {
    encode_keeping(s, b"")
}

/// [`encode`], but leaving the bytes of `keep` as they are (e.g. `/` in a SigV4 path).
pub fn encode_keeping(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    encode_into(s, keep, &mut out);
    out
}

/// Appends the encoding of `s` (keeping the bytes of `keep`) to `out`, without a temporary
/// string: for values that are secrets (a base64 plaintext in a signed query), whose buffer the
/// caller wipes.
pub fn encode_into(s: &str, keep: &[u8], out: &mut String) {
    for &b in s.as_bytes() {
        if unreserved(b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Decodes `%XX` escapes (either case of hex digit), and `+` as a space when `plus_is_space`
/// (the query-string and form convention). `None` for a broken escape or a result that is not
/// UTF-8.
pub fn decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = char::from(hex[0]).to_digit(16)?;
                let lo = char::from(hex[1]).to_digit(16)?;
                // Two hex digits fit in a byte.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_rfc3986() {
        assert_eq!(encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(encode("a b*c/d+e=f&g%"), "a%20b%2Ac%2Fd%2Be%3Df%26g%25");
        assert_eq!(encode("ü:{\"k\"}"), "%C3%BC%3A%7B%22k%22%7D");
        assert_eq!(encode(""), "");
        assert_eq!(encode("a b*~/+é"), "a%20b%2A~%2F%2B%C3%A9");
        assert_eq!(encode_keeping("/a b/", b"/"), "/a%20b/");
        let mut out = String::from("x=");
        encode_into("1 2", b"", &mut out);
        assert_eq!(out, "x=1%202");
    }

    #[test]
    fn decoding() {
        assert_eq!(decode("a%20b+c%2B", true).unwrap(), "a b c+");
        assert_eq!(decode("a+b", false).unwrap(), "a+b");
        assert_eq!(decode("%c3%a9", false).unwrap(), "é");
        assert!(decode("%zz", true).is_none());
        assert!(decode("%4", true).is_none());
        assert!(decode("%ff", true).is_none(), "not UTF-8");
    }

    #[test]
    fn round_trip() {
        for s in ["", "plain", "a b&c=d", "ü/€/𝄞", "%%%", "+ +", "\u{0}\u{7f}"] {
            assert_eq!(decode(&encode(s), false).as_deref(), Some(s), "{s:?}");
            assert_eq!(decode(&encode(s), true).as_deref(), Some(s), "{s:?}");
        }
    }
}
