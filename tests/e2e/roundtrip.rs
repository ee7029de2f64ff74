//! Byte-exact round trips: .env samples, JSON (after its documented normalisation), binary
//! files of boundary sizes, through files, `-o`, `--in-place` and pipes.

use crate::util::*;

const DOTENV_SAMPLES: &[&str] = &["grammar.env", "big.env", "sample.env"];

#[test]
fn dotenv_samples_round_trip_in_place_byte_for_byte() {
    let s = Sandbox::new();
    for name in DOTENV_SAMPLES {
        let original = testdata(&format!("dotenv/{name}"));
        s.write(name, &original);
        let out = s.ok(&["encrypt", name]);
        assert!(out.stdout.is_empty(), "in-place encrypt prints nothing on stdout");
        assert!(String::from_utf8_lossy(&out.stderr).contains("in place"), "{name}");
        let sealed = s.read(name);
        assert_ne!(sealed, original, "{name} was not sealed");
        assert_eq!(s.inspect(name)["format"], "dotenv");
        assert_eq!(s.decrypt(name), original, "{name}: decrypt to stdout");
        assert_eq!(s.ok(&["decrypt", name, "-o", "-"]).stdout, original, "{name}: -o -");
        assert_eq!(s.read(name), sealed, "decrypt to stdout must not touch the file");
    }
}

#[test]
fn encrypt_to_output_leaves_input_untouched() {
    let s = Sandbox::new();
    let original = testdata("dotenv/sample.env");
    s.write("sample.env", &original);
    let before = std::fs::metadata(s.path("sample.env")).unwrap().modified().unwrap();
    s.ok(&["encrypt", "sample.env", "-o", "sealed.env"]);
    assert_eq!(s.read("sample.env"), original);
    assert_eq!(std::fs::metadata(s.path("sample.env")).unwrap().modified().unwrap(), before);
    assert_ne!(s.read("sealed.env"), original);
    assert_eq!(s.decrypt("sealed.env"), original);
    // -o onto a sub-directory path works too.
    std::fs::create_dir(s.path("out")).unwrap();
    s.ok(&["encrypt", "sample.env", "-o", "out/s.env"]);
    assert_eq!(s.decrypt("out/s.env"), original);
}

#[test]
fn decrypt_to_file_and_in_place() {
    let s = Sandbox::new();
    let original = testdata("dotenv/grammar.env");
    let sealed = s.seal("g.env", &original);
    s.ok(&["decrypt", "g.env", "-o", "plain.env"]);
    assert_eq!(s.read("plain.env"), original);
    assert_eq!(s.read("g.env"), sealed, "decrypt -o leaves the sealed file alone");
    // -o over an existing file replaces it.
    s.write("existing.env", "old contents\n");
    s.ok(&["decrypt", "g.env", "-o", "existing.env"]);
    assert_eq!(s.read("existing.env"), original);
    s.ok(&["decrypt", "g.env", "--in-place"]);
    assert_eq!(s.read("g.env"), original);
    // Now plain: a second --in-place is refused and changes nothing.
    s.fails(&["decrypt", "g.env", "--in-place"], 3);
    assert_eq!(s.read("g.env"), original);
    // -o and --in-place together: usage error.
    s.seal("h.env", &original);
    let out = s.run(&["decrypt", "h.env", "-o", "x.env", "--in-place"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!s.path("x.env").exists());
    let out = s.run_in(&["decrypt", "-", "--in-place"], s.read("h.env"));
    assert_error(&out, 2, false);
}

#[test]
fn dotenv_through_stdin_and_stdout() {
    let s = Sandbox::new();
    for name in DOTENV_SAMPLES {
        let original = testdata(&format!("dotenv/{name}"));
        let sealed = s.ok_in(&["encrypt", "-"], original.clone()).stdout;
        assert!(contains(&sealed, b"#ENVSEAL_MAC="), "{name}: .env detected from content on stdin");
        assert_eq!(s.ok_in(&["decrypt", "-"], sealed.clone()).stdout, original, "{name}");
        // Mixed: stdin to a file, file to stdout; file to stdout with -o -, stdin to a file.
        s.ok_in(&["encrypt", "-", "-o", "from-stdin.env"], original.clone());
        assert_eq!(s.ok(&["decrypt", "from-stdin.env", "-o", "-"]).stdout, original);
        // from-stdin.env is sealed already: refused.
        let again = s.run(&["encrypt", "from-stdin.env", "-o", "-"]);
        assert_error(&again, 3, true);
        assert!(again.stdout.is_empty());
        s.write("plain.env", &original);
        let sealed3 = s.ok(&["encrypt", "plain.env", "-o", "-"]).stdout;
        assert_eq!(s.read("plain.env"), original);
        s.ok_in(&["decrypt", "-", "-o", "back.env"], sealed3);
        assert_eq!(s.read("back.env"), original);
    }
}

/// JSON documents already in envseal's output layout come back byte for byte.
#[test]
fn json_round_trips_byte_for_byte_when_normalised() {
    let docs: &[&str] = &[
        r#"{"a":{"b":["x1y2z3",2]},"n":1.50,"t":true,"f":false,"z":null,"s":"hello world"}"#,
        "{\"one\":\"line\",\"with\":\"final newline\"}\n",
        "{\n  \"db\": {\n    \"hosts\": [\n      {\n        \"name\": \"h1-secret\",\n        \"port\": 5432\n      }\n    ],\n    \"password\": \"pa55word!\"\n  },\n  \"empty_array\": [],\n  \"empty_object\": {},\n  \"big\": 12345678901234567890123,\n  \"neg_zero\": -0,\n  \"small\": 1.5e-7,\n  \"unicode\": \"Grüße 🔑 日本\",\n  \"escapes\": \"tab\\t nl\\n quote\\\" backslash\\\\\"\n}\n",
        "{\n    \"four\": {\n        \"spaces\": \"indent-value\"\n    },\n    \"last\": [\n        1,\n        \"two\"\n    ]\n}",
        "{\n\t\"tab\": {\n\t\t\"indent\": \"tabbed-value\"\n\t}\n}\n",
    ];
    let s = Sandbox::new();
    for (i, doc) in docs.iter().enumerate() {
        let name = format!("doc{i}.json");
        let sealed = s.seal(&name, doc);
        assert_eq!(s.inspect(&name)["format"], "json");
        let sealed_text = String::from_utf8(sealed).unwrap();
        assert_eq!(sealed_text.trim_end().contains('\n'), doc.trim_end().contains('\n'), "{name}: layout kept");
        assert_eq!(String::from_utf8(s.decrypt(&name)).unwrap(), *doc, "{name}");
        // Through pipes as well.
        let sealed = s.ok_in(&["encrypt", "-", "--format", "json"], doc.as_bytes()).stdout;
        assert_eq!(s.ok_in(&["decrypt", "-"], sealed).stdout, doc.as_bytes(), "{name} via pipes");
    }
}

/// Other layouts are normalised (docs/CLI.md): same values, same key order, one-line stays
/// one line, others re-indented like their first indented line.
#[test]
fn json_whitespace_is_normalised_values_and_order_kept() {
    let s = Sandbox::new();
    let cases: &[(&str, &str)] = &[
        (r#"{"b": 1, "a": [1, 2], "c": {}}"#, r#"{"b":1,"a":[1,2],"c":{}}"#),
        ("  {\"k\":\"v-value\"}  ", "{\"k\":\"v-value\"}"),
        (
            "{\n   \"z\": {\"y\": \"secret-y\", \"x\": []},\n   \"a\": 1.0\n}\n",
            "{\n   \"z\": {\n      \"y\": \"secret-y\",\n      \"x\": []\n   },\n   \"a\": 1.0\n}\n",
        ),
    ];
    for (i, (input, expected)) in cases.iter().enumerate() {
        let name = format!("n{i}.json");
        s.seal(&name, input);
        let out = String::from_utf8(s.decrypt(&name)).unwrap();
        assert_eq!(out, *expected, "{name}");
        let a: serde_json::Value = serde_json::from_str(input).unwrap();
        let b: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap(), "{name}: values, order");
    }
}

/// docs/CLI.md: JSON keeps "number text"; json.rs: "numbers kept as written".
#[test]
#[ignore = "bug: JSON numbers with an exponent lose their spelling (1e3 -> 1e+3, 1E-2 -> 1e-2)"]
fn json_exponent_numbers_keep_their_text() {
    let s = Sandbox::new();
    for n in ["1e3", "1E3", "2.5E-2", "1e+3"] {
        let doc = format!("{{\"n\":{n}}}");
        s.seal("n.json", &doc);
        assert_eq!(String::from_utf8(s.decrypt("n.json")).unwrap(), doc);
        assert_eq!(s.ok(&["get", "n.json", "n"]).stdout, n.as_bytes());
    }
}

/// A JSON object with a duplicate key: the first value must not vanish silently (YAML refuses
/// duplicate keys; JSON should too, or keep both).
#[test]
fn json_duplicate_keys_are_not_silently_dropped() {
    let s = Sandbox::new();
    let doc = "{\n  \"dup\": \"first-value\",\n  \"dup\": \"second-value\"\n}\n";
    s.write("d.json", doc);
    let out = s.run(&["encrypt", "d.json"]);
    if out.status.success() {
        let back = String::from_utf8(s.decrypt("d.json")).unwrap();
        assert!(back.contains("first-value"), "the first value was lost:\n{back}");
    } else {
        assert_error(&out, 3, true);
        assert_eq!(s.text("d.json"), doc);
    }
}

const SIZES: &[usize] = &[0, 1, 65535, 65536, 65537, 5 * 1024 * 1024];

#[test]
fn binary_files_round_trip_through_files() {
    let s = Sandbox::new();
    let mut overhead = None;
    for (i, &len) in SIZES.iter().enumerate() {
        let data = random_bytes(len, i as u64);
        let name = format!("data{i}.bin");
        s.write(&name, &data);
        s.ok(&["encrypt", &name, "-o", "sealed.bin"]);
        assert_eq!(s.read(&name), data, "input untouched");
        let info = s.inspect("sealed.bin");
        assert_eq!(info["format"], "binary", "{len} bytes");
        assert_eq!(info["plaintext_bytes"], len as u64);
        let chunks = len.div_ceil(65536).max(1);
        assert_eq!(s.read("sealed.bin").len() as u64, info["sealed_bytes"].as_u64().unwrap());
        // One 16-byte tag per 64 KiB chunk (at least one chunk), plus a fixed preamble.
        let preamble = info["sealed_bytes"].as_u64().unwrap() - (chunks * 16 + len) as u64;
        assert_eq!(*overhead.get_or_insert(preamble), preamble, "{len}: chunking");
        s.ok(&["decrypt", "sealed.bin", "-o", "plain.bin"]);
        assert_eq!(s.read("plain.bin"), data, "{len} bytes via -o");
        assert_eq!(s.decrypt("sealed.bin"), data, "{len} bytes to stdout");
        // In place and back.
        s.ok(&["encrypt", &name]);
        assert_ne!(s.read(&name), data);
        s.ok(&["decrypt", &name, "--in-place"]);
        assert_eq!(s.read(&name), data, "{len} bytes in place");
    }
}

#[test]
fn binary_files_round_trip_through_pipes() {
    let s = Sandbox::new();
    for (i, &len) in SIZES.iter().enumerate() {
        let data = random_bytes(len, 100 + i as u64);
        let sealed = s.ok_in(&["encrypt", "-"], data.clone()).stdout;
        assert_eq!(&sealed[..4], b"\x89ESL", "{len}: a container");
        assert_eq!(s.ok_in(&["decrypt", "-"], sealed.clone()).stdout, data, "{len} bytes");
        assert_eq!(s.ok_in(&["decrypt", "-", "-o", "-"], sealed.clone()).stdout, data);
        // Pipe in, file out; file in, pipe out.
        s.ok_in(&["encrypt", "-", "-o", "p.sealed"], data.clone());
        assert_eq!(s.ok(&["decrypt", "p.sealed", "-o", "-"]).stdout, data);
        s.ok_in(&["decrypt", "-", "-o", "p.plain"], sealed);
        assert_eq!(s.read("p.plain"), data);
    }
}

#[test]
fn format_binary_on_a_dotenv_file() {
    let s = Sandbox::new();
    let original = testdata("dotenv/sample.env");
    s.write("sample.env", &original);
    s.ok(&["encrypt", "sample.env", "--format", "binary"]);
    let sealed = s.read("sample.env");
    assert_eq!(&sealed[..8], b"\x89ESL\r\n\x1a\n");
    assert_eq!(s.inspect("sample.env")["format"], "binary");
    assert_eq!(s.decrypt("sample.env"), original);
    // get/set work on value-level files only.
    let out = s.run(&["get", "sample.env", "API_KEY"]);
    assert_error(&out, 3, true);
    s.ok(&["decrypt", "sample.env", "--in-place"]);
    assert_eq!(s.read("sample.env"), original);
}

/// Files whose name says nothing are sniffed: KEY=value text is .env, other text/bytes binary.
#[test]
fn format_detection_by_content() {
    let s = Sandbox::new();
    s.write("noext", "A=alpha-value\n# comment\nB=bravo-value\n");
    s.ok(&["encrypt", "noext"]);
    assert_eq!(s.inspect("noext")["format"], "dotenv");
    s.write("notes.txt", "just some prose, not KEY=value lines\nsecond line\n");
    s.ok(&["encrypt", "notes.txt"]);
    assert_eq!(s.inspect("notes.txt")["format"], "binary");
    s.write("obj", "{\"k\": \"json-value\"}");
    s.ok(&["encrypt", "obj"]);
    assert_eq!(s.inspect("obj")["format"], "json");
    for f in ["noext", "notes.txt", "obj"] {
        s.ok(&["decrypt", f, "--in-place"]);
    }
    assert_eq!(s.text("noext"), "A=alpha-value\n# comment\nB=bravo-value\n");
    assert_eq!(s.text("notes.txt"), "just some prose, not KEY=value lines\nsecond line\n");
    assert_eq!(s.text("obj"), "{\"k\":\"json-value\"}");
}

#[test]
fn empty_and_comment_only_dotenv_files() {
    let s = Sandbox::new();
    for (name, content) in [("empty.env", ""), ("comments.env", "# only a comment\n\n"), ("nonl.env", "# no newline")] {
        s.seal(name, content);
        assert_eq!(s.decrypt(name), content.as_bytes(), "{name}");
        assert_eq!(s.inspect(name)["values_sealed"], 0);
    }
}
