//! What changed between two versions of an IAM file, as audit events (names and ids only,
//! never secrets).

use envseal_iam::{Format, Iam};
use serde_json::{Map, Value};

/// One IAM change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Change {
    /// Event name (`CreateUser`, `CreateAccessKey`, `PutPolicy`, ...).
    pub event: &'static str,
    /// What it applies to (`alice`, `alice/LTAI...`, `policy/dev`).
    pub target: String,
}

fn as_json(iam: &Iam) -> Map<String, Value> {
    match iam.to_string(Format::Json).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn section(m: &Map<String, Value>, name: &str) -> Map<String, Value> {
    match m.get(name) {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    }
}

/// `(id, status)` of a user's access keys.
fn keys(user: &Value) -> Vec<(String, String)> {
    user.get("access_keys")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|k| {
                    let id = k.get("id")?.as_str()?.to_owned();
                    let status = k.get("status").and_then(Value::as_str).unwrap_or("active").to_owned();
                    Some((id, status))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A user without its access keys (whose secrets must not be compared into a record).
fn without_keys(user: &Value) -> Value {
    let mut u = user.clone();
    if let Value::Object(o) = &mut u {
        o.remove("access_keys");
    }
    u
}

fn diff_named(
    out: &mut Vec<Change>,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    kind: &str,
    (created, changed, deleted): (&'static str, &'static str, &'static str),
    strip: fn(&Value) -> Value,
) {
    for (name, v) in new {
        match old.get(name) {
            None => out.push(Change { event: created, target: format!("{kind}/{name}") }),
            Some(o) if strip(o) != strip(v) => out.push(Change { event: changed, target: format!("{kind}/{name}") }),
            Some(_) => {}
        }
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            out.push(Change { event: deleted, target: format!("{kind}/{name}") });
        }
    }
}

/// The changes from `old` to `new`.
pub(crate) fn changes(old: &Iam, new: &Iam) -> Vec<Change> {
    let (a, b) = (as_json(old), as_json(new));
    let mut out = Vec::new();
    let (ua, ub) = (section(&a, "users"), section(&b, "users"));
    diff_named(&mut out, &ua, &ub, "user", ("CreateUser", "UpdateUser", "DeleteUser"), without_keys);
    for (name, user) in &ub {
        let before = ua.get(name).map(keys).unwrap_or_default();
        for (id, status) in keys(user) {
            match before.iter().find(|(i, _)| *i == id) {
                None => out.push(Change { event: "CreateAccessKey", target: format!("user/{name}/{id}") }),
                Some((_, s)) if *s != status => {
                    out.push(Change { event: "UpdateAccessKey", target: format!("user/{name}/{id}:{status}") })
                }
                Some(_) => {}
            }
        }
        let after = keys(user);
        for (id, _) in before {
            if !after.iter().any(|(i, _)| *i == id) {
                out.push(Change { event: "DeleteAccessKey", target: format!("user/{name}/{id}") });
            }
        }
    }
    let same = |v: &Value| v.clone();
    diff_named(
        &mut out,
        &section(&a, "groups"),
        &section(&b, "groups"),
        "group",
        ("CreateGroup", "UpdateGroup", "DeleteGroup"),
        same,
    );
    diff_named(
        &mut out,
        &section(&a, "roles"),
        &section(&b, "roles"),
        "role",
        ("CreateRole", "UpdateRole", "DeleteRole"),
        same,
    );
    diff_named(
        &mut out,
        &section(&a, "policies"),
        &section(&b, "policies"),
        "policy",
        ("CreatePolicy", "PutPolicy", "DeletePolicy"),
        same,
    );
    out
}
