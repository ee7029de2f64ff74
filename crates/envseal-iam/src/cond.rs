//! Condition operators, wildcards and policy variables.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envseal_support::wildcard::{Pattern, Token};

use crate::context::RequestContext;

/// What a condition compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Bool,
    IpAddress,
    DateEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    Null,
}

/// Set qualifier for multi-valued keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Set {
    Single,
    ForAnyValue,
    ForAllValues,
}

/// A parsed operator: base comparison, negation, `IfExists`, set qualifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Op {
    pub base: Base,
    pub negated: bool,
    pub if_exists: bool,
    pub set: Set,
}

const OPERATORS: &[(&str, Base, bool)] = &[
    ("StringEquals", Base::StringEquals, false),
    ("StringNotEquals", Base::StringEquals, true),
    ("StringEqualsIgnoreCase", Base::StringEqualsIgnoreCase, false),
    ("StringNotEqualsIgnoreCase", Base::StringEqualsIgnoreCase, true),
    ("StringLike", Base::StringLike, false),
    ("StringNotLike", Base::StringLike, true),
    ("Bool", Base::Bool, false),
    ("IpAddress", Base::IpAddress, false),
    ("NotIpAddress", Base::IpAddress, true),
    ("DateEquals", Base::DateEquals, false),
    ("DateNotEquals", Base::DateEquals, true),
    ("DateLessThan", Base::DateLessThan, false),
    ("DateLessThanEquals", Base::DateLessThanEquals, false),
    ("DateGreaterThan", Base::DateGreaterThan, false),
    ("DateGreaterThanEquals", Base::DateGreaterThanEquals, false),
    ("NumericEquals", Base::NumericEquals, false),
    ("NumericNotEquals", Base::NumericEquals, true),
    ("NumericLessThan", Base::NumericLessThan, false),
    ("NumericLessThanEquals", Base::NumericLessThanEquals, false),
    ("NumericGreaterThan", Base::NumericGreaterThan, false),
    ("NumericGreaterThanEquals", Base::NumericGreaterThanEquals, false),
    ("Null", Base::Null, false),
];

impl Op {
    pub(crate) fn parse(s: &str) -> Result<Op, String> {
        let (set, rest) = if let Some(r) = s.strip_prefix("ForAnyValue:") {
            (Set::ForAnyValue, r)
        } else if let Some(r) = s.strip_prefix("ForAllValues:") {
            (Set::ForAllValues, r)
        } else {
            (Set::Single, s)
        };
        let (name, if_exists) = match rest.strip_suffix("IfExists") {
            Some(n) if n != "Null" => (n, true),
            _ => (rest, false),
        };
        let (_, base, negated) =
            OPERATORS.iter().find(|(n, _, _)| *n == name).ok_or_else(|| format!("unknown condition operator {s:?}"))?;
        Ok(Op { base: *base, negated: *negated, if_exists, set })
    }
}

/// One `operator: {key: values}` entry.
#[derive(Clone, Debug)]
pub(crate) struct Condition {
    pub op: Op,
    pub key: String,
    pub values: Vec<String>,
}

impl Condition {
    pub(crate) fn new(op: Op, key: &str, values: Vec<String>) -> Result<Self, String> {
        if key.is_empty() {
            return Err("empty condition key".into());
        }
        for v in &values {
            let ok = match op.base {
                Base::Bool | Base::Null => matches!(v.to_ascii_lowercase().as_str(), "true" | "false"),
                Base::IpAddress => parse_cidr(v).is_some(),
                Base::NumericEquals
                | Base::NumericLessThan
                | Base::NumericLessThanEquals
                | Base::NumericGreaterThan
                | Base::NumericGreaterThanEquals => v.parse::<f64>().is_ok(),
                Base::DateEquals
                | Base::DateLessThan
                | Base::DateLessThanEquals
                | Base::DateGreaterThan
                | Base::DateGreaterThanEquals => v.contains("${") || parse_date(v).is_some(),
                _ => true,
            };
            if !ok {
                return Err(format!("{v:?} is not a valid value for this operator"));
            }
        }
        Ok(Self { op, key: key.to_owned(), values })
    }

    /// Whether the condition holds for `ctx`.
    pub(crate) fn holds(&self, ctx: &RequestContext) -> bool {
        let present = ctx.lookup(&self.key);
        if self.op.base == Base::Null {
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return present.is_none() == want_absent;
        }
        let Some(actual) = present.filter(|v| !v.is_empty() || self.op.set == Set::ForAllValues) else {
            // A missing key: IfExists holds, ForAllValues holds (vacuously), a negated operator without a
            // set qualifier holds ("not equal to any of ..."); ForAnyValue and positive operators do not.
            return self.op.if_exists
                || self.op.set == Set::ForAllValues
                || (self.op.negated && self.op.set == Set::Single);
        };
        let values: Vec<Option<String>> = self.values.iter().map(|v| substitute(v, ctx, false)).collect();
        // Per request value: a positive operator needs one policy value to match, a negated operator
        // needs none to match. The set qualifier then says how many request values must pass (AWS:
        // `ForAnyValue:StringNotEquals` = at least one request value is outside the list).
        let one = |a: &str| values.iter().flatten().any(|p| compare(self.op.base, a, p)) != self.op.negated;
        match self.op.set {
            Set::ForAllValues => actual.iter().all(|a| one(a)),
            Set::ForAnyValue => actual.iter().any(|a| one(a)),
            // Without a qualifier a negated operator holds only when no request value matches.
            Set::Single if self.op.negated => actual.iter().all(|a| one(a)),
            Set::Single => actual.iter().any(|a| one(a)),
        }
    }
}

/// `${*}` and `${?}` after substitution: a literal `*` / `?` in a pattern.
pub(crate) const LITERAL_STAR: char = '\u{E000}';
/// See [`LITERAL_STAR`].
pub(crate) const LITERAL_QUESTION: char = '\u{E001}';

/// A substituted value with its literal stand-ins turned back into `*` and `?`.
fn literal(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([LITERAL_STAR, LITERAL_QUESTION]) {
        s.replace(LITERAL_STAR, "*").replace(LITERAL_QUESTION, "?").into()
    } else {
        s.into()
    }
}

fn compare(base: Base, actual: &str, pattern: &str) -> bool {
    let pattern_lit = literal(pattern);
    let pattern = if base == Base::StringLike { pattern } else { pattern_lit.as_ref() };
    match base {
        Base::StringEquals => actual == pattern,
        Base::StringEqualsIgnoreCase => actual.eq_ignore_ascii_case(pattern),
        Base::StringLike => wildcard(pattern, actual, false),
        Base::Bool => actual.eq_ignore_ascii_case(pattern),
        Base::IpAddress => match (actual.parse::<IpAddr>(), parse_cidr(pattern)) {
            (Ok(ip), Some((net, bits))) => in_cidr(ip, net, bits),
            _ => false,
        },
        Base::NumericEquals
        | Base::NumericLessThan
        | Base::NumericLessThanEquals
        | Base::NumericGreaterThan
        | Base::NumericGreaterThanEquals => match (actual.parse::<f64>(), pattern.parse::<f64>()) {
            (Ok(a), Ok(p)) => match base {
                Base::NumericEquals => a == p,
                Base::NumericLessThan => a < p,
                Base::NumericLessThanEquals => a <= p,
                Base::NumericGreaterThan => a > p,
                _ => a >= p,
            },
            _ => false,
        },
        Base::DateEquals
        | Base::DateLessThan
        | Base::DateLessThanEquals
        | Base::DateGreaterThan
        | Base::DateGreaterThanEquals => match (parse_date(actual), parse_date(pattern)) {
            (Some(a), Some(p)) => match base {
                Base::DateEquals => a == p,
                Base::DateLessThan => a < p,
                Base::DateLessThanEquals => a <= p,
                Base::DateGreaterThan => a > p,
                _ => a >= p,
            },
            _ => false,
        },
        Base::Null => false,
    }
}

/// RFC 3339 / ISO 8601 dates (a date alone is midnight UTC), or epoch seconds.
pub(crate) fn parse_date(s: &str) -> Option<SystemTime> {
    if let Ok(n) = s.parse::<u64>() {
        return UNIX_EPOCH.checked_add(Duration::from_secs(n));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Some(t);
    }
    if s.len() == 10 {
        return humantime::parse_rfc3339_weak(&format!("{s}T00:00:00Z")).ok();
    }
    None
}

/// `a.b.c.d/n`, `x::y/n`, or a plain address.
pub(crate) fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a.to_ipv4_mapped().is_some_and(|v4| in_cidr(IpAddr::V4(v4), net, bits)),
        _ => false,
    }
}

/// Whether `text` matches an IAM pattern: `*` (any run) and `?` (one character), with
/// [`LITERAL_STAR`] / [`LITERAL_QUESTION`] (what `${*}` / `${?}` became in [`substitute`])
/// matching only a literal `*` / `?`.
pub(crate) fn wildcard(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let syntax = |c| match c {
        LITERAL_STAR => Token::Char('*'),
        LITERAL_QUESTION => Token::Char('?'),
        c => Pattern::standard(c),
    };
    Pattern::with_syntax(pattern, ignore_case, syntax).matches(text)
}

/// Replaces `${key}` policy variables. `escape_wildcards`: a variable's value is literal in a
/// pattern. `None` when a variable cannot be resolved (the pattern then matches nothing).
pub(crate) fn substitute(s: &str, ctx: &RequestContext, escape_wildcards: bool) -> Option<String> {
    if !s.contains("${") {
        return Some(s.to_owned());
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}')?;
        let var = &after[..end];
        match var {
            // Literal characters, not wildcards (as in IAM): private-use stand-ins that only
            // `wildcard` and `literal` understand.
            "*" => out.push(LITERAL_STAR),
            "?" => out.push(LITERAL_QUESTION),
            "$" => out.push('$'),
            key => {
                let v = ctx.lookup(key)?;
                if v.len() != 1 {
                    return None;
                }
                let v = &v[0];
                if escape_wildcards && (v.contains('*') || v.contains('?')) {
                    return None;
                }
                out.push_str(v);
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}
