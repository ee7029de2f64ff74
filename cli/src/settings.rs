//! The settings that apply to one file: flags and `ENVSEAL_*` variables first, then the
//! `.envseal.toml` rule that matches it, then the defaults; and the keys they name for sealing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use envseal_core::{EncryptionContext, Kms};

use crate::backend;
use crate::config::{self, Matched};
use crate::exit;
use crate::opts::{KmsOpts, split_key};

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag or its environment variable.
    Flag,
    /// A `.envseal.toml` rule.
    Config,
    /// The built-in default.
    Default,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Flag => "flag/env",
            Source::Config => "config",
            Source::Default => "default",
        }
    }
}

/// Effective settings for one file.
#[derive(Debug)]
pub struct Settings {
    /// Backend URIs, and their source.
    pub kms: (Vec<String>, Source),
    /// Key, and its source.
    pub key: (String, Source),
    /// Context (flag entries override config entries).
    pub context: BTreeMap<String, String>,
    /// Plain-keys rule.
    pub plain_keys: Option<String>,
    /// The config file found, if any.
    pub config: Option<PathBuf>,
    /// The rule that matched, if any.
    pub rule: Option<Matched>,
}

/// Resolves settings for `path`: flags and env first, then the matching config rule, then
/// defaults.
pub fn settings(
    path: &Path,
    opts: &KmsOpts,
    context: &[(String, String)],
    plain_keys: Option<String>,
) -> Result<Settings> {
    let (config, rule) = config::lookup(path)?;
    let r = rule.as_ref().map(|m| &m.rule);
    let kms = if !opts.kms.is_empty() {
        (opts.kms.clone(), Source::Flag)
    } else if let Some(k) = r.filter(|r| !r.kms.is_empty()) {
        (k.kms.clone(), Source::Config)
    } else {
        (vec![backend::DEFAULT_URI.to_string()], Source::Default)
    };
    let key = match (&opts.key, r.and_then(|r| r.key.clone())) {
        (Some(k), _) => (k.clone(), Source::Flag),
        (None, Some(k)) => (k, Source::Config),
        (None, None) => (backend::DEFAULT_KEY.to_string(), Source::Default),
    };
    let mut ctx = r.map(|r| r.context.clone()).unwrap_or_default();
    for (k, v) in context {
        ctx.insert(k.clone(), v.clone());
    }
    let plain_keys = plain_keys.or_else(|| r.and_then(|r| r.plain_keys.clone()));
    Ok(Settings { kms, key, context: ctx, plain_keys, config, rule })
}

/// Builds an encryption context from pairs.
pub fn context(pairs: &BTreeMap<String, String>) -> Result<EncryptionContext> {
    EncryptionContext::from_pairs(pairs.iter().map(|(k, v)| (k.clone(), v.clone()))).map_err(|e| {
        exit::fail(
            exit::Exit::Usage,
            e.to_string(),
            Some("context keys must be non-empty and not start with `envseal:`"),
        )
    })
}

/// Opens the backends and keys of the settings (`URI#KEY`, else the key the URI names, else
/// --key / config / default), as `encrypt` does.
pub fn open_keys(s: &Settings) -> Result<Vec<(Arc<dyn Kms>, String)>> {
    let mut out = Vec::new();
    for u in &s.kms.0 {
        let (uri, key) = split_key(u);
        let o = backend::open_with_key(uri)?;
        let key = key.map(str::to_string).or(o.key.filter(|_| s.key.1 != Source::Flag)).unwrap_or(s.key.0.clone());
        out.push((o.kms, key));
    }
    Ok(out)
}
