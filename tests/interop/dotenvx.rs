//! `envseal import dotenvx` against files the real `@dotenvx/dotenvx` encrypts.

use super::*;

#[test]
fn dotenvx_files_import_and_run_the_same() {
    const TEST: &str = "dotenvx_files_import_and_run_the_same";
    let Some(dx) = tool("dotenvx") else {
        return skip(TEST, "dotenvx (npm @dotenvx/dotenvx) not found");
    };
    let s = Sandbox::new(&[]);
    let plain = "# app\nHELLO=\"world\"\nMULTI=\"line1\nline2\"\nQUOTES=\"it's \\\"x\\\"\"\nSINGLE='a $b'\nexport EXPORTED=yes\nEMPTY=\nHASH=\"a#b\"\n";
    s.write(".env", plain);
    s.write(".env.production", "DB_URL=postgres://u:p@h/db\n");
    s.ok(&dx, &["encrypt", "-f", ".env"]);
    s.ok(&dx, &["encrypt", "-f", ".env.production"]);
    let enc = s.read(".env");
    assert!(enc.contains("encrypted:") && !enc.contains("world") && s.path(".env.keys").exists(), "{enc}");
    let vars = ["HELLO", "MULTI", "QUOTES", "SINGLE", "EXPORTED", "EMPTY", "HASH"];
    let script = vars.iter().map(|v| format!("printf '[%s]' \"${v}\"")).collect::<Vec<_>>().join("; ");
    let via_dotenvx = s.ok(&dx, &["run", "-q", "-f", ".env", "--", "sh", "-c", &script]);

    s.envseal(&["import", "dotenvx", ".env", "-o", "sealed.env"]);
    let sealed = s.read("sealed.env");
    assert!(
        !sealed.contains("world") && !sealed.contains("encrypted:") && !sealed.contains("DOTENV_PUBLIC_KEY"),
        "{sealed}"
    );
    assert!(sealed.contains("# app"), "{sealed}");
    let via_envseal = s.envseal(&["run", "-f", "sealed.env", "--", "sh", "-c", &script]);
    assert_eq!(via_envseal, via_dotenvx);
    assert!(via_envseal.contains("[line1\nline2]"), "{via_envseal}");

    // .env.production's key is DOTENV_PRIVATE_KEY_PRODUCTION; in place.
    s.envseal(&["import", "dotenvx", ".env.production", "--in-place"]);
    assert_eq!(s.envseal(&["get", ".env.production", "DB_URL"]).trim(), "postgres://u:p@h/db");

    // A tampered ciphertext is refused (each value's GCM tag; dotenvx itself has no file MAC).
    let v = enc.lines().find(|l| l.starts_with("HELLO=")).unwrap();
    let b64 = v.trim_start_matches("HELLO=\"encrypted:").trim_end_matches('"');
    // A character inside the nonce (base64 characters 88..109 after the 65-byte ephemeral key).
    let mid = 100;
    let flipped = format!("{}{}{}", &b64[..mid], if &b64[mid..mid + 1] == "A" { "B" } else { "A" }, &b64[mid + 1..]);
    s.write(".env", enc.replace(b64, &flipped));
    let (code, err) = s.envseal_fails(&["import", "dotenvx", ".env", "-o", "x.env"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("HELLO"), "the variable is named: {err}");
    s.write(".env", &enc);

    // A wrong private key, then none: refused, nothing written.
    s.write("wrong.keys", format!("DOTENV_PRIVATE_KEY=\"{}\"\n", "11".repeat(32)));
    let (code, err) =
        s.envseal_fails(&["import", "dotenvx", ".env", "--private-key-file", "wrong.keys", "-o", "x.env"]);
    assert_eq!(code, 6, "{err}");
    assert!(!err.contains(&"11".repeat(32)), "the key must not be echoed: {err}");
    std::fs::remove_file(s.path(".env.keys")).unwrap();
    let (code, err) = s.envseal_fails(&["import", "dotenvx", ".env", "-o", "x.env"]);
    assert_eq!(code, 6, "{err}");
    assert!(!s.path("x.env").exists());
}
