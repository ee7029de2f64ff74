//! `aws-kms:` key URIs and the key references AWS KMS accepts.
//!
//! Three forms (docs/backends/aws-kms.md §URI forms):
//!
//! | URI | what it names | region |
//! | --- | --- | --- |
//! | `aws-kms:arn:aws:kms:REGION:ACCOUNT:key/ID` | a key, by ARN | taken from the ARN |
//! | `aws-kms:arn:aws:kms:REGION:ACCOUNT:alias/NAME` | an alias, by ARN | taken from the ARN |
//! | `aws-kms:alias/NAME` | an alias in the client's region | the SDK's region chain |
//! | `aws-kms:KEY_ID` | a key id (UUID, or `mrk-` + 32 hex digits) | the SDK's region chain |
//!
//! The parser is strict (parse, don't validate): a reference that AWS would reject is refused
//! here, before any request, with an error naming the rule that failed.

use std::fmt;
use std::str::FromStr;

/// The URI scheme of this backend.
pub const SCHEME: &str = "aws-kms";

/// Longest reference accepted (AWS's `KeyId` parameter is at most 2048 characters).
const MAX_LEN: usize = 2048;
/// Longest alias name (`alias/...`) AWS accepts.
const MAX_ALIAS_LEN: usize = 256;

/// What an [`AwsKeyUri`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyRefKind {
    /// `arn:PARTITION:kms:REGION:ACCOUNT:key/ID`.
    KeyArn,
    /// `arn:PARTITION:kms:REGION:ACCOUNT:alias/NAME`.
    AliasArn,
    /// `alias/NAME`.
    AliasName,
    /// A bare key id.
    KeyId,
}

/// A parsed AWS KMS key reference (`aws-kms:` URI, or the same without the scheme).
///
/// ```
/// use envseal_kms_aws::{AwsKeyUri, KeyRefKind};
///
/// let uri: AwsKeyUri = "aws-kms:arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
///     .parse()
///     .unwrap();
/// assert_eq!(uri.kind(), KeyRefKind::KeyArn);
/// assert_eq!(uri.region(), Some("eu-west-1"));
/// assert_eq!(uri.key(), "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab");
///
/// let alias = AwsKeyUri::parse("aws-kms:alias/app").unwrap();
/// assert_eq!((alias.kind(), alias.region()), (KeyRefKind::AliasName, None));
/// assert_eq!(alias.to_string(), "aws-kms:alias/app");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AwsKeyUri {
    key: String,
    kind: KeyRefKind,
    /// Byte range of the region inside `key` (ARNs only).
    region: Option<(usize, usize)>,
}

/// Why a key URI or reference was refused. Messages name the rule, never more than the first
/// few characters of the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The URI does not start with `aws-kms:`.
    #[error("not an AWS KMS key URI: it must start with `aws-kms:`")]
    MissingScheme,
    /// Nothing after the scheme.
    #[error("empty AWS KMS key reference")]
    Empty,
    /// Longer than AWS accepts.
    #[error("AWS KMS key reference is longer than {MAX_LEN} characters")]
    TooLong,
    /// An ARN that is not a KMS key or alias ARN.
    #[error("malformed AWS KMS ARN: {0}")]
    MalformedArn(&'static str),
    /// An alias name AWS would refuse.
    #[error("malformed AWS KMS alias: {0}")]
    MalformedAlias(&'static str),
    /// Neither an ARN, an alias nor a key id.
    #[error("malformed AWS KMS key id {0:?}: expected a UUID, `mrk-` + 32 hex digits, `alias/NAME` or an ARN")]
    MalformedKeyId(String),
}

impl AwsKeyUri {
    /// Parses an `aws-kms:` URI.
    ///
    /// # Errors
    /// [`UriError::MissingScheme`] without the `aws-kms:` prefix; otherwise as
    /// [`AwsKeyUri::parse_key`].
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let rest = uri.strip_prefix(SCHEME).and_then(|r| r.strip_prefix(':')).ok_or(UriError::MissingScheme)?;
        Self::parse_reference(rest)
    }

    /// Parses a key reference with or without the `aws-kms:` scheme: what the
    /// [`Kms`](envseal_core::Kms) methods of [`AwsKms`](crate::AwsKms) accept as `key`.
    ///
    /// # Errors
    /// [`UriError`] naming the rule the reference breaks.
    pub fn parse_key(key: &str) -> Result<Self, UriError> {
        match key.strip_prefix(SCHEME).and_then(|r| r.strip_prefix(':')) {
            Some(rest) => Self::parse_reference(rest),
            None => Self::parse_reference(key),
        }
    }

    fn parse_reference(s: &str) -> Result<Self, UriError> {
        if s.is_empty() {
            return Err(UriError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(UriError::TooLong);
        }
        if s.starts_with("arn:") {
            return parse_arn(s);
        }
        if let Some(name) = s.strip_prefix("alias/") {
            check_alias_name(name, s.len())?;
            return Ok(Self { key: s.to_owned(), kind: KeyRefKind::AliasName, region: None });
        }
        if is_key_id(s) {
            return Ok(Self { key: s.to_owned(), kind: KeyRefKind::KeyId, region: None });
        }
        Err(UriError::MalformedKeyId(prefix(s)))
    }

    /// The reference as AWS's `KeyId` parameter takes it (the URI without the scheme).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What the reference names.
    pub fn kind(&self) -> KeyRefKind {
        self.kind
    }

    /// The region named by an ARN; `None` for alias names and key ids (the client's region
    /// applies).
    pub fn region(&self) -> Option<&str> {
        self.region.map(|(a, b)| &self.key[a..b])
    }

    /// True for `alias/NAME` and alias ARNs.
    pub fn is_alias(&self) -> bool {
        matches!(self.kind, KeyRefKind::AliasArn | KeyRefKind::AliasName)
    }
}

impl FromStr for AwsKeyUri {
    type Err = UriError;

    /// Same as [`AwsKeyUri::parse`]: the scheme is required.
    fn from_str(s: &str) -> Result<Self, UriError> {
        Self::parse(s)
    }
}

impl fmt::Display for AwsKeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}:{}", self.key)
    }
}

/// `arn:PARTITION:kms:REGION:ACCOUNT:key/ID` or `...:alias/NAME`.
fn parse_arn(s: &str) -> Result<AwsKeyUri, UriError> {
    let mut parts = s.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(UriError::MalformedArn("expected arn:PARTITION:kms:REGION:ACCOUNT:key/ID"));
    };
    if !partition.starts_with("aws") || !partition.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return Err(UriError::MalformedArn("the partition must be aws, aws-cn, aws-us-gov, ..."));
    }
    if service != "kms" {
        return Err(UriError::MalformedArn("the service must be kms"));
    }
    if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(UriError::MalformedArn("the region must be a region name such as us-east-1"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::MalformedArn("the account must be 12 digits"));
    }
    let kind = if let Some(id) = resource.strip_prefix("key/") {
        if !is_key_id(id) {
            return Err(UriError::MalformedArn("the key id must be a UUID or mrk- + 32 hex digits"));
        }
        KeyRefKind::KeyArn
    } else if let Some(name) = resource.strip_prefix("alias/") {
        check_alias_name(name, resource.len()).map_err(|_| UriError::MalformedArn("invalid alias name"))?;
        KeyRefKind::AliasArn
    } else {
        return Err(UriError::MalformedArn("the resource must be key/ID or alias/NAME"));
    };
    // "arn:" + partition + ":kms:" is where the region starts.
    let start = 4 + partition.len() + 5;
    Ok(AwsKeyUri { key: s.to_owned(), kind, region: Some((start, start + region.len())) })
}

/// AWS alias names: `alias/` followed by `[A-Za-z0-9/_-]+`, 256 characters in all.
fn check_alias_name(name: &str, full_len: usize) -> Result<(), UriError> {
    if name.is_empty() {
        return Err(UriError::MalformedAlias("empty name after alias/"));
    }
    if full_len > MAX_ALIAS_LEN {
        return Err(UriError::MalformedAlias("longer than 256 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-')) {
        return Err(UriError::MalformedAlias("only letters, digits, '/', '_' and '-' are allowed"));
    }
    Ok(())
}

/// A UUID (8-4-4-4-12 hex digits) or a multi-Region key id (`mrk-` + 32 hex digits).
fn is_key_id(s: &str) -> bool {
    if let Some(hex) = s.strip_prefix("mrk-") {
        return hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The first characters of `s`, for error messages (key references are not secret, but may
/// be long).
fn prefix(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn key_arn() {
        let s = format!("aws-kms:arn:aws:kms:us-west-2:111122223333:key/{ID}");
        let u = AwsKeyUri::parse(&s).unwrap();
        assert_eq!(u.kind(), KeyRefKind::KeyArn);
        assert_eq!(u.region(), Some("us-west-2"));
        assert_eq!(u.key(), &s["aws-kms:".len()..]);
        assert_eq!(u.to_string(), s);
        assert!(!u.is_alias());
        // Other partitions and multi-Region keys.
        let cn = AwsKeyUri::parse(&format!("aws-kms:arn:aws-cn:kms:cn-north-1:111122223333:key/{ID}")).unwrap();
        assert_eq!(cn.region(), Some("cn-north-1"));
        let mrk =
            AwsKeyUri::parse("aws-kms:arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab")
                .unwrap();
        assert_eq!((mrk.kind(), mrk.region()), (KeyRefKind::KeyArn, Some("eu-west-1")));
    }

    #[test]
    fn alias_forms() {
        let a = AwsKeyUri::parse("aws-kms:alias/app/prod_1-x").unwrap();
        assert_eq!((a.kind(), a.key(), a.region()), (KeyRefKind::AliasName, "alias/app/prod_1-x", None));
        assert!(a.is_alias());
        let arn = AwsKeyUri::parse("aws-kms:arn:aws:kms:ap-south-1:111122223333:alias/app").unwrap();
        assert_eq!((arn.kind(), arn.region()), (KeyRefKind::AliasArn, Some("ap-south-1")));
        assert!(arn.is_alias());
    }

    #[test]
    fn key_id() {
        let u = AwsKeyUri::parse(&format!("aws-kms:{ID}")).unwrap();
        assert_eq!((u.kind(), u.key(), u.region()), (KeyRefKind::KeyId, ID, None));
        assert_eq!(AwsKeyUri::parse(&format!("aws-kms:{}", ID.to_uppercase())).unwrap().kind(), KeyRefKind::KeyId);
        assert_eq!(AwsKeyUri::parse("aws-kms:mrk-1234abcd12ab34cd56ef1234567890ab").unwrap().kind(), KeyRefKind::KeyId);
    }

    #[test]
    fn scheme_is_required_by_parse_and_optional_for_parse_key() {
        assert_eq!(AwsKeyUri::parse(ID), Err(UriError::MissingScheme));
        assert_eq!(AwsKeyUri::parse("aws-kms"), Err(UriError::MissingScheme));
        assert_eq!(AwsKeyUri::parse("vault-transit:alias/x"), Err(UriError::MissingScheme));
        assert_eq!(AwsKeyUri::parse_key(ID).unwrap(), AwsKeyUri::parse(&format!("aws-kms:{ID}")).unwrap());
        assert_eq!(AwsKeyUri::parse_key("alias/a").unwrap().key(), "alias/a");
        assert_eq!(ID.parse::<AwsKeyUri>(), Err(UriError::MissingScheme));
    }

    #[test]
    fn rejects() {
        let bad = [
            ("aws-kms:", UriError::Empty),
            ("aws-kms:alias/", UriError::MalformedAlias("empty name after alias/")),
            ("aws-kms:alias/a b", UriError::MalformedAlias("only letters, digits, '/', '_' and '-' are allowed")),
            ("aws-kms:not-a-key", UriError::MalformedKeyId("not-a-key".into())),
            ("aws-kms:1234abcd-12ab-34cd-56ef-1234567890a", UriError::MalformedKeyId(ID[..35].to_owned())),
            ("aws-kms:mrk-123", UriError::MalformedKeyId("mrk-123".into())),
        ];
        for (s, e) in bad {
            assert_eq!(AwsKeyUri::parse(s), Err(e), "{s}");
        }
        let arns = [
            "arn:aws:kms:us-east-1:111122223333",
            "arn:aws:s3:us-east-1:111122223333:key/x",
            "arn:aws:kms::111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:1111:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:111122223333:key/nope",
            "arn:aws:kms:us-east-1:111122223333:secret/x",
            "arn:aws:kms:us-east-1:111122223333:alias/",
            "arn:gcp:kms:us-east-1:111122223333:alias/x",
            "arn:aws:kms:US-EAST-1:111122223333:alias/x",
        ];
        for s in arns {
            assert!(matches!(AwsKeyUri::parse_key(s), Err(UriError::MalformedArn(_))), "{s}");
        }
        let long = format!("alias/{}", "a".repeat(251));
        assert!(matches!(AwsKeyUri::parse_key(&long), Err(UriError::MalformedAlias(_))));
        assert_eq!(AwsKeyUri::parse_key(&"a".repeat(MAX_LEN + 1)), Err(UriError::TooLong));
        // Errors quote at most a short prefix of the input.
        let msg = AwsKeyUri::parse_key(&"z".repeat(500)).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
    }
}
