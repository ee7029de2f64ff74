//! `.envseal.toml`: found by walking up from a file's directory; path rules (glob → backend,
//! key, context, plain keys), first match wins, like `.sops.yaml`'s creation rules.
//!
//! ```toml
//! [[rule]]
//! path = "prod/**/*.env"        # glob, relative to the directory holding .envseal.toml
//! kms = ["local:"]              # one or more backend URIs
//! key = "alias/prod"
//! context = { env = "prod" }     # written when sealing, required when opening
//! plain_keys = "/PUBLIC_[^/]*"   # JSON pointers of the values left in clear (anchored)
//! allow = ["local:#alias/old"]   # more keys readers trust (a rule that names keys is strict)
//! discover = false               # true: readers try any key the file names
//! padding = 32                   # values padded to a multiple of this many bytes
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::exit;

/// The file name looked for.
pub const FILE_NAME: &str = ".envseal.toml";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default, rename = "rule")]
    rules: Vec<Rule>,
}

/// One path rule.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Glob matched against the file's path relative to the config file's directory.
    pub path: String,
    /// Backend URIs.
    #[serde(default)]
    pub kms: Vec<String>,
    /// Key id or alias.
    pub key: Option<String>,
    /// Encryption context.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// Plain-keys regular expression (whole JSON pointers).
    pub plain_keys: Option<String>,
    /// More keys readers trust (`URI#KEY`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Readers try any key the file names (discovery), even though the rule names keys.
    #[serde(default)]
    pub discover: bool,
    /// Value padding for sealing (bytes; default 32).
    pub padding: Option<u32>,
}

impl Rule {
    /// Whether the rule names keys: then readers of matching files are strict.
    pub fn names_keys(&self) -> bool {
        !self.kms.is_empty() || self.key.is_some() || !self.allow.is_empty()
    }
}

/// The rule that applies to a file, and where it came from.
#[derive(Debug, Clone)]
pub struct Matched {
    /// Index of the rule in the file (0-based).
    pub index: usize,
    /// The rule.
    pub rule: Rule,
    /// The path the glob was matched against.
    pub relative: PathBuf,
}

/// Finds the nearest `.envseal.toml` above `file` and the first rule matching it.
/// Returns `Ok(None)` when there is no config file or no rule matches.
pub fn lookup(file: &Path) -> Result<(Option<PathBuf>, Option<Matched>)> {
    if crate::fsio::is_std(file) {
        return Ok((None, None));
    }
    let abs = std::path::absolute(file).with_context(|| format!("cannot resolve {}", file.display()))?;
    let mut dir = abs.parent();
    while let Some(d) = dir {
        let candidate = d.join(FILE_NAME);
        if candidate.is_file() {
            let text =
                std::fs::read_to_string(&candidate).with_context(|| format!("cannot read {}", candidate.display()))?;
            let cfg: ConfigFile = toml::from_str(&text).map_err(|e| {
                exit::fail(
                    3,
                    format!("invalid {}: {}", candidate.display(), e.message()),
                    Some("see docs/CLI.md for the rule fields"),
                )
            })?;
            let relative = abs.strip_prefix(d).unwrap_or(&abs).to_path_buf();
            for (index, rule) in cfg.rules.iter().enumerate() {
                let glob = globset::GlobBuilder::new(&rule.path).literal_separator(true).build().map_err(|e| {
                    exit::fail(3, format!("invalid glob in {} rule {}: {e}", candidate.display(), index + 1), None)
                })?;
                if glob.compile_matcher().is_match(&relative) {
                    return Ok((Some(candidate.clone()), Some(Matched { index, rule: rule.clone(), relative })));
                }
            }
            return Ok((Some(candidate), None));
        }
        dir = d.parent();
    }
    Ok((None, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_config_first_matching_rule() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("prod/app")).unwrap();
        std::fs::write(
            d.path().join(FILE_NAME),
            "[[rule]]\npath = \"prod/**/*.env\"\nkey = \"alias/prod\"\ncontext = { env = \"prod\" }\n\n[[rule]]\npath = \"**\"\nkey = \"alias/dev\"\n",
        )
        .unwrap();
        let (_, m) = lookup(&d.path().join("prod/app/x.env")).unwrap();
        let m = m.unwrap();
        assert_eq!((m.index, m.rule.key.as_deref()), (0, Some("alias/prod")));
        assert_eq!(m.rule.context.get("env").map(String::as_str), Some("prod"));
        let (_, m) = lookup(&d.path().join("other.json")).unwrap();
        assert_eq!(m.unwrap().index, 1);
        std::fs::write(d.path().join(FILE_NAME), "[[rule]]\npath = 3\n").unwrap();
        assert!(lookup(&d.path().join("a")).is_err());
    }
}
