//! Secrets in answers (data-key plaintexts, STS credentials) never enter a `serde_json::Value`
//! or a plain `String`.
//!
//! A handler hands each secret to the request's [`Secrets`] and puts the placeholder it gets
//! back where the secret goes (a JSON string member, or an XML element's text). When the answer
//! is written, the public text (placeholders included) is serialized as usual, and the body is
//! built in one zeroizing buffer, sized up front, with every placeholder replaced by its secret:
//! base64 written straight from the secret bytes, text escaped for the document's syntax. The
//! secrets are wiped when the request ends, the body when hyper drops it.
//!
//! A placeholder is `envseal-secret-` + 32 random hex digits + `-N`: plain ASCII that JSON and
//! XML leave as is, which no other part of an answer can contain by chance.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use envseal_core::SecretBytes;
use zeroize::Zeroizing;

/// What a body is written in (how text secrets are escaped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Syntax {
    Json,
    Xml,
}

enum Secret {
    /// Bytes sent as standard base64 (a plaintext).
    Base64(SecretBytes),
    /// Text sent as is, escaped (a credential).
    Text(Zeroizing<String>),
}

impl Secret {
    /// Its length once written in `syntax`.
    fn written_len(&self, syntax: Syntax) -> usize {
        match self {
            Secret::Base64(b) => b.expose_secret().len().div_ceil(3) * 4,
            Secret::Text(t) => t.chars().map(|c| escape(c, syntax).map_or(c.len_utf8(), str::len)).sum(),
        }
    }

    /// Writes it into `out`, which is exactly [`Secret::written_len`] bytes long.
    fn write(&self, syntax: Syntax, out: &mut [u8]) {
        match self {
            Secret::Base64(b) => {
                // Invariant: `out` is exactly the encoded length.
                let n = STANDARD.encode_slice(b.expose_secret(), out).expect("a slice of the encoded length");
                debug_assert_eq!(n, out.len());
            }
            Secret::Text(t) => {
                let mut at = 0;
                let mut utf8 = [0u8; 4];
                for c in t.chars() {
                    let bytes = match escape(c, syntax) {
                        Some(e) => e.as_bytes(),
                        None => c.encode_utf8(&mut utf8).as_bytes(),
                    };
                    out[at..at + bytes.len()].copy_from_slice(bytes);
                    at += bytes.len();
                }
                utf8.fill(0);
            }
        }
    }
}

/// The escape of `c` in `syntax`, if it needs one. Credentials are printable ASCII; anything
/// else that would need a `\u` escape in JSON is refused there by [`Secrets::text`].
fn escape(c: char, syntax: Syntax) -> Option<&'static str> {
    match (syntax, c) {
        (Syntax::Json, '"') => Some("\\\""),
        (Syntax::Json, '\\') => Some("\\\\"),
        (Syntax::Xml, '&') => Some("&amp;"),
        (Syntax::Xml, '<') => Some("&lt;"),
        (Syntax::Xml, '>') => Some("&gt;"),
        (Syntax::Xml, '"') => Some("&quot;"),
        (Syntax::Xml, '\'') => Some("&apos;"),
        _ => None,
    }
}

/// The secrets of one answer (see the [module documentation](self)).
#[derive(Default)]
pub(crate) struct Secrets {
    /// `envseal-secret-<32 hex>-`, drawn at the first secret.
    prefix: Option<String>,
    items: Vec<Secret>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("count", &self.items.len()).finish()
    }
}

impl Secrets {
    fn add(&mut self, secret: Secret) -> String {
        let prefix = self
            .prefix
            .get_or_insert_with(|| format!("envseal-secret-{}-", hex::encode(envseal_core::random::array::<16>())));
        self.items.push(secret);
        format!("{prefix}{}", self.items.len() - 1)
    }

    /// Keeps `plaintext`, to be sent as base64; returns the placeholder to put in its place.
    pub(crate) fn base64(&mut self, plaintext: SecretBytes) -> String {
        self.add(Secret::Base64(plaintext))
    }

    /// Keeps a text secret (an STS secret or token); returns its placeholder. Control
    /// characters are dropped (credentials never hold any), so JSON needs no `\u` escape.
    pub(crate) fn text(&mut self, mut text: Zeroizing<String>) -> String {
        text.retain(|c| !c.is_control());
        self.add(Secret::Text(text))
    }

    /// The body: `public` with every placeholder replaced by its secret written for `syntax`,
    /// in a zeroizing buffer allocated once.
    pub(crate) fn render(&self, public: &[u8], syntax: Syntax) -> Zeroizing<Vec<u8>> {
        let Some(prefix) = &self.prefix else { return Zeroizing::new(public.to_vec()) };
        let spans = self.placeholders(public, prefix.as_bytes());
        let len = spans
            .iter()
            .fold(public.len(), |n, (start, end, i)| n - (end - start) + self.items[*i].written_len(syntax));
        let mut out = Zeroizing::new(vec![0u8; len]);
        let (mut from, mut at) = (0, 0);
        for (start, end, i) in spans {
            out[at..at + start - from].copy_from_slice(&public[from..start]);
            at += start - from;
            let n = self.items[i].written_len(syntax);
            self.items[i].write(syntax, &mut out[at..at + n]);
            at += n;
            from = end;
        }
        out[at..].copy_from_slice(&public[from..]);
        out
    }

    /// Where the placeholders are: (start, end, secret index), in order.
    fn placeholders(&self, public: &[u8], prefix: &[u8]) -> Vec<(usize, usize, usize)> {
        let mut spans = Vec::new();
        let mut i = 0;
        while let Some(pos) = public[i..].windows(prefix.len()).position(|w| w == prefix) {
            let start = i + pos;
            let digits = public[start + prefix.len()..].iter().take_while(|b| b.is_ascii_digit()).count();
            let end = start + prefix.len() + digits;
            let index = std::str::from_utf8(&public[start + prefix.len()..end]).ok().and_then(|d| d.parse().ok());
            match index {
                Some(index) if index < self.items.len() => spans.push((start, end, index)),
                _ => {}
            }
            i = end.max(start + 1);
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_answers_get_their_secrets_only_in_the_rendered_body() {
        let mut s = Secrets::default();
        let key = s.base64(SecretBytes::copy_from(&[0xfb; 32]));
        let token = s.text(Zeroizing::new("tok\"en\\1\n".to_owned()));
        let value = json!({"KeyId": "k", "Plaintext": key, "Credentials": {"SecurityToken": token}});
        let public = serde_json::to_vec(&value).unwrap();
        assert!(!String::from_utf8_lossy(&public).contains("+/"), "the public text holds placeholders only");
        let body = s.render(&public, Syntax::Json);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["Plaintext"], STANDARD.encode([0xfb; 32]));
        assert_eq!(parsed["Credentials"]["SecurityToken"], "tok\"en\\1");
        assert_eq!(parsed["KeyId"], "k");
        assert_eq!(body.len(), body.capacity(), "sized up front: no reallocation left a copy");
    }

    #[test]
    fn xml_and_plain_answers() {
        let mut s = Secrets::default();
        let secret = s.text(Zeroizing::new("a<b>&'c\"".to_owned()));
        let doc = format!("<SecretAccessKey>{secret}</SecretAccessKey>");
        let body = s.render(doc.as_bytes(), Syntax::Xml);
        assert_eq!(&body[..], b"<SecretAccessKey>a&lt;b&gt;&amp;&apos;c&quot;</SecretAccessKey>");
        // Without secrets the text is the body; a look-alike of another answer is left alone.
        assert_eq!(&Secrets::default().render(b"{\"a\":1}", Syntax::Json)[..], b"{\"a\":1}");
        let other = Secrets::default().base64(SecretBytes::copy_from(b"x"));
        let mut s = Secrets::default();
        let mine = s.base64(SecretBytes::copy_from(b"y"));
        let text = format!("{other} {mine} {mine}");
        assert_eq!(&s.render(text.as_bytes(), Syntax::Json)[..], format!("{other} eQ== eQ==").as_bytes());
    }
}
