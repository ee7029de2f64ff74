//! `envseal keys`: create, list, describe, rotate, deletion windows, enable/disable.

use crate::util::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn create_list_describe() {
    let s = Sandbox::new();
    let created = json(&s.ok(&["keys", "create", "--alias", "alias/app", "--description", "app secrets", "--json"]));
    let id = created["key_id"].as_str().unwrap().to_string();
    assert_eq!(created["aliases"][0], "alias/app");
    assert_eq!(created["state"], "Enabled");
    assert_eq!(created["current_version"], "1");
    // Text output.
    let text = String::from_utf8(s.ok(&["keys", "create", "--alias", "alias/other"]).stdout).unwrap();
    assert!(text.contains("alias/other") && text.contains("Enabled"), "{text}");
    let list = json(&s.ok(&["keys", "list", "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "alias/default, alias/app, alias/other");
    let aliases: Vec<&str> =
        list.iter().flat_map(|k| k["aliases"].as_array().unwrap()).map(|a| a.as_str().unwrap()).collect();
    for a in ["alias/default", "alias/app", "alias/other"] {
        assert!(aliases.contains(&a), "{aliases:?}");
    }
    let text = String::from_utf8(s.ok(&["keys", "list"]).stdout).unwrap();
    assert!(text.contains(&id) && text.contains("alias/app"), "{text}");
    // describe by alias and by id.
    let by_alias = json(&s.ok(&["keys", "describe", "alias/app", "--json"]));
    let by_id = json(&s.ok(&["keys", "describe", &id, "--json"]));
    assert_eq!(by_alias, by_id);
    assert_eq!(by_alias["description"], "app secrets");
    // Sealing with it records its id.
    s.write("a.env", "A=secret-alpha\n");
    s.ok(&["encrypt", "a.env", "--key", "alias/app"]);
    assert_eq!(s.inspect("a.env")["keys"][0]["key_id"], id.as_str());
    // Duplicate alias, unknown key.
    assert!(!s.run(&["keys", "create", "--alias", "alias/app"]).status.success());
    s.fails(&["keys", "describe", "alias/nope"], 6);
    // Alias management.
    s.ok(&["keys", "alias", "create", "alias/third", &id]);
    let aliases = json(&s.ok(&["keys", "alias", "list", "--json"]));
    assert!(aliases.as_array().unwrap().iter().any(|a| a["alias"] == "alias/third" && a["key_id"] == id.as_str()));
    s.ok(&["keys", "alias", "delete", "alias/third"]);
    s.fails(&["keys", "describe", "alias/third"], 6);
}

#[test]
fn rotate_keeps_old_files_and_seals_new_ones_with_version_2() {
    let s = Sandbox::new();
    s.ok(&["keys", "create", "--alias", "alias/app"]);
    s.write("old.env", "A=secret-alpha\n");
    s.ok(&["encrypt", "old.env", "--key", "alias/app"]);
    s.write("old.bin", random_bytes(1000, 10));
    s.ok(&["encrypt", "old.bin", "--key", "alias/app"]);
    let rotated = json(&s.ok(&["keys", "rotate", "alias/app", "--json"]));
    assert_eq!(rotated["current_version"], "2");
    assert_eq!(rotated["versions"].as_array().unwrap().len(), 2);
    // Old files still open, and still say version 1.
    assert_eq!(s.decrypt("old.env"), b"A=secret-alpha\n");
    assert_eq!(s.decrypt("old.bin"), random_bytes(1000, 10));
    assert_eq!(s.inspect("old.env")["keys"][0]["key_version"], "1");
    // New files use version 2.
    s.write("new.env", "A=secret-alpha\n");
    s.ok(&["encrypt", "new.env", "--key", "alias/app"]);
    s.write("new.bin", random_bytes(1000, 11));
    s.ok(&["encrypt", "new.bin", "--key", "alias/app"]);
    assert_eq!(s.inspect("new.env")["keys"][0]["key_version"], "2");
    assert_eq!(s.inspect("new.bin")["keys"][0]["key_version"], "2");
    assert_eq!(s.decrypt("new.env"), b"A=secret-alpha\n");
    // set on an old file keeps its wrapped key (version 1): other values keep their ciphertext.
    s.ok(&["set", "old.env", "B", "secret-bravo"]);
    assert_eq!(s.inspect("old.env")["keys"][0]["key_version"], "1");
    // A minimum decryption version retires version 1.
    s.ok(&["keys", "set-min-version", "alias/app", "2"]);
    let err = s.fails(&["decrypt", "old.env"], 13);
    assert!(err.contains("rewrap"), "{err}");
    s.fails(&["decrypt", "old.bin"], 13);
    s.ok(&["decrypt", "new.env"]);
    // The text form of rotate.
    let out = s.ok(&["keys", "rotate", "alias/app"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("version 3"));
}

#[test]
fn schedule_and_cancel_deletion() {
    let s = Sandbox::new();
    s.ok(&["keys", "create", "--alias", "alias/app"]);
    s.write("a.env", "A=secret-alpha\n");
    s.ok(&["encrypt", "a.env", "--key", "alias/app"]);
    let sealed = s.read("a.env");
    // The waiting period is 7 to 30 days.
    let out = s.run(&["keys", "schedule-deletion", "alias/app", "--days", "6"]);
    assert_error(&out, 2, false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("7"), "says the allowed range");
    assert!(!s.run(&["keys", "schedule-deletion", "alias/app", "--days", "31"]).status.success());
    assert_eq!(s.decrypt("a.env"), b"A=secret-alpha\n", "a refused request changes nothing");
    let m = json(&s.ok(&["keys", "schedule-deletion", "alias/app", "--days", "7", "--json"]));
    assert_eq!(m["state"], "PendingDeletion");
    assert!(m["deletion_date"].is_string());
    let err = s.fails(&["decrypt", "a.env"], 13);
    assert!(err.contains("cancel-deletion"), "{err}");
    s.fails(&["encrypt", "a.env", "-o", "b.env", "--key", "alias/app"], 3); // sealed already
    s.write("p.env", "P=plain-value\n");
    s.fails(&["encrypt", "p.env", "--key", "alias/app"], 13);
    assert_eq!(s.read("a.env"), sealed);
    // Cancelling leaves the key disabled until enabled.
    s.ok(&["keys", "cancel-deletion", "alias/app"]);
    assert_eq!(json(&s.ok(&["keys", "describe", "alias/app", "--json"]))["state"], "Disabled");
    s.fails(&["decrypt", "a.env"], 13);
    s.ok(&["keys", "enable", "alias/app"]);
    assert_eq!(s.decrypt("a.env"), b"A=secret-alpha\n");
    // The default key is unaffected throughout.
    s.ok(&["encrypt", "p.env"]);
}
