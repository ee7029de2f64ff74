//! Policy documents as RAM and IAM write them: parsing and validation with errors that name
//! the statement and the field.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::cond::{Condition, Op};

/// Largest policy document accepted.
pub const MAX_POLICY_BYTES: usize = 128 * 1024;
/// Most statements in one document.
pub const MAX_STATEMENTS: usize = 256;

/// Allow or Deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Effect {
    /// Grants.
    Allow,
    /// Refuses, whatever else allows.
    Deny,
}

/// Who a trust policy names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PrincipalSpec {
    /// `"*"`: anyone.
    Any,
    /// ARNs, account ids or `*` patterns (RAM and AWS forms).
    Accounts(Vec<String>),
    /// `{"Service": ...}`: cloud services (never an envseal principal).
    Service,
}

/// One statement.
#[derive(Clone, Debug)]
pub(crate) struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    /// Patterns, and whether they came as `NotAction`.
    pub actions: (Vec<String>, bool),
    /// Patterns and `NotResource`; `None` when absent (trust policies).
    pub resources: Option<(Vec<String>, bool)>,
    pub principal: Option<PrincipalSpec>,
    pub conditions: Vec<Condition>,
}

/// A parsed, validated policy document.
#[derive(Clone, Debug)]
pub struct Policy {
    pub(crate) statements: Vec<Statement>,
    source: Value,
}

/// Why a policy document is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}{message}")]
pub struct PolicyError {
    location: String,
    message: String,
}

impl PolicyError {
    fn at(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self { location: location.into(), message: message.into() }
    }
}

const STATEMENT_FIELDS: &[&str] =
    &["Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition", "Principal", "NotPrincipal"];

fn strings(v: &Value, loc: &str, field: &str) -> Result<Vec<String>, PolicyError> {
    let bad = || PolicyError::at(loc, format!("{field}: expected a string or a list of strings"));
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if !a.is_empty() => {
            a.iter().map(|x| x.as_str().map(str::to_owned).ok_or_else(bad)).collect::<Result<_, _>>()?
        }
        Value::Array(_) => return Err(PolicyError::at(loc, format!("{field}: the list is empty"))),
        _ => return Err(bad()),
    };
    Ok(list)
}

fn check_action(a: &str, loc: &str) -> Result<(), PolicyError> {
    if a == "*" {
        return Ok(());
    }
    match a.split_once(':') {
        Some((svc, name))
            if !svc.is_empty()
                && !name.is_empty()
                && svc.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?') =>
        {
            Ok(())
        }
        _ => Err(PolicyError::at(
            loc,
            format!("Action: {a:?} is not `*` or `service:Action` (e.g. kms:Decrypt, kms:Generate*)"),
        )),
    }
}

fn check_resource(r: &str, loc: &str) -> Result<(), PolicyError> {
    if r == "*" {
        return Ok(());
    }
    let fields = r.split(':').count();
    let ok = if r.starts_with("acs:") {
        // acs:SERVICE:REGION:ACCOUNT:RELATIVE-ID
        fields >= 5 && !r.split(':').nth(1).unwrap_or("").is_empty()
    } else if r.starts_with("arn:") {
        // arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE
        fields >= 6 && !r.split(':').nth(2).unwrap_or("").is_empty()
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(PolicyError::at(
            loc,
            format!(
                "Resource: {r:?} is not a valid ARN (acs:SERVICE:REGION:ACCOUNT:RESOURCE or arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE, or *)"
            ),
        ))
    }
}

fn principal(v: &Value, loc: &str) -> Result<PrincipalSpec, PolicyError> {
    match v {
        Value::String(s) if s == "*" => Ok(PrincipalSpec::Any),
        Value::Object(m) => {
            let mut out = Vec::new();
            let mut service = false;
            for (k, v) in m {
                match k.as_str() {
                    "RAM" | "AWS" => out.extend(strings(v, loc, &format!("Principal.{k}"))?),
                    "Service" | "Federated" => {
                        strings(v, loc, &format!("Principal.{k}"))?;
                        service = true;
                    }
                    other => {
                        return Err(PolicyError::at(
                            loc,
                            format!("Principal: unknown kind {other:?} (expected RAM, AWS or Service)"),
                        ));
                    }
                }
            }
            if out.is_empty() && service { Ok(PrincipalSpec::Service) } else { Ok(PrincipalSpec::Accounts(out)) }
        }
        _ => Err(PolicyError::at(
            loc,
            "Principal: expected \"*\" or an object such as {\"RAM\": [\"acs:ram::ACCOUNT:root\"]}",
        )),
    }
}

fn statement(v: &Value, i: usize) -> Result<Statement, PolicyError> {
    let Value::Object(m) = v else {
        return Err(PolicyError::at(format!("Statement[{i}]: "), "expected an object"));
    };
    let sid = m.get("Sid").and_then(Value::as_str).map(str::to_owned);
    let loc = match &sid {
        Some(s) => format!("Statement[{i}] (sid {s:?}): "),
        None => format!("Statement[{i}]: "),
    };
    for k in m.keys() {
        if !STATEMENT_FIELDS.contains(&k.as_str()) {
            let hint = STATEMENT_FIELDS
                .iter()
                .find(|f| f.eq_ignore_ascii_case(k))
                .map(|f| format!(" (did you mean `{f}`?)"))
                .unwrap_or_default();
            return Err(PolicyError::at(&loc, format!("unknown field {k:?}{hint}")));
        }
    }
    if m.contains_key("NotPrincipal") {
        return Err(PolicyError::at(&loc, "NotPrincipal is not supported"));
    }
    let effect = match m.get("Effect") {
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(e) => {
            return Err(PolicyError::at(&loc, format!("Effect: unknown effect {e} (expected \"Allow\" or \"Deny\")")));
        }
        None => return Err(PolicyError::at(&loc, "Effect is missing")),
    };
    let actions = match (m.get("Action"), m.get("NotAction")) {
        (Some(a), None) => (strings(a, &loc, "Action")?, false),
        (None, Some(a)) => (strings(a, &loc, "NotAction")?, true),
        (Some(_), Some(_)) => return Err(PolicyError::at(&loc, "Action and NotAction are exclusive")),
        (None, None) => return Err(PolicyError::at(&loc, "Action (or NotAction) is missing")),
    };
    for a in &actions.0 {
        check_action(a, &loc)?;
    }
    let resources = match (m.get("Resource"), m.get("NotResource")) {
        (Some(r), None) => Some((strings(r, &loc, "Resource")?, false)),
        (None, Some(r)) => Some((strings(r, &loc, "NotResource")?, true)),
        (Some(_), Some(_)) => return Err(PolicyError::at(&loc, "Resource and NotResource are exclusive")),
        (None, None) => None,
    };
    if let Some((rs, _)) = &resources {
        for r in rs {
            check_resource(r, &loc)?;
        }
    }
    let principal = m.get("Principal").map(|p| principal(p, &loc)).transpose()?;
    if resources.is_none() && principal.is_none() {
        return Err(PolicyError::at(&loc, "Resource (or NotResource) is missing"));
    }
    let mut conditions = Vec::new();
    if let Some(c) = m.get("Condition") {
        let Value::Object(ops) = c else {
            return Err(PolicyError::at(&loc, "Condition: expected an object {\"Operator\": {\"key\": value}}"));
        };
        for (op, keys) in ops {
            let parsed = Op::parse(op).map_err(|e| PolicyError::at(&loc, format!("Condition: {e}")))?;
            let Value::Object(keys) = keys else {
                return Err(PolicyError::at(&loc, format!("Condition.{op}: expected an object {{\"key\": value}}")));
            };
            for (key, values) in keys {
                let values = match values {
                    Value::Array(a) => a.clone(),
                    v => vec![v.clone()],
                };
                let mut vs = Vec::new();
                for v in values {
                    match v {
                        Value::String(s) => vs.push(s),
                        Value::Bool(b) => vs.push(b.to_string()),
                        Value::Number(n) => vs.push(n.to_string()),
                        _ => {
                            return Err(PolicyError::at(
                                &loc,
                                format!("Condition.{op}.{key}: values must be strings, numbers or booleans"),
                            ));
                        }
                    }
                }
                let c = Condition::new(parsed.clone(), key, vs)
                    .map_err(|e| PolicyError::at(&loc, format!("Condition.{op}.{key}: {e}")))?;
                conditions.push(c);
            }
        }
    }
    Ok(Statement { sid, effect, actions, resources, principal, conditions })
}

impl Policy {
    /// Parses and validates a JSON policy document.
    ///
    /// # Errors
    /// [`PolicyError`] naming the statement and field.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::at("", format!("the document is larger than {MAX_POLICY_BYTES} bytes")));
        }
        let v: Value = serde_json::from_str(text).map_err(|e| PolicyError::at("", format!("not JSON: {e}")))?;
        Self::from_value(v)
    }

    /// Validates a document already parsed as JSON.
    ///
    /// # Errors
    /// [`PolicyError`].
    pub fn from_value(v: Value) -> Result<Policy, PolicyError> {
        let Value::Object(m) = &v else { return Err(PolicyError::at("", "a policy document is a JSON object")) };
        for k in m.keys() {
            if !["Version", "Statement", "Id"].contains(&k.as_str()) {
                let hint = ["Version", "Statement", "Id"]
                    .iter()
                    .find(|f| f.eq_ignore_ascii_case(k))
                    .map(|f| format!(" (did you mean `{f}`?)"))
                    .unwrap_or_default();
                return Err(PolicyError::at("", format!("unknown field {k:?}{hint}")));
            }
        }
        match m.get("Version").and_then(Value::as_str) {
            Some("1" | "2012-10-17" | "2008-10-17") => {}
            Some(v) => {
                return Err(PolicyError::at(
                    "",
                    format!("Version: unsupported version {v:?} (expected \"1\" or \"2012-10-17\")"),
                ));
            }
            None => return Err(PolicyError::at("", "Version is missing (\"1\" for RAM, \"2012-10-17\" for IAM)")),
        }
        let list = match m.get("Statement") {
            Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
            Some(o @ Value::Object(_)) => vec![o],
            Some(_) => return Err(PolicyError::at("", "Statement: expected an object or a list of objects")),
            None => return Err(PolicyError::at("", "Statement is missing")),
        };
        if list.len() > MAX_STATEMENTS {
            return Err(PolicyError::at("", format!("more than {MAX_STATEMENTS} statements")));
        }
        let statements = list.iter().enumerate().map(|(i, s)| statement(s, i)).collect::<Result<_, _>>()?;
        Ok(Policy { statements, source: v })
    }

    /// The document as JSON.
    pub fn to_value(&self) -> &Value {
        &self.source
    }

    /// Number of statements.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether the document has no statement (never, once validated).
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(&self.source).unwrap_or_default())
    }
}

impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Policy {
    /// A document as an object, or as a string of JSON.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::String(s) => Policy::parse(&s).map_err(serde::de::Error::custom),
            v => Policy::from_value(v).map_err(serde::de::Error::custom),
        }
    }
}

#[allow(dead_code)]
fn _map(_: Map<String, Value>) {}
