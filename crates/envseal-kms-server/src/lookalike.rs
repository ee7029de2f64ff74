//! Refusing parameters that look like ones the emulator reads but are not (issue 17): an SDK
//! that flattens a map into `EncryptionContext.KEY=VALUE`, a member spelt `encryptionContext`.
//! Such a parameter would otherwise be ignored, and a data key made with no context at all.
//! Names that look like nothing the emulator reads are ignored, as the services do.

use crate::error::Fault;

/// Whether `name` has the shape of `pattern`: the same `.`-separated segments, where a
/// pattern segment `N` stands for a 1-based index.
fn shaped(pattern: &str, name: &str) -> bool {
    let (mut p, mut n) = (pattern.split('.'), name.split('.'));
    loop {
        match (p.next(), n.next()) {
            (None, None) => return true,
            (Some("N"), Some(seg)) if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) && seg != "0" => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Checks every received name against `known` (patterns, see [`shaped`]).
///
/// # Errors
/// `InvalidParameter` naming the first name whose first segment is a known name's
/// (compared without case) but which is not itself known.
pub(crate) fn check<'a>(received: impl IntoIterator<Item = &'a str>, known: &[&str]) -> Result<(), Fault> {
    for name in received {
        if known.iter().any(|k| shaped(k, name)) {
            continue;
        }
        let head = name.split('.').next().unwrap_or(name);
        let Some(like) = known.iter().find(|k| k.split('.').next().is_some_and(|h| h.eq_ignore_ascii_case(head)))
        else {
            continue;
        };
        let like_head = like.split('.').next().unwrap_or(like);
        let message = if name.contains('.') && like_head.ends_with("EncryptionContext") {
            format!(
                "{like_head} must be one parameter holding a JSON object of strings (e.g. {like_head}={{\"app\":\"web\"}}); \
                 the flattened form {like_head}.KEY=VALUE is refused rather than ignored, which would bind no context"
            )
        } else {
            format!("the parameter {name:?} is not one this emulator reads (did you mean {like:?}?)")
        };
        return Err(Fault::invalid(message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["EncryptionContext", "KeyId", "Tag.N.Key", "ResourceId.N"];

    #[test]
    fn lookalikes_are_refused_and_strangers_ignored() {
        assert!(check(["KeyId", "Tag.1.Key", "ResourceId.12", "Other", "x.y"], KNOWN).is_ok());
        let e = check(["EncryptionContext.app"], KNOWN).unwrap_err();
        assert!(e.message.contains("flattened"), "{}", e.message);
        for bad in ["encryptionContext", "KEYID", "Tag.1.key", "Tag.0.Key", "ResourceId.x", "ResourceId"] {
            assert!(check([bad], KNOWN).is_err(), "{bad}");
        }
    }
}
