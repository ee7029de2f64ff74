//! `envseal run`: exact values in the child's environment, exit status passed through,
//! `--pristine`, several files, and no file ever written.

use std::os::unix::process::ExitStatusExt;

use crate::util::*;

/// Decoded values of `testdata/dotenv/grammar.env` (as in crates/envseal-dotenv/tests), after
/// duplicates: the last `DUP` wins.
const GRAMMAR_VALUES: &[(&str, &str)] = &[
    ("PLAIN", "value"),
    ("SPACED", "spaced value"),
    ("INDENTED", "yes"),
    ("EXPORTED", "yes"),
    ("TABBED", "x"),
    ("export", "not-a-prefix"),
    ("WITH_COMMENT", "abc"),
    ("TAB_COMMENT", "abc"),
    ("HASH_INSIDE", "abc#def"),
    ("HASH_FIRST", "#not-a-comment"),
    ("ONLY_COMMENT", ""),
    ("EQUALS", "a=b=="),
    ("URL", "postgres://user:p%40ss@db:5432/app?sslmode=require&x=1"),
    ("EMPTY", ""),
    ("EMPTY_DQ", ""),
    ("EMPTY_SQ", ""),
    ("SQ", r#"literal \n $HOME ${VAR} "x" # not a comment"#),
    ("DQ", "tab\tnl\ncr\rq\"bs\\dollar$ unknown\\q ${VAR}"),
    ("DQ_SINGLE", "it's"),
    ("SQ_DOUBLE", "say \"hi\""),
    ("NO_EXPANSION", "${HOME}/bin:$PATH"),
    ("UNICODE", "héllo wörld ✓ 日本"),
    ("UNICODE_DQ", "Grüße 🔑"),
    ("dotted.key-name_1", "ok"),
    ("_UNDERSCORE", "1"),
    ("SEALED", "ENC[v1:str:AAECAwQFBgcICQoLDA0ODw]"),
    ("CRLF_PLAIN", "crlf"),
    ("CRLF_DQ", "crlf quoted"),
    ("CRLF_MULTI", "line one\nline two"),
    ("MULTI_DQ", "-----BEGIN FAKE KEY-----\nAAAA\nBBBB\n-----END FAKE KEY-----"),
    ("MULTI_SQ", "first\nsecond \\n stays"),
    ("MULTI_ESCAPED", "a\nb"),
    ("DUP", "second"),
    ("LAST", "no final newline"),
];

#[test]
fn child_sees_exact_values() {
    let s = Sandbox::new();
    s.seal("g.env", testdata("dotenv/grammar.env"));
    let out = s.ok(&["run", "-f", "g.env", "--pristine", "--", "env", "-0"]);
    let env = parse_env0(&out.stdout);
    for (k, v) in GRAMMAR_VALUES {
        let got: Vec<_> = env.iter().filter(|(n, _)| n == k).collect();
        assert_eq!(got.len(), 1, "{k} set once");
        assert_eq!(String::from_utf8_lossy(&got[0].1), *v, "{k}");
    }
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).filter(|n| *n != "PATH").collect();
    assert_eq!(names.len(), GRAMMAR_VALUES.len(), "only the secrets and PATH: {names:?}");

    // The same through a shell, as a user would.
    for (k, v) in GRAMMAR_VALUES.iter().filter(|(k, _)| !k.contains('.')) {
        let out = s.ok(&["run", "-f", "g.env", "--", "sh", "-c", &format!("printf %s \"${k}\"")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), *v, "{k} via sh");
    }
    // `get` decodes the same way.
    for k in ["DQ", "MULTI_DQ", "SQ", "UNICODE", "DUP", "EMPTY_SQ", "CRLF_MULTI"] {
        let want = GRAMMAR_VALUES.iter().find(|(n, _)| *n == k).unwrap().1;
        assert_eq!(String::from_utf8(s.ok(&["get", "g.env", k]).stdout).unwrap(), want, "get {k}");
    }
}

#[test]
fn exit_status_is_passed_through() {
    let s = Sandbox::new();
    s.seal("a.env", "A=alpha-secret\n");
    for code in [0, 1, 7, 42, 255] {
        let out = s.run(&["run", "-f", "a.env", "--", "sh", "-c", &format!("exit {code}")]);
        assert_eq!(out.status.code(), Some(code));
        assert!(out.stderr.is_empty(), "envseal adds nothing: {}", String::from_utf8_lossy(&out.stderr));
    }
    // envseal execs the command: a signal that kills it is the status of envseal itself.
    let out = s.run(&["run", "-f", "a.env", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.signal(), Some(15));
    // stdin and arguments reach the child.
    let out = s.ok_in(&["run", "-f", "a.env", "--", "sh", "-c", "cat; printf '%s|' \"$@\"", "sh", "x y", "-f"], "in\n");
    assert_eq!(out.stdout, b"in\nx y|-f|");
}

#[test]
fn pristine_drops_other_variables_but_keeps_path() {
    let s = Sandbox::new();
    s.seal("a.env", "A=alpha-secret\n");
    let path = std::env::var("PATH").unwrap();
    let env =
        parse_env0(&s.cmd().args(["run", "-f", "a.env", "--", "env", "-0"]).env("FOO", "bar").output().unwrap().stdout);
    assert!(env.iter().any(|(k, v)| k == "FOO" && v == b"bar"), "without --pristine the environment is kept");
    assert!(env.iter().any(|(k, v)| k == "A" && v == b"alpha-secret"));
    let out = s.cmd().args(["run", "-f", "a.env", "--pristine", "--", "env", "-0"]).env("FOO", "bar").output().unwrap();
    assert!(out.status.success());
    let env = parse_env0(&out.stdout);
    let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["A", "PATH"], "FOO (and HOME, TMPDIR, ...) dropped");
    assert_eq!(env.iter().find(|(k, _)| k == "PATH").unwrap().1, path.as_bytes());
    // A secret overrides the inherited environment.
    let out = s
        .cmd()
        .args(["run", "-f", "a.env", "--", "sh", "-c", "printf %s \"$A\""])
        .env("A", "inherited")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"alpha-secret");
}

#[test]
fn several_files_later_wins() {
    let s = Sandbox::new();
    s.seal("base.env", "A=base-a\nB=base-b\n");
    s.seal("prod.env", "A=prod-a\nC=prod-c\n");
    s.seal("extra.json", r#"{"db":{"password":"json-pw","hosts":["h0","h1"]},"A":"json-a"}"#);
    let run = |files: &[&str]| {
        let mut args = vec!["run"];
        for f in files {
            args.extend(["-f", f]);
        }
        args.extend([
            "--",
            "sh",
            "-c",
            "printf '%s|%s|%s|%s|%s' \"$A\" \"$B\" \"$C\" \"$db_password\" \"$db_hosts_1\"",
        ]);
        String::from_utf8(s.ok(&args).stdout).unwrap()
    };
    assert_eq!(run(&["base.env", "prod.env"]), "prod-a|base-b|prod-c||");
    assert_eq!(run(&["prod.env", "base.env"]), "base-a|base-b|prod-c||");
    assert_eq!(run(&["base.env", "prod.env", "extra.json"]), "json-a|base-b|prod-c|json-pw|h1");
}

#[test]
fn default_file_is_dot_env() {
    let s = Sandbox::new();
    s.seal(".env", "DEFAULT_FILE=yes-it-is\n");
    let out = s.ok(&["run", "--", "sh", "-c", "printf %s \"$DEFAULT_FILE\""]);
    assert_eq!(out.stdout, b"yes-it-is");
}

#[test]
fn missing_command_is_127() {
    let s = Sandbox::new();
    s.seal("a.env", "A=alpha-secret\n");
    let out = s.run(&["run", "-f", "a.env", "--", "envseal-e2e-no-such-command"]);
    let err = assert_error(&out, 127, true);
    assert!(err.contains("envseal-e2e-no-such-command"));
    assert!(!err.contains("alpha-secret"));
    // A path that is not executable: also cannot be started.
    s.write("not-exec.sh", "#!/bin/sh\n");
    let out = s.run(&["run", "-f", "a.env", "--", "./not-exec.sh"]);
    assert_error(&out, 127, true);
    // No command at all: usage error.
    assert_eq!(s.run(&["run", "-f", "a.env"]).status.code(), Some(2));
}

#[test]
fn run_errors_before_starting_the_command() {
    let s = Sandbox::new();
    s.write("plain.env", "A=alpha-secret\n");
    let marker = s.path("ran");
    let cmd = format!("touch {}", marker.display());
    let out = s.run(&["run", "-f", "missing.env", "--", "sh", "-c", &cmd]);
    assert_error(&out, 4, false);
    let out = s.run(&["run", "-f", "plain.env", "--", "sh", "-c", &cmd]);
    assert_error(&out, 3, true);
    s.ok(&["encrypt", "-o", "bin.sealed", "--format", "binary", "plain.env"]);
    let out = s.run(&["run", "-f", "bin.sealed", "--", "sh", "-c", &cmd]);
    assert_error(&out, 3, true);
    assert!(!marker.exists(), "the command must not run when a file cannot be opened");
}

#[test]
fn run_never_writes_files() {
    let s = Sandbox::new();
    s.seal("g.env", testdata("dotenv/grammar.env"));
    s.seal("c.json", r#"{"a":"json-secret"}"#);
    let work = snapshot(&s.work);
    let home = snapshot(&s.home);
    let mtime = std::fs::metadata(s.path("g.env")).unwrap().modified().unwrap();
    s.ok(&["run", "-f", "g.env", "-f", "c.json", "--", "true"]);
    s.ok(&["run", "-f", "g.env", "--pristine", "--", "env"]);
    let _ = s.run(&["run", "-f", "g.env", "--", "sh", "-c", "exit 3"]);
    assert_eq!(snapshot(&s.work), work);
    assert_eq!(snapshot(&s.home), home);
    assert_eq!(std::fs::metadata(s.path("g.env")).unwrap().modified().unwrap(), mtime);
    assert!(snapshot(&s.tmp).is_empty() && snapshot(&s.runtime).is_empty());
}
