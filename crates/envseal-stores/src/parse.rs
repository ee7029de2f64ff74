//! Reading documents and key paths.

use envseal_core::values::KeyPath;

use crate::document::{Document, Format};
use crate::error::StoreError;
use crate::{dotenv, json, yaml};

/// Parses `content` as `format`.
///
/// # Errors
/// [`StoreError::Parse`]; binary is not a document.
pub fn parse(format: Format, content: &[u8]) -> Result<Box<dyn Document>, StoreError> {
    match format {
        Format::Json => Ok(Box::new(json::JsonDocument::parse(content)?)),
        Format::Yaml => Ok(Box::new(yaml::YamlDocument::parse(content)?)),
        Format::Dotenv => Ok(Box::new(dotenv::DotenvDocument::parse(content)?)),
        f => Err(StoreError::Parse { format: f.name(), message: "not a value-level format".into() }),
    }
}

/// Parses a user's key argument: `a.b[0].c`, or a JSON pointer `/a/b/0/c`.
///
/// # Errors
/// [`StoreError::InvalidPath`] for an empty path or segment.
pub fn parse_key_path(s: &str) -> Result<KeyPath, StoreError> {
    use envseal_core::values::PathSegment;
    let bad = || StoreError::InvalidPath(s.to_string());
    if s.is_empty() {
        return Err(bad());
    }
    if let Some(ptr) = s.strip_prefix('/') {
        // RFC 6901: "~1" is "/", "~0" is "~"; numeric segments address sequence items.
        let segs = ptr
            .split('/')
            .map(|seg| {
                let k = seg.replace("~1", "/").replace("~0", "~");
                match k.parse::<u64>() {
                    Ok(i) if !k.starts_with('+') && (k == "0" || !k.starts_with('0')) => PathSegment::Index(i),
                    _ => PathSegment::Key(k),
                }
            })
            .collect();
        return Ok(KeyPath(segs));
    }
    let mut segs = Vec::new();
    for part in s.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && rest.is_empty() {
            return Err(bad());
        }
        if !name.is_empty() {
            segs.push(PathSegment::Key(name.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(bad)?;
            segs.push(PathSegment::Index(r[..end].parse().map_err(|_| bad())?));
            rest = &r[end + 1..];
        }
        if !rest.is_empty() {
            return Err(bad());
        }
    }
    Ok(KeyPath(segs))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use envseal_core::values::PathSegment;

    #[test]
    fn key_paths() {
        assert_eq!(
            parse_key_path("db.hosts[1].name").unwrap(),
            KeyPath(vec![
                PathSegment::Key("db".into()),
                PathSegment::Key("hosts".into()),
                PathSegment::Index(1),
                PathSegment::Key("name".into())
            ])
        );
        assert_eq!(
            parse_key_path("/a~1b/0/c").unwrap(),
            KeyPath(vec![PathSegment::Key("a/b".into()), PathSegment::Index(0), PathSegment::Key("c".into())])
        );
        assert!(parse_key_path("").is_err());
        assert!(parse_key_path("a..b").is_err());
        assert!(parse_key_path("a[x]").is_err());
    }

    #[test]
    fn detection() {
        assert_eq!(Format::from_path(Path::new("x/.env")), Some(Format::Dotenv));
        assert_eq!(Format::from_path(Path::new(".env.production")), Some(Format::Dotenv));
        assert_eq!(Format::from_path(Path::new("prod.env")), Some(Format::Dotenv));
        assert_eq!(Format::from_path(Path::new("a.JSON")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.yml")), Some(Format::Yaml));
        assert_eq!(Format::detect(None, b" {\"a\": 1}"), Format::Json);
        assert_eq!(Format::detect(None, b"\x00\x01"), Format::Binary);
        assert_eq!(Format::detect(Some(Path::new("a.json")), &envseal_core::container::MAGIC), Format::Binary);
    }
}
