//! `alibaba-kms:REGION/KEY` URIs and the key references Alibaba Cloud KMS accepts.
//!
//! | URI | names |
//! | --- | --- |
//! | `alibaba-kms:cn-hangzhou/key-hzz62f1cb66fa42qo****` | a key by id (`key-...` or a UUID) |
//! | `alibaba-kms:cn-hangzhou/alias/app` | an alias |
//! | `alibaba-kms:cn-hangzhou/acs:kms:cn-hangzhou:123456:key/ID` | a key (or `.../alias/NAME`) by ARN, for cross-account use |
//!
//! The parser is strict (parse, don't validate): a reference KMS would refuse is refused here,
//! before any request, naming the rule it breaks.

use std::fmt;
use std::str::FromStr;

use envseal_core::KmsError;

/// The URI scheme, and the backend name recorded in wrapped keys.
pub const SCHEME: &str = "alibaba-kms";

/// Longest key reference accepted (ids are ~40 characters, ARNs ~100).
pub const MAX_KEY_REF_LEN: usize = 512;
/// Longest alias name, `alias/` included (KMS's limit).
pub const MAX_ALIAS_LEN: usize = 255;

/// A parsed `alibaba-kms:REGION/KEY` URI.
///
/// ```
/// use envseal_kms_alibaba::AlibabaKeyUri;
///
/// let uri: AlibabaKeyUri = "alibaba-kms:cn-hangzhou/alias/app".parse().unwrap();
/// assert_eq!((uri.region(), uri.key()), ("cn-hangzhou", "alias/app"));
/// assert_eq!(uri.to_string(), "alibaba-kms:cn-hangzhou/alias/app");
/// assert!(AlibabaKeyUri::parse("alibaba-kms:alias/app").is_err()); // no region
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AlibabaKeyUri {
    region: String,
    key: String,
}

impl AlibabaKeyUri {
    /// Parses `alibaba-kms:REGION/KEY_ID_OR_ALIAS_OR_ARN`.
    ///
    /// # Errors
    /// [`KmsError::InvalidRequest`] naming the rule the URI breaks.
    pub fn parse(uri: &str) -> Result<Self, KmsError> {
        let rest = uri.strip_prefix(SCHEME).and_then(|r| r.strip_prefix(':')).ok_or_else(|| {
            invalid(format!("not an Alibaba Cloud KMS URI: expected {SCHEME}:REGION/KEY_ID_OR_ALIAS"))
        })?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let Some((region, key)) = rest.split_once('/') else {
            return Err(invalid(format!(
                "Alibaba Cloud KMS URI {:?} needs a region and a key: {SCHEME}:REGION/KEY_ID_OR_ALIAS",
                shorten(uri)
            )));
        };
        check_region(region)?;
        check_key_ref(key)?;
        if let Some(arn_region) = arn_region(key)
            && arn_region != region
        {
            return Err(invalid(format!("the key ARN names region {arn_region} but the URI names region {region}")));
        }
        Ok(Self { region: region.to_owned(), key: key.to_owned() })
    }

    /// The region id, e.g. `cn-hangzhou`.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The key reference as KMS's `KeyId` parameter takes it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// True for `alias/NAME` and alias ARNs.
    pub fn is_alias(&self) -> bool {
        is_alias_ref(&self.key)
    }
}

impl FromStr for AlibabaKeyUri {
    type Err = KmsError;

    fn from_str(s: &str) -> Result<Self, KmsError> {
        Self::parse(s)
    }
}

impl fmt::Display for AlibabaKeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}:{}/{}", self.region, self.key)
    }
}

/// Whether `s` is a plausible region id (`cn-hangzhou`, `ap-southeast-1`, `eu-central-1`):
/// lower-case letters, digits and `-`, 3 to 64 characters, starting with a letter, with at
/// least one `-` (every Alibaba Cloud region id has one; it keeps `alibaba-kms:alias/app`, a
/// URI without a region, from reading as region `alias`).
pub fn is_valid_region(s: &str) -> bool {
    (3..=64).contains(&s.len())
        && s.contains('-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(crate) fn check_region(region: &str) -> Result<(), KmsError> {
    if is_valid_region(region) {
        Ok(())
    } else {
        Err(invalid(format!("{:?} is not a valid Alibaba Cloud region id (e.g. cn-hangzhou)", shorten(region))))
    }
}

/// Checks a key reference: a key id, `alias/NAME`, or an `acs:kms:REGION:ACCOUNT:key/ID` /
/// `.../alias/NAME` ARN. A URI (`alibaba-kms:REGION/KEY`) is not a reference: strip it first.
pub(crate) fn check_key_ref(key: &str) -> Result<(), KmsError> {
    if key.is_empty() {
        return Err(invalid("empty Alibaba Cloud KMS key reference"));
    }
    if key.len() > MAX_KEY_REF_LEN {
        return Err(invalid(format!("Alibaba Cloud KMS key reference longer than {MAX_KEY_REF_LEN} bytes")));
    }
    if key.starts_with("alias/") {
        return check_alias_name(key);
    }
    if let Some(rest) = key.strip_prefix("acs:kms:") {
        let parts: Vec<&str> = rest.splitn(3, ':').collect();
        let ok = match parts.as_slice() {
            [region, account, resource] => {
                is_valid_region(region)
                    && !account.is_empty()
                    && account.bytes().all(|b| b.is_ascii_digit())
                    && (resource.strip_prefix("key/").is_some_and(is_key_id)
                        || (resource.starts_with("alias/") && check_alias_name(resource).is_ok()))
            }
            _ => false,
        };
        return if ok {
            Ok(())
        } else {
            Err(invalid(format!(
                "{:?} is not a valid KMS ARN (acs:kms:REGION:ACCOUNT:key/ID or .../alias/NAME)",
                shorten(key)
            )))
        };
    }
    if is_key_id(key) {
        Ok(())
    } else {
        Err(invalid(format!("{:?} is not a valid Alibaba Cloud KMS key id, alias/NAME or ARN", shorten(key))))
    }
}

/// A key id: letters, digits, `-` and `_` (`key-hzz62f1cb66fa42qo****` masked ids in the
/// documentation aside), 1 to 128 characters.
fn is_key_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks an alias name: `alias/` then 1 or more of `A-Z a-z 0-9 _ - / :`, at most
/// [`MAX_ALIAS_LEN`] bytes in all, not starting with the reserved `alias/acs`.
pub(crate) fn check_alias_name(alias: &str) -> Result<(), KmsError> {
    let Some(name) = alias.strip_prefix("alias/") else {
        return Err(invalid(format!("alias {:?} must start with alias/", shorten(alias))));
    };
    if name.is_empty() || alias.len() > MAX_ALIAS_LEN {
        return Err(invalid(format!("alias names are alias/ plus 1 to {} characters", MAX_ALIAS_LEN - 6)));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-/:".contains(&b)) {
        return Err(invalid(format!(
            "alias {:?} may only contain letters, digits, _, -, / and : after alias/",
            shorten(alias)
        )));
    }
    if name.starts_with("acs") {
        return Err(invalid("alias names starting with alias/acs are reserved by Alibaba Cloud"));
    }
    Ok(())
}

pub(crate) fn is_alias_ref(key: &str) -> bool {
    key.starts_with("alias/") || (key.starts_with("acs:kms:") && key.contains(":alias/"))
}

/// The region named by an ARN reference.
pub(crate) fn arn_region(key: &str) -> Option<&str> {
    key.strip_prefix("acs:kms:").and_then(|r| r.split(':').next())
}

fn invalid(message: impl Into<String>) -> KmsError {
    KmsError::InvalidRequest { message: message.into() }
}

/// At most 64 characters of an input, for messages.
pub(crate) fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_forms() {
        let u = AlibabaKeyUri::parse("alibaba-kms:cn-hangzhou/key-hzz62f1cb66fa42qo1234").unwrap();
        assert_eq!((u.region(), u.key(), u.is_alias()), ("cn-hangzhou", "key-hzz62f1cb66fa42qo1234", false));
        let u = AlibabaKeyUri::parse("alibaba-kms:ap-southeast-1/1234abcd-12ab-34cd-56ef-12345678abcd").unwrap();
        assert_eq!(u.key(), "1234abcd-12ab-34cd-56ef-12345678abcd");
        let u = AlibabaKeyUri::parse("alibaba-kms:cn-shanghai/alias/team/app:prod").unwrap();
        assert_eq!((u.key(), u.is_alias()), ("alias/team/app:prod", true));
        let arn = "acs:kms:cn-hangzhou:1234567890123456:key/key-abc";
        let u = AlibabaKeyUri::parse(&format!("alibaba-kms:cn-hangzhou/{arn}")).unwrap();
        assert_eq!(u.key(), arn);
        let u = AlibabaKeyUri::parse("alibaba-kms:cn-hangzhou/acs:kms:cn-hangzhou:1234567890123456:alias/app").unwrap();
        assert!(u.is_alias());
        // `//` after the scheme is tolerated.
        assert_eq!(AlibabaKeyUri::parse("alibaba-kms://eu-central-1/alias/a").unwrap().region(), "eu-central-1");
        assert_eq!(u.to_string().parse::<AlibabaKeyUri>().unwrap(), u);
    }

    #[test]
    fn uri_rejections() {
        for bad in [
            "",
            "alibaba-kms:",
            "alibaba-kms:cn-hangzhou",
            "alibaba-kms:cn-hangzhou/",
            "alibaba-kms:/alias/app",
            "alibaba-kms:alias/app",
            "alibaba-kms:CN-HANGZHOU/alias/app",
            "alibaba-kms:cn hangzhou/alias/app",
            "alibaba-kms:cn-hangzhou/alias/",
            "alibaba-kms:cn-hangzhou/alias/acs-x",
            "alibaba-kms:cn-hangzhou/alias/a b",
            "alibaba-kms:cn-hangzhou/key id",
            "alibaba-kms:cn-hangzhou/key?x=1",
            "alibaba-kms:cn-hangzhou/acs:kms:cn-shanghai:123:key/k",
            "alibaba-kms:cn-hangzhou/acs:kms:cn-hangzhou:abc:key/k",
            "alibaba-kms:cn-hangzhou/acs:kms:cn-hangzhou:123:secret/k",
            "aws-kms:alias/app",
            "alibaba-kms-cn-hangzhou/alias/app",
        ] {
            assert!(matches!(AlibabaKeyUri::parse(bad), Err(KmsError::InvalidRequest { .. })), "{bad:?} accepted");
        }
        let long = format!("alibaba-kms:cn-hangzhou/alias/{}", "a".repeat(300));
        assert!(AlibabaKeyUri::parse(&long).is_err());
    }

    #[test]
    fn regions() {
        for ok in ["cn-hangzhou", "ap-southeast-1", "eu-central-1", "us-west-1", "cn-hongkong"] {
            assert!(is_valid_region(ok), "{ok}");
        }
        for bad in ["", "c", "1cn", "cn-", "cn_hangzhou", "Cn-hangzhou", "cn.hangzhou", "alias", "cnhangzhou"] {
            assert!(!is_valid_region(bad), "{bad}");
        }
    }
}
