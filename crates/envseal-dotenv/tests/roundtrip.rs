//! Property tests: documents generated from the grammar's pieces round-trip byte for byte and decode
//! to the values the generator meant; `set_value` and `set` read back exactly what was set.

use envseal_dotenv::{Document, Quote};
use proptest::prelude::*;

/// Characters that stress the grammar: quotes, `#`, `=`, backslash, `$`, whitespace, unicode.
const SPICY: &[char] = &[
    'a', 'Z', '0', '_', '=', '#', '$', '{', '}', '\\', '\'', '"', ' ', '\t', 'n', 'r', 't', 'é', '🔑', '日', '\u{a0}',
    '.', '-', '[', ']', ':',
];

fn ws() -> impl Strategy<Value = String> {
    "[ \t]{0,2}"
}

fn ws1() -> impl Strategy<Value = String> {
    "[ \t]{1,2}"
}

fn key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.-]{0,6}"
}

fn ending() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\n"), Just("\r\n")]
}

fn comment() -> impl Strategy<Value = String> {
    "[^\r\n]{0,8}".prop_map(|s| format!("#{s}"))
}

/// Arbitrary text from `extra` plus [`SPICY`].
fn text(extra: &'static [char], max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = SPICY.iter().chain(extra).copied().collect();
    prop::collection::vec(prop::sample::select(chars), 0..max).prop_map(|v| v.into_iter().collect())
}

/// (raw, decoded) for an unquoted value: words without whitespace joined by whitespace, fixed up
/// so that no word after whitespace starts with `#` and the value does not start with a quote
/// (or with `#` when whitespace follows `=`).
fn unquoted(space_before: bool) -> impl Strategy<Value = (String, String)> {
    let word = prop::collection::vec(
        prop::sample::select(SPICY.iter().copied().filter(|c| *c != ' ' && *c != '\t').collect::<Vec<_>>()),
        1..5,
    )
    .prop_map(|v| v.into_iter().collect::<String>());
    (prop::collection::vec((word, ws1()), 0..4)).prop_map(move |words| {
        let mut raw = String::new();
        for (i, (w, sep)) in words.iter().enumerate() {
            let bad_start = if i == 0 {
                w.starts_with(['\'', '"']) || (space_before && w.starts_with('#'))
            } else {
                w.starts_with('#')
            };
            if i > 0 {
                raw.push_str(sep);
            }
            if bad_start {
                raw.push('x');
            }
            raw.push_str(w);
        }
        (raw.clone(), raw)
    })
}

/// (raw, decoded) pieces of a single-quoted value.
fn single_piece() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        4 => prop::sample::select(SPICY.iter().copied().filter(|c| *c != '\'').collect::<Vec<_>>())
            .prop_map(|c| (c.to_string(), c.to_string())),
        1 => Just(("\n".into(), "\n".into())),
        1 => Just(("\r\n".into(), "\n".into())),
    ]
}

/// (raw, decoded) pieces of a double-quoted value.
fn double_piece() -> impl Strategy<Value = (String, String)> {
    let plain = SPICY.iter().copied().filter(|c| *c != '"' && *c != '\\').collect::<Vec<_>>();
    let pair = |r: &str, d: &str| Just((r.to_owned(), d.to_owned()));
    prop_oneof![
        6 => prop::sample::select(plain).prop_map(|c| (c.to_string(), c.to_string())),
        1 => pair("\\n", "\n"),
        1 => pair("\\r", "\r"),
        1 => pair("\\t", "\t"),
        1 => pair("\\\"", "\""),
        1 => pair("\\\\", "\\"),
        1 => pair("\\$", "$"),
        // Unknown escapes stay as written.
        1 => pair("\\q", "\\q"),
        1 => pair("\\'", "\\'"),
        1 => pair("\\é", "\\é"),
        1 => pair("\\\n", "\\\n"),
        1 => pair("\\\r\n", "\\\n"),
        // Raw line breaks; CRLF reads as LF.
        1 => pair("\n", "\n"),
        1 => pair("\r\n", "\n"),
    ]
}

fn join(pieces: Vec<(String, String)>, q: char) -> (String, String) {
    let (mut raw, mut val) = (q.to_string(), String::new());
    for (r, d) in pieces {
        raw.push_str(&r);
        val.push_str(&d);
    }
    raw.push(q);
    (raw, val)
}

/// One generated line: its text (with ending) and, for an entry, its key and expected value.
#[derive(Clone, Debug)]
struct GenLine {
    text: String,
    entry: Option<(String, String)>,
}

fn entry_line() -> impl Strategy<Value = GenLine> {
    (ws(), prop::option::of(ws1()), key(), ws(), ws(), 0..3u8, ending())
        .prop_flat_map(|(indent, export, key, before, after, form, end)| {
            let value = match form {
                0 => unquoted(!after.is_empty()).boxed(),
                1 => prop::collection::vec(single_piece(), 0..8).prop_map(|p| join(p, '\'')).boxed(),
                _ => prop::collection::vec(double_piece(), 0..8).prop_map(|p| join(p, '"')).boxed(),
            };
            // Unquoted values need whitespace before a comment; quoted ones do not.
            let trailing = if form == 0 {
                prop_oneof![Just(String::new()), ws1(), (ws1(), comment()).prop_map(|(w, c)| w + &c)].boxed()
            } else {
                prop_oneof![ws(), (ws(), comment()).prop_map(|(w, c)| w + &c)].boxed()
            };
            (Just((indent, export, key, before, after, end)), value, trailing)
        })
        .prop_map(|((indent, export, key, before, after, end), (raw, val), trailing)| {
            let export = export.map(|w| format!("export{w}")).unwrap_or_default();
            GenLine {
                text: format!("{indent}{export}{key}{before}={after}{raw}{trailing}{end}"),
                entry: Some((key, val)),
            }
        })
}

fn line() -> impl Strategy<Value = GenLine> {
    prop_oneof![
        1 => (ws(), ending()).prop_map(|(w, e)| GenLine { text: w + e, entry: None }),
        1 => (ws(), comment(), ending()).prop_map(|(w, c, e)| GenLine { text: w + &c + e, entry: None }),
        4 => entry_line(),
    ]
}

/// A document's text and its entries in order.
fn document() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
    (prop::collection::vec(line(), 0..10), any::<bool>()).prop_map(|(lines, drop_final_newline)| {
        let mut text: String = lines.iter().map(|l| l.text.as_str()).collect();
        if drop_final_newline {
            if text.ends_with("\r\n") {
                text.truncate(text.len() - 2);
            } else if text.ends_with('\n') {
                text.truncate(text.len() - 1);
            }
        }
        (text, lines.into_iter().filter_map(|l| l.entry).collect())
    })
}

fn entries(d: &Document) -> Vec<(String, String)> {
    d.entries().map(|e| (e.key().to_owned(), e.value().to_owned())).collect()
}

/// Values to set: anything, including CR, LF, quotes, `#`, `\`, `$`, unicode and the empty string.
fn new_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => text(&['\n', '\r', '\r', '\n'], 12),
        1 => any::<String>(),
        1 => "ENC\\[v1:str:[A-Za-z0-9_-]{0,12}\\]",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generated_documents_round_trip((text, expected) in document()) {
        let d = Document::parse(&text).map_err(|e| TestCaseError::fail(format!("{e} in {text:?}")))?;
        prop_assert_eq!(d.to_string(), text);
        prop_assert_eq!(entries(&d), expected);
    }

    #[test]
    fn set_value_reads_back((text, _) in document(), pick in any::<prop::sample::Index>(), v in new_value()) {
        let mut d = Document::parse(&text).unwrap();
        let before = entries(&d);
        if before.is_empty() {
            return Ok(());
        }
        let i = pick.index(before.len());
        let (old_quote, old_raws): (Quote, Vec<String>) = (
            d.entries().nth(i).unwrap().quote(),
            d.entries().map(|e| e.raw_value().to_owned()).collect(),
        );
        d.entries_mut().nth(i).unwrap().set_value(&v);
        let out = d.to_string();
        let re = Document::parse(&out).map_err(|e| TestCaseError::fail(format!("{e} in {out:?}")))?;
        let mut expected = before;
        expected[i].1 = v.clone();
        prop_assert_eq!(entries(&re), expected);
        // Every other entry is untouched, byte for byte.
        for (j, e) in re.entries().enumerate() {
            if j != i {
                prop_assert_eq!(e.raw_value(), old_raws[j].as_str());
            }
        }
        // A sealed value stays unquoted in an unquoted entry.
        if old_quote == Quote::None && v.starts_with("ENC[") {
            prop_assert_eq!(re.entries().nth(i).unwrap().quote(), Quote::None);
        }
        prop_assert_eq!(re.to_string(), out);
    }

    #[test]
    fn document_set_reads_back((text, _) in document(), k in key(), v in new_value()) {
        let mut d = Document::parse(&text).unwrap();
        d.set(&k, &v).unwrap();
        let out = d.to_string();
        let re = Document::parse(&out).map_err(|e| TestCaseError::fail(format!("{e} in {out:?}")))?;
        prop_assert_eq!(re.get(&k), Some(v.as_str()));
        let mut others = Document::parse(&text).unwrap();
        others.remove(&k);
        let mut re_others = re.clone();
        re_others.remove(&k);
        prop_assert_eq!(entries(&others), entries(&re_others));
    }

    /// Arbitrary text: the parser never panics, and whatever it accepts round-trips.
    #[test]
    fn arbitrary_input_never_panics(s in text(&['\n', '\r', '\n', 'x', 'p', 'o', 'e'], 40)) {
        if let Ok(d) = Document::parse(&s) {
            prop_assert_eq!(d.to_string(), s);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(d) = Document::parse_bytes(&b) {
            prop_assert_eq!(d.to_string().into_bytes(), b);
        }
    }
}
