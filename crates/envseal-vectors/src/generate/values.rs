//! Text-form vectors (FORMAT.md §5.6) and value-level vectors (FORMAT.md §10), from fixed
//! inputs like the rest.

use envseal_core::envelope::to_text;
use envseal_core::values::{KeyPath, ValueType};
use envseal_stores::{Document, FixedSeal, Unlocked};

use super::fixtures::{Builder, Ctx, FIELD_DK, Input, Outcome, ctx, encryption_context, entry, seal_field, seq};
use crate::Format;

// ---------------------------------------------------------------------------------------------
// Text form.

pub(super) fn text_cases(b: &mut Builder) {
    let table = ctx(&[("table", "users"), ("column", "card_number")]);
    // The envelope of `field/ok_1_byte_with_context` and Appendix B.
    let f = seal_field(4, 1, &table);
    let text = to_text(&f.bytes);
    let input = |t: String| Input { data_key: seq(FIELD_DK), context: table.clone(), sealed: t.into_bytes() };
    let case = |b: &mut Builder, name: &str, description: &str, t: String, outcome: Outcome| {
        b.push(Format::Text, name, description, input(t), outcome);
    };
    case(
        b,
        "ok_1_byte_with_context",
        "The text form of field/ok_1_byte_with_context (FORMAT.md Appendix B): `esf1:` and the \
         envelope in unpadded base64url; 148 bytes give 198 characters, the last two carrying one byte.",
        text.clone(),
        f.ok(),
    );
    let e = seal_field(5, 2, &table);
    case(
        b,
        "ok_2_bytes_last_group_of_3",
        "A 149-byte envelope: the text ends in 3 characters carrying 2 bytes (2 unused bits, zero).",
        to_text(&e.bytes),
        e.ok(),
    );
    let g = seal_field(6, 3, &table);
    case(
        b,
        "ok_3_bytes_no_partial_group",
        "A 150-byte envelope: a multiple of 3 bytes, so no partial final group.",
        to_text(&g.bytes),
        g.ok(),
    );
    case(
        b,
        "not_sealed_no_prefix",
        "The base64url payload without the `esf1:` prefix.",
        text[5..].to_string(),
        Outcome::Err("NotSealed"),
    );
    case(
        b,
        "not_sealed_other_prefix",
        "Prefix `esf2:` instead of `esf1:` (the prefix names the text form's version).",
        text.replacen("esf1:", "esf2:", 1),
        Outcome::Err("NotSealed"),
    );
    case(
        b,
        "malformed_padding",
        "`==` padding appended: the text form is unpadded.",
        format!("{text}=="),
        Outcome::Err("Malformed"),
    );
    let standard = text.replace('_', "/").replace('-', "+");
    assert_ne!(standard, text, "the fixed text must contain - or _");
    case(
        b,
        "malformed_standard_alphabet",
        "`-` and `_` replaced by `+` and `/` (the standard base64 alphabet instead of base64url).",
        standard,
        Outcome::Err("Malformed"),
    );
    let last = text.chars().last().unwrap_or('A');
    let bumped = char::from(u8::try_from(last).unwrap_or(b'A') + 1);
    case(
        b,
        "malformed_non_canonical_last_character",
        &format!(
            "Last character `{last}` changed to `{bumped}`: same bytes, but the 4 unused low bits are no longer zero \
             (a second spelling of the same envelope)."
        ),
        format!("{}{bumped}", &text[..text.len() - 1]),
        Outcome::Err("Malformed"),
    );
    case(
        b,
        "malformed_length_1_mod_4",
        "`A`s appended until the payload length is ≡ 1 (mod 4): no byte string encodes to such a length.",
        {
            // Make the payload length ≡ 1 (mod 4).
            let mut t = text.clone();
            while (t.len() - 5) % 4 != 1 {
                t.push('A');
            }
            t
        },
        Outcome::Err("Malformed"),
    );
    case(
        b,
        "malformed_character_outside_alphabet",
        "A `.` in the middle of the payload.",
        format!("{}.{}", &text[..40], &text[41..]),
        Outcome::Err("Malformed"),
    );
}

// ---------------------------------------------------------------------------------------------
// Value-level files.

/// The data key of every value-level vector: `c0 c1 ... df`.
const VALUES_DK: u8 = 0xc0;
/// The file id: `20 21 ... 3f`.
const FILE_ID: u8 = 0x20;
/// `created` and `modified` of every value-level vector.
const TIME: &str = "2026-12-01T00:00:00Z";

const DOTENV: &str = "# app settings\nDB_HOST=db.internal\nDB_PASSWORD=\"hunter2 with spaces\"\nexport API_TOKEN='sk-test-123'\nEMPTY=\nMULTI=\"line one\nline two\"\nPUBLIC_URL=https://example.test # trailing comment\n";
const JSON: &str = "{\n  \"db\": {\"host\": \"db.internal\", \"port\": 5432, \"tls\": true, \"replica\": null},\n  \"tags\": [\"a\", \"Zürich ☃\"],\n  \"ratio\": 1.50,\n  \"PUBLIC_URL\": \"https://example.test\"\n}\n";
const YAML: &str = "# service\ndb:\n  host: db.internal   # primary\n  password: 'p@ss: word'\n  port: 5432\n  enabled: false\nreplicas:\n  - r1\n  - r2\nnothing: ~\n";

fn parse(format: envseal_stores::Format, text: &str) -> Box<dyn Document> {
    // Invariant: the fixed documents parse.
    envseal_stores::parse(format, text.as_bytes()).expect("valid fixed document")
}

fn name_of(format: envseal_stores::Format) -> &'static str {
    match format {
        envseal_stores::Format::Json => "json",
        envseal_stores::Format::Yaml => "yaml",
        _ => "dotenv",
    }
}

/// A sealed value-level file, its keys and its plaintext.
struct Sealed {
    format: envseal_stores::Format,
    doc: Box<dyn Document>,
    plaintext: String,
    context: Ctx,
}

fn seal(
    format: envseal_stores::Format,
    text: &str,
    version: u8,
    plain_keys: Option<&str>,
    padding: u32,
    context: &Ctx,
) -> Sealed {
    // JSON layout is not kept (the reference writer pretty-prints): start from its rendering, so
    // that the opened file is byte-identical to the plaintext.
    let normalized;
    let text = if format == envseal_stores::Format::Json {
        // Invariant: the fixed JSON renders as UTF-8.
        normalized = String::from_utf8(parse(format, text).render()).expect("UTF-8 JSON");
        normalized.as_str()
    } else {
        text
    };
    let mut doc = parse(format, text);
    let dk = envseal_core::DataKey::from_bytes(seq(VALUES_DK));
    let fixed = FixedSeal {
        version,
        data_key: &dk,
        file_id: seq(FILE_ID),
        keys: vec![entry()],
        context: encryption_context(context),
        plain_keys: plain_keys.map(str::to_string),
        padding,
        time: TIME.into(),
    };
    // Invariant: the fixed inputs are valid.
    envseal_stores::seal_fixed(doc.as_mut(), fixed).expect("sealable fixed document");
    Sealed { format, doc, plaintext: text.to_string(), context: context.clone() }
}

impl Sealed {
    fn text(&self) -> String {
        // Invariant: the documents render UTF-8 text.
        String::from_utf8(self.doc.render()).expect("UTF-8 document")
    }

    fn push(&self, b: &mut Builder, name: &str, description: &str, sealed: String, outcome: Outcome) {
        let input = Input { data_key: seq(VALUES_DK), context: self.context.clone(), sealed: sealed.into_bytes() };
        b.push(Format::Values, name, description, input, outcome);
        if let Some(c) = b.cases.last_mut() {
            c.vector.file_format = Some(name_of(self.format).to_string());
        }
    }

    fn ok(&self) -> Outcome {
        Outcome::Ok(self.plaintext.clone().into_bytes())
    }

    /// The sealed text of the value at `pointer`-like path `path` as stored.
    fn stored(&self, path: &KeyPath) -> String {
        // Invariant: callers name paths of the fixed documents.
        self.doc.entries().into_iter().find(|e| &e.path == path).map(|e| e.text).expect("value at path")
    }

    /// A defect made with the file's keys: `change` edits the document, then the MAC is
    /// recomputed, so only the check it targets can catch it.
    fn with_keys(&self, change: impl FnOnce(&mut dyn Document, &Unlocked)) -> String {
        let mut doc = parse(self.format, &self.text());
        let dk = envseal_core::DataKey::from_bytes(seq(VALUES_DK));
        // Invariant: the sealed fixture opens with its own data key.
        let mut u = envseal_stores::unlock_with_data_key(
            doc.as_ref(),
            &dk,
            &encryption_context(&self.context),
            envseal_core::Engine::default(),
        )
        .expect("fixture opens");
        change(doc.as_mut(), &u);
        // Invariant: the changed documents still hold only sealed values where sealed ones belong.
        u.remac(doc.as_mut(), TIME).expect("remac");
        // The metadata's `modified` is fixed too.
        String::from_utf8(doc.render()).expect("UTF-8 document")
    }
}

fn set_sealed(doc: &mut dyn Document, path: &KeyPath, text: &str) {
    // Invariant: the path exists in the fixed documents.
    doc.set_value(path, ValueType::Str, text, true).expect("settable path");
}

pub(super) fn value_cases(b: &mut Builder) {
    use envseal_stores::Format as F;
    let none = Ctx::new();
    let env_ctx = ctx(&[("env", "prod"), ("app", "billing")]);

    // Known answers, format 2.
    let env2 = seal(F::Dotenv, DOTENV, 2, None, 32, &none);
    env2.push(
        b,
        "ok_dotenv_v2",
        "A .env file in format 2: every value sealed from its source text (quotes and escapes included), \
         `export` kept, an empty value, a multi-line value, a trailing comment; padding 32.",
        env2.text(),
        env2.ok(),
    );
    let env2p = seal(F::Dotenv, DOTENV, 2, Some("/PUBLIC_[^/]*"), 32, &env_ctx);
    env2p.push(
        b,
        "ok_dotenv_v2_plain_keys_and_context",
        "Format 2 with plain_keys `/PUBLIC_[^/]*` (matched against the whole JSON pointer: `/PUBLIC_URL` stays in \
         clear, covered by the MAC) and the context {app: billing, env: prod}.",
        env2p.text(),
        env2p.ok(),
    );
    let env0 = seal(F::Dotenv, DOTENV, 2, None, 0, &none);
    env0.push(
        b,
        "ok_dotenv_v2_padding_0",
        "Format 2 with padding 0: only the marker byte pads.",
        env0.text(),
        env0.ok(),
    );
    let json2 = seal(F::Json, JSON, 2, None, 32, &none);
    json2.push(
        b,
        "ok_json_v2",
        "A JSON file in format 2: nested objects, an array, a number kept as its source text (1.50), a boolean, a \
         null and a non-ASCII string; types restored from inside the ciphertext.",
        json2.text(),
        json2.ok(),
    );
    let json64 = seal(F::Json, JSON, 2, Some("/db/port|/tags/[0-9]+"), 64, &none);
    json64.push(
        b,
        "ok_json_v2_padding_64_plain_keys",
        "Format 2 with padding 64 and plain_keys `/db/port|/tags/[0-9]+` (a number and array items in clear).",
        json64.text(),
        json64.ok(),
    );
    let yaml2 = seal(F::Yaml, YAML, 2, None, 32, &none);
    yaml2.push(
        b,
        "ok_yaml_v2",
        "A YAML file in format 2: comments and quoting kept, a sequence, a boolean, a number and a null.",
        yaml2.text(),
        yaml2.ok(),
    );

    // Known answers, format 1 (still read).
    let env1 = seal(F::Dotenv, DOTENV, 1, Some("^PUBLIC_"), 0, &none);
    env1.push(
        b,
        "ok_dotenv_v1",
        "A .env file in format 1 (AES-256-GCM, synthetic nonce, type letter in clear), plain_keys `^PUBLIC_` \
         matched anywhere in the dotted path.",
        env1.text(),
        env1.ok(),
    );
    let json1 = seal(F::Json, JSON, 1, None, 0, &none);
    json1.push(
        b,
        "ok_json_v1",
        "A JSON file in format 1: `ENC[v1:n:...]`, `ENC[v1:b:...]` and so on.",
        json1.text(),
        json1.ok(),
    );
    let yaml1 = seal(F::Yaml, YAML, 1, None, 0, &none);
    yaml1.push(b, "ok_yaml_v1", "A YAML file in format 1.", yaml1.text(), yaml1.ok());

    // Negative cases, each with one defect.
    let t = env2.text();
    let lines: Vec<&str> = t.split_inclusive('\n').collect();
    let host = lines.iter().position(|l| l.starts_with("DB_HOST=")).unwrap_or(1);
    let mac = lines.iter().position(|l| l.starts_with("#ENVSEAL_MAC=")).unwrap_or(0);
    let swapped = {
        let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let a = env2.stored(&KeyPath::key("DB_HOST"));
        let c = env2.stored(&KeyPath::key("EMPTY"));
        v[host] = lines[host].replace(&a, &c);
        let empty = lines.iter().position(|l| l.starts_with("EMPTY=")).unwrap_or(4);
        v[empty] = lines[empty].replace(&c, &a);
        v.concat()
    };
    env2.push(
        b,
        "mac_mismatch_values_swapped",
        "The values of DB_HOST and EMPTY swapped (both ciphertexts intact).",
        swapped,
        Outcome::Err("MacMismatch"),
    );
    env2.push(
        b,
        "mac_mismatch_line_removed",
        "The DB_HOST line removed.",
        lines.iter().enumerate().filter(|(i, _)| *i != host).map(|(_, l)| *l).collect(),
        Outcome::Err("MacMismatch"),
    );
    let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    v[mac] = flip_hex_digit(lines[mac]);
    env2.push(
        b,
        "mac_mismatch_mac_edited",
        "One hex digit of the MAC changed.",
        v.concat(),
        Outcome::Err("MacMismatch"),
    );
    let com = lines.iter().position(|l| l.starts_with("#ENVSEAL_COMMITMENT=")).unwrap_or(0);
    let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    v[com] = flip_hex_digit(lines[com]);
    env2.push(
        b,
        "commitment_mismatch_edited",
        "One hex digit of the commitment changed.",
        v.concat(),
        Outcome::Err("CommitmentMismatch"),
    );
    let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    v[com] = lines[com].to_uppercase();
    env2.push(
        b,
        "malformed_commitment_uppercase",
        "The commitment written in uppercase hex: one commitment has one spelling (lowercase).",
        v.concat(),
        Outcome::Err("Malformed"),
    );
    let ver = lines.iter().position(|l| l.starts_with("#ENVSEAL_VERSION=")).unwrap_or(0);
    let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    v[ver] = "#ENVSEAL_VERSION=3\n".into();
    env2.push(b, "unsupported_version_3", "Metadata version 3.", v.concat(), Outcome::Err("UnsupportedVersion"));
    env2.push(
        b,
        "not_sealed_no_metadata",
        "The plaintext file: no envseal metadata.",
        DOTENV.to_string(),
        Outcome::Err("NotSealed"),
    );

    // Defects made with the keys (the MAC recomputed): only the value's own check catches them.
    let host_path = KeyPath::key("DB_HOST");
    let moved = env2.with_keys(|doc, u| {
        // DB_PASSWORD's plaintext sealed for DB_PASSWORD, stored under DB_HOST.
        let pw = u.seal_text(&KeyPath::key("DB_PASSWORD"), ValueType::Str, b"\"hunter2 with spaces\"").expect("seal");
        set_sealed(doc, &host_path, &pw);
    });
    env2.push(
        b,
        "value_tampered_moved_to_another_key",
        "DB_PASSWORD's sealed value stored under DB_HOST, and the MAC recomputed with the file's MAC key: the \
         value's associated data (its path) no longer matches.",
        moved,
        Outcome::Err("ValueTampered"),
    );
    let v02 = env2.with_keys(|doc, _| {
        let s = env2.stored(&host_path).replacen("ENC[v2:", "ENC[v02:", 1);
        set_sealed(doc, &host_path, &s);
    });
    env2.push(
        b,
        "malformed_value_version_v02",
        "`ENC[v02:` (non-canonical version digits), MAC recomputed.",
        v02,
        Outcome::Err("Malformed"),
    );
    let padded = env2.with_keys(|doc, _| {
        let s = env2.stored(&host_path);
        let s = format!("{}==]", &s[..s.len() - 1]);
        set_sealed(doc, &host_path, &s);
    });
    env2.push(
        b,
        "malformed_value_base64_padding",
        "`==` padding inside a sealed value, MAC recomputed.",
        padded,
        Outcome::Err("Malformed"),
    );
    let v1_in_v2 = env2.with_keys(|doc, _| {
        let s = env1.stored(&host_path);
        set_sealed(doc, &host_path, &s);
    });
    env2.push(
        b,
        "malformed_value_of_other_version",
        "A format-1 value (`ENC[v1:s:...]`) in a format-2 file, MAC recomputed.",
        v1_in_v2,
        Outcome::Err("Malformed"),
    );
    let v3 = env2.with_keys(|doc, _| {
        let s = env2.stored(&host_path).replacen("ENC[v2:", "ENC[v3:", 1);
        set_sealed(doc, &host_path, &s);
    });
    env2.push(
        b,
        "unsupported_value_version_3",
        "`ENC[v3:...]`, MAC recomputed.",
        v3,
        Outcome::Err("UnsupportedVersion"),
    );
    let j = json2.text();
    json2.push(
        b,
        "mac_mismatch_json_key_renamed",
        "The key `host` renamed to `hostname` (the value moved to another path).",
        j.replacen("\"host\"", "\"hostname\"", 1),
        Outcome::Err("MacMismatch"),
    );
    let y = yaml2.text();
    yaml2.push(
        b,
        "malformed_yaml_value_in_clear",
        "A sealed value replaced by its plaintext (`port: 5432`), which no plain_keys rule exempts.",
        {
            let port = yaml2.stored(&KeyPath(vec![
                envseal_core::values::PathSegment::Key("db".into()),
                envseal_core::values::PathSegment::Key("port".into()),
            ]));
            y.replacen(&port, "5432", 1)
        },
        Outcome::Err("Malformed"),
    );
    let other_ctx = Sealed { context: ctx(&[("env", "staging")]), ..seal(F::Dotenv, DOTENV, 2, None, 32, &env_ctx) };
    other_ctx.push(
        b,
        "wrong_context_expected_value",
        "Sealed with {app: billing, env: prod}; the reader expects env = staging.",
        other_ctx.text(),
        Outcome::Err("WrongContext"),
    );
}

/// The line with its last hex digit before the closing quote changed.
fn flip_hex_digit(line: &str) -> String {
    let at = line.rfind(|c: char| c.is_ascii_hexdigit()).unwrap_or(0);
    let c = line.as_bytes()[at];
    let new = if c == b'0' { '1' } else { '0' };
    format!("{}{new}{}", &line[..at], &line[at + 1..])
}
