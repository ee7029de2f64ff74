//! `.sops.yaml` creation rules → `.envseal.toml` rules (`envseal import sops-config`).
//!
//! Each creation rule becomes a `[[rule]]`: `path_regex` → a `path` glob (a translation of the
//! common regular-expression forms; anything else is refused with the rule named), AWS KMS
//! ARNs and Vault Transit URIs → `kms` URIs, the KMS encryption context → `context`,
//! `unencrypted_suffix`/`unencrypted_regex` → `plain_keys`. What has no envseal equivalent is
//! reported: age and PGP recipients, Shamir key groups, `encrypted_*` rules (envseal then seals
//! every value, which is safer, not weaker).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::MasterKey;
use crate::MigrateError;

/// One translated rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// The glob.
    pub path: String,
    /// Backend URIs.
    pub kms: Vec<String>,
    /// Encryption context.
    pub context: BTreeMap<String, String>,
    /// Plain-keys regular expression.
    pub plain_keys: Option<String>,
    /// Remarks written as comments above the rule.
    pub notes: Vec<String>,
}

/// The translation.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// The rules, in `.sops.yaml` order (first match wins in both).
    pub rules: Vec<Rule>,
    /// What the user should know.
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SopsConfig {
    creation_rules: Vec<CreationRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreationRule {
    path_regex: Option<String>,
    filename_regex: Option<String>,
    age: Option<StrOrList>,
    kms: Option<StrOrList>,
    pgp: Option<StrOrList>,
    gcp_kms: Option<StrOrList>,
    azure_keyvault: Option<StrOrList>,
    hc_vault_transit_uri: Option<StrOrList>,
    key_groups: Vec<ConfigKeyGroup>,
    shamir_threshold: Option<u32>,
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<String>,
    encrypted_regex: Option<String>,
    unencrypted_comment_regex: Option<String>,
    encrypted_comment_regex: Option<String>,
    mac_only_encrypted: Option<bool>,
    aws_profile: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StrOrList {
    Str(String),
    List(Vec<String>),
}

impl StrOrList {
    fn items(&self) -> Vec<String> {
        match self {
            StrOrList::Str(s) => s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
            StrOrList::List(l) => l.iter().map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConfigKeyGroup {
    age: Vec<String>,
    pgp: Vec<String>,
    kms: Vec<KmsRef>,
    hc_vault: Vec<String>,
    gcp_kms: Vec<Value>,
    azure_keyvault: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KmsRef {
    arn: String,
    context: BTreeMap<String, String>,
}

/// Translates the text of a `.sops.yaml`.
///
/// # Errors
/// [`MigrateError::Malformed`] for YAML that does not parse; [`MigrateError::Unsupported`]
/// naming a rule that cannot be translated faithfully (Shamir key groups, an untranslatable
/// path regex).
pub fn translate(yaml: &[u8]) -> Result<Translation, MigrateError> {
    let doc = envseal_stores::parse(envseal_stores::Format::Yaml, yaml)
        .map_err(|e| MigrateError::Malformed(e.to_string()))?;
    let mut root = Value::Null;
    for e in doc.entries() {
        let v = match e.ty {
            envseal_core::values::ValueType::Str => Value::String(e.text),
            envseal_core::values::ValueType::Num => {
                e.text.parse::<u64>().map(Value::from).unwrap_or(Value::String(e.text))
            }
            envseal_core::values::ValueType::Bool => Value::Bool(e.text == "true"),
            envseal_core::values::ValueType::Null => Value::Null,
        };
        super::insert_json(&mut root, &e.path.0, v)?;
    }
    let cfg: SopsConfig =
        serde_json::from_value(root).map_err(|e| MigrateError::Malformed(format!(".sops.yaml: {e}")))?;
    let mut out = Translation::default();
    for (i, r) in cfg.creation_rules.iter().enumerate() {
        let n = i + 1;
        let path = match (&r.path_regex, &r.filename_regex) {
            (Some(p), _) | (None, Some(p)) => regex_to_glob(p).map_err(|why| {
                MigrateError::Unsupported(format!(
                    "creation rule #{n}: path_regex {p:?} ({why}); write its glob by hand"
                ))
            })?,
            (None, None) => "**".to_string(),
        };
        let mut rule = Rule { path, ..Rule::default() };
        let mut ages = r.age.as_ref().map(StrOrList::items).unwrap_or_default();
        let mut kms: Vec<(String, BTreeMap<String, String>)> = r
            .kms
            .as_ref()
            .map(StrOrList::items)
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a, BTreeMap::new()))
            .collect();
        let mut vaults = r.hc_vault_transit_uri.as_ref().map(StrOrList::items).unwrap_or_default();
        let mut pgp = r.pgp.as_ref().map(|p| p.items().len()).unwrap_or(0);
        let mut others = r.gcp_kms.as_ref().map(|p| p.items().len()).unwrap_or(0)
            + r.azure_keyvault.as_ref().map(|p| p.items().len()).unwrap_or(0);
        if r.key_groups.len() > 1 {
            return Err(MigrateError::Unsupported(format!(
                "creation rule #{n}: {} key groups (Shamir threshold {}): envseal has no threshold scheme; any one wrapped key opens an envseal file",
                r.key_groups.len(),
                r.shamir_threshold.unwrap_or(r.key_groups.len() as u32)
            )));
        }
        for g in &r.key_groups {
            ages.extend(g.age.iter().cloned());
            kms.extend(g.kms.iter().map(|k| (k.arn.clone(), k.context.clone())));
            vaults.extend(g.hc_vault.iter().cloned());
            pgp += g.pgp.len();
            others += g.gcp_kms.len() + g.azure_keyvault.len();
        }
        for (arn, _) in &kms {
            rule.kms.push(format!("aws-kms:{arn}"));
        }
        for v in &vaults {
            rule.kms.push(vault_uri_to_envseal(v).ok_or_else(|| {
                MigrateError::Unsupported(format!(
                    "creation rule #{n}: hc_vault_transit_uri {v:?} is not ADDRESS/v1/MOUNT/keys/NAME"
                ))
            })?);
        }
        let contexts: Vec<&BTreeMap<String, String>> = kms.iter().map(|(_, c)| c).filter(|c| !c.is_empty()).collect();
        if let Some(first) = contexts.first() {
            if contexts.iter().all(|c| c == first) {
                rule.context = (*first).clone();
            } else {
                out.warnings.push(format!("creation rule #{n}: its KMS keys use different encryption contexts; envseal uses one per file, none was set"));
            }
        }
        if !ages.is_empty() {
            rule.notes.push(format!("sops age recipients, no envseal equivalent: {}", ages.join(", ")));
            out.warnings.push(format!("creation rule #{n}: {} age recipient(s) have no envseal backend", ages.len()));
        }
        if pgp > 0 {
            rule.notes.push(format!("{pgp} sops PGP key(s) left out (PGP is not supported)"));
            out.warnings.push(format!("creation rule #{n}: PGP keys are not supported"));
        }
        if others > 0 {
            rule.notes.push(format!("{others} GCP KMS / Azure Key Vault key(s) left out (no envseal backend)"));
            out.warnings.push(format!("creation rule #{n}: GCP KMS and Azure Key Vault have no envseal backend"));
        }
        if rule.kms.is_empty() {
            rule.notes.push("no sops key maps to an envseal backend: files fall back to the default (local:)".into());
        }
        // envseal matches the whole JSON pointer of a value (`/a/b/0`); sops matched each map key
        // of its path. A key ending with the suffix, anywhere in the path, leaves the value (and
        // all below it) in clear.
        let mut plain = Vec::new();
        if let Some(s) = r.unencrypted_suffix.as_deref().filter(|s| !s.is_empty()) {
            plain.push(format!("(?:/[^/]*)*/[^/]*{}(?:/.*)?", regex::escape(s)));
        }
        if let Some(re) = r.unencrypted_regex.as_deref().filter(|s| !s.is_empty()) {
            regex::Regex::new(re)
                .map_err(|e| MigrateError::Unsupported(format!("creation rule #{n}: unencrypted_regex: {e}")))?;
            plain.push(format!("(?:/[^/]*)*/[^/]*(?:{re})[^/]*(?:/.*)?"));
            rule.notes.push(
                "plain_keys: sops's unencrypted_regex is applied within one key of the path; anchors (^, $) in it now \
                 refer to the whole pointer: check the values `envseal encrypt` lists as left in clear"
                    .into(),
            );
        }
        rule.plain_keys = (!plain.is_empty()).then(|| plain.join("|"));
        if r.encrypted_suffix.is_some() || r.encrypted_regex.is_some() {
            rule.notes
                .push("sops encrypted only some values here (encrypted_suffix/regex); envseal seals them all".into());
            out.warnings
                .push(format!("creation rule #{n}: encrypted_suffix/encrypted_regex: envseal seals every value"));
        }
        if r.unencrypted_comment_regex.is_some() || r.encrypted_comment_regex.is_some() {
            rule.notes.push("comment regexes dropped: envseal leaves comments in clear".into());
            out.warnings.push(format!("creation rule #{n}: comment regexes have no envseal equivalent"));
        }
        if r.mac_only_encrypted == Some(true) {
            rule.notes.push("mac_only_encrypted dropped: envseal's MAC covers every value".into());
        }
        if r.aws_profile.is_some() {
            rule.notes.push("aws_profile: set AWS_PROFILE when running envseal".into());
        }
        out.rules.push(rule);
    }
    Ok(out)
}

/// `https://vault:8200/v1/transit/keys/app` → `vault-transit://vault:8200/transit/app`.
fn vault_uri_to_envseal(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let (host, path) = rest.split_once("/v1/")?;
    let (mount, key) = path.rsplit_once("/keys/")?;
    let mk = MasterKey::VaultTransit {
        address: format!("{scheme}://{host}"),
        mount: mount.to_string(),
        key: key.trim_end_matches('/').to_string(),
    };
    mk.envseal_uri()
}

/// Translates the regular-expression forms `.sops.yaml` files use into a `.envseal.toml` glob
/// (matched against the whole relative path, `*` within one path component, `**` across
/// directories): literals (with `\.` and other escapes), `.*`, `.+`, `.`, `[...]`, `(a|b)`,
/// and the anchors `^`/`$` (sops searches, so an unanchored start becomes `**/` and an
/// unanchored end `*`). A `.*` inside a path component becomes `*`, which does not cross `/`.
///
/// # Errors
/// A reason, for any other construct.
pub fn regex_to_glob(re: &str) -> Result<String, String> {
    let mut s = re;
    let start = s.starts_with('^');
    if start {
        s = &s[1..];
    }
    let end = s.ends_with('$') && !s.ends_with("\\$");
    if end {
        s = &s[..s.len() - 1];
    }
    let mut out = String::new();
    if !start {
        // sops searches: the match may begin anywhere, even inside a name.
        out.push_str("**/*");
    }
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut group_depth = 0;
    while i < c.len() {
        let ch = c[i];
        match ch {
            '\\' => {
                let n = *c.get(i + 1).ok_or("trailing backslash")?;
                if n.is_ascii_alphanumeric() {
                    return Err(format!("escape \\{n}"));
                }
                push_literal(&mut out, n);
                i += 2;
                continue;
            }
            '.' if matches!(c.get(i + 1), Some('*' | '+')) => {
                let at_component_start = out.is_empty() || out.ends_with('/');
                let next = c.get(i + 2);
                if c[i + 1] == '+' {
                    out.push_str("?*");
                } else if out == "**/*" && matches!(next, None | Some('/')) {
                    out = "**".into();
                } else if out.ends_with('*') {
                    // Already "anything" here.
                } else if at_component_start && matches!(next, None | Some('/')) {
                    // A whole component (or the rest): any directories.
                    out.push_str("**");
                } else if at_component_start {
                    // Any directories, then the start of a name.
                    if !out.ends_with("**/") {
                        out.push_str("**/");
                    }
                    out.push('*');
                } else {
                    out.push('*');
                }
                i += 2;
                continue;
            }
            '.' => out.push('?'),
            '[' => {
                let close = c[i..].iter().position(|x| *x == ']').ok_or("unterminated [")? + i;
                let class: String = c[i + 1..close].iter().collect();
                if class.contains('\\') {
                    return Err("escapes inside [...]".into());
                }
                out.push('[');
                out.push_str(&class.replacen('^', "!", usize::from(class.starts_with('^'))));
                out.push(']');
                i = close + 1;
                if matches!(c.get(i), Some('*' | '+' | '?' | '{')) {
                    return Err("a repeated character class".into());
                }
                continue;
            }
            '(' => {
                if c.get(i + 1) == Some(&'?') {
                    return Err("(?...) groups".into());
                }
                group_depth += 1;
                out.push('{');
            }
            '|' if group_depth > 0 => out.push(','),
            ')' if group_depth > 0 => {
                group_depth -= 1;
                out.push('}');
                if matches!(c.get(i + 1), Some('*' | '+' | '?' | '{')) {
                    return Err("a repeated group".into());
                }
            }
            '*' | '+' | '?' | '{' | '}' | '|' | ')' | '^' | '$' => return Err(format!("`{ch}` here")),
            ch => push_literal(&mut out, ch),
        }
        i += 1;
    }
    if group_depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    if !end {
        if out.ends_with('/') {
            out.push_str("**");
        } else if !out.ends_with('*') {
            out.push('*');
        }
    }
    Ok(out)
}

fn push_literal(out: &mut String, ch: char) {
    if matches!(ch, '*' | '?' | '[' | ']' | '{' | '}' | ',' | '!') {
        out.push('[');
        out.push(ch);
        out.push(']');
    } else {
        out.push(ch);
    }
}

impl Translation {
    /// The rules as `.envseal.toml` text (strings escaped as TOML basic strings).
    pub fn to_toml(&self, source_name: &str) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let mut t = format!("# Translated from {source_name} by `envseal import sops-config`: check each rule.\n");
        for r in &self.rules {
            t.push('\n');
            for n in &r.notes {
                t.push_str(&format!("# {n}\n"));
            }
            t.push_str("[[rule]]\n");
            t.push_str(&format!("path = {}\n", q(&r.path)));
            if !r.kms.is_empty() {
                let list: Vec<String> = r.kms.iter().map(|k| q(k)).collect();
                t.push_str(&format!("kms = [{}]\n", list.join(", ")));
            }
            if !r.context.is_empty() {
                let list: Vec<String> = r.context.iter().map(|(k, v)| format!("{} = {}", q(k), q(v))).collect();
                t.push_str(&format!("context = {{ {} }}\n", list.join(", ")));
            }
            if let Some(p) = &r.plain_keys {
                t.push_str(&format!("plain_keys = {}\n", q(p)));
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_to_globs() {
        assert_eq!(regex_to_glob(r"\.env$").unwrap(), "**/*.env");
        assert_eq!(regex_to_glob(r".*\.env$").unwrap(), "**/*.env");
        assert_eq!(regex_to_glob(r"^prod/.*\.yaml$").unwrap(), "prod/**/*.yaml");
        assert_eq!(regex_to_glob(r"secrets/.*").unwrap(), "**/*secrets/**");
        assert_eq!(regex_to_glob(r".*/secrets/.*").unwrap(), "**/secrets/**");
        assert_eq!(regex_to_glob(r"(dev|prod)/.*\.json$").unwrap(), "**/*{dev,prod}/**/*.json");
        assert_eq!(regex_to_glob(r".*").unwrap(), "**");
        assert_eq!(regex_to_glob(r"^app.*\.env$").unwrap(), "app*.env");
        assert_eq!(regex_to_glob(r"^a[0-9]\.env$").unwrap(), "a[0-9].env");
        assert!(regex_to_glob(r"\d+\.env").is_err());
        assert!(regex_to_glob(r"a+").is_err());
        assert!(regex_to_glob(r"(?i)x").is_err());
    }

    #[test]
    fn translates_rules() {
        let y = br#"creation_rules:
  - path_regex: prod/.*\.env$
    kms: arn:aws:kms:us-east-1:111122223333:key/abc, arn:aws:kms:us-east-1:111122223333:key/def
    hc_vault_transit_uri: http://127.0.0.1:8200/v1/transit/keys/app
    unencrypted_suffix: _unencrypted
  - path_regex: dev/.*
    age: age1qqq
    encrypted_regex: ^(data|stringData)$
  - key_groups:
      - kms:
          - arn: arn:aws:kms:us-east-1:111122223333:key/k
            context:
              app: web
"#;
        let t = translate(y).unwrap();
        assert_eq!(t.rules.len(), 3);
        assert_eq!(t.rules[0].path, "**/*prod/**/*.env");
        assert_eq!(
            t.rules[0].kms,
            vec![
                "aws-kms:arn:aws:kms:us-east-1:111122223333:key/abc",
                "aws-kms:arn:aws:kms:us-east-1:111122223333:key/def",
                "vault-transit+http://127.0.0.1:8200/transit/app"
            ]
        );
        assert_eq!(t.rules[0].plain_keys.as_deref(), Some(r"(?:/[^/]*)*/[^/]*_unencrypted(?:/.*)?"));
        assert!(t.rules[1].kms.is_empty() && t.rules[1].notes.iter().any(|n| n.contains("age1qqq")));
        assert_eq!(t.rules[2].context.get("app").map(String::as_str), Some("web"));
        let toml = t.to_toml(".sops.yaml");
        assert!(toml.contains("[[rule]]\npath = \"**/*prod/**/*.env\"\nkms = [\"aws-kms:"), "{toml}");
        assert!(toml.contains(r#"plain_keys = "(?:/[^/]*)*/[^/]*_unencrypted(?:/.*)?""#), "{toml}");
        assert_eq!(t.warnings.len(), 2);
    }

    #[test]
    fn shamir_groups_are_refused() {
        let y =
            b"creation_rules:\n  - shamir_threshold: 2\n    key_groups:\n      - age: [age1a]\n      - age: [age1b]\n";
        assert!(matches!(translate(y), Err(MigrateError::Unsupported(m)) if m.contains("Shamir")));
    }
}
