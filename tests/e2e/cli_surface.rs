//! Help texts and completions.

use crate::util::*;

#[test]
fn bash_completions() {
    let s = Sandbox::new();
    let out = String::from_utf8(s.ok(&["completions", "bash"]).stdout).unwrap();
    assert!(out.contains("envseal"));
    assert!(out.contains("complete"));
    for sub in ["encrypt", "decrypt", "run", "inspect", "keys"] {
        assert!(out.contains(sub), "{sub}");
    }
    for shell in ["zsh", "fish"] {
        assert!(contains(&s.ok(&["completions", shell]).stdout, b"envseal"), "{shell}");
    }
    assert_eq!(s.run(&["completions", "tcsh"]).status.code(), Some(2));
}

/// The commands whose help has examples today.
const WITH_EXAMPLES: &[&[&str]] = &[
    &[],
    &["init"],
    &["encrypt"],
    &["decrypt"],
    &["run"],
    &["get"],
    &["set"],
    &["edit"],
    &["inspect"],
    &["rewrap"],
    &["completions"],
    &["keys", "create"],
];

#[test]
fn help_has_examples() {
    let s = Sandbox::new();
    for cmd in WITH_EXAMPLES {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = String::from_utf8(s.ok(&args).stdout).unwrap();
        assert!(out.lines().any(|l| l == "Examples:"), "{cmd:?}:\n{out}");
        assert!(out.contains("envseal "), "{cmd:?}");
    }
}

/// docs/CLI.md: "`envseal COMMAND --help` show[s] every option with examples".
#[test]
fn every_command_help_has_examples() {
    let s = Sandbox::new();
    let mut missing = Vec::new();
    for cmd in [
        &["unset"][..],
        &["keys"],
        &["keys", "list"],
        &["keys", "describe"],
        &["keys", "rotate"],
        &["keys", "enable"],
        &["keys", "disable"],
        &["keys", "schedule-deletion"],
        &["keys", "cancel-deletion"],
        &["keys", "set-min-version"],
        &["keys", "alias"],
        &["config"],
        &["config", "explain"],
        &["help-exit-codes"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = String::from_utf8(s.ok(&args).stdout).unwrap();
        if !out.lines().any(|l| l == "Examples:") {
            missing.push(cmd.join(" "));
        }
    }
    assert!(missing.is_empty(), "no Examples: in the help of {missing:?}");
}

#[test]
fn version_and_top_level_help() {
    let s = Sandbox::new();
    let v = String::from_utf8(s.ok(&["--version"]).stdout).unwrap();
    assert!(v.starts_with("envseal "), "{v}");
    let h = String::from_utf8(s.ok(&["--help"]).stdout).unwrap();
    for w in ["ENVSEAL_HOME", "ENVSEAL_PASSPHRASE", "help-exit-codes"] {
        assert!(h.contains(w), "{w}");
    }
}
