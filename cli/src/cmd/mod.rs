//! One module per command, and what they share: settings resolution (flags, env, config,
//! defaults), backends for opening, format detection.

pub mod audit;
pub mod db;
pub mod decrypt;
pub mod edit;
pub mod encrypt;
pub mod esdk;
pub mod iam;
pub mod import;
pub mod init;
pub mod inspect;
pub mod keys;
pub mod kms;
pub mod rekey;
pub mod rewrap;
pub mod run;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use envseal_core::{EncryptionContext, Kms, WrappedKey};
use envseal_stores::{Document, Format};

use crate::backend::{self, Uri};
use crate::config::{self, Matched};
use crate::{FormatArg, KmsOpts, exit};

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
    fn name(self) -> &'static str {
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
    EncryptionContext::from_pairs(pairs.iter().map(|(k, v)| (k.clone(), v.clone())))
        .map_err(|e| exit::fail(2, e.to_string(), Some("context keys must be non-empty and not start with `envseal:`")))
}

/// The backends needed to open a file with these entries: those given with --kms, then those
/// already opened (`pre`: from a rule or --allow-key), plus, for each other backend an entry
/// names, that backend from its usual environment (the default local keystore,
/// `VAULT_ADDR`/`VAULT_TOKEN`, ...).
pub fn backends_for(entries: &[WrappedKey], opts: &KmsOpts, pre: &[Arc<dyn Kms>]) -> Result<Vec<Arc<dyn Kms>>> {
    let uris: Vec<Uri> = opts.kms.iter().map(|u| Uri::parse(encrypt::split_key(u).0)).collect::<Result<_>>()?;
    let mut out: Vec<Arc<dyn Kms>> = Vec::new();
    let mut have: Vec<&str> = Vec::new();
    for u in &uris {
        if entries.iter().any(|e| e.backend == u.backend_name()) && !have.contains(&u.backend_name()) {
            out.push(backend::open(u)?);
            have.push(u.backend_name());
        }
    }
    for k in pre {
        let name = backend_static(k.backend());
        if entries.iter().any(|e| e.backend == name) && !have.contains(&name) {
            out.push(k.clone());
            have.push(name);
        }
    }
    let mut last_err = None;
    for e in entries {
        if have.contains(&e.backend.as_str()) {
            continue;
        }
        // A backend that cannot be set up from the environment is skipped: another entry may
        // open the file; if none can, the error names each entry.
        match backend::open_by_name(&e.backend) {
            Ok(Some(k)) => {
                have.push(backend_static(&e.backend));
                out.push(k);
            }
            Ok(None) => {}
            Err(err) => last_err = Some(err),
        }
    }
    match (out.is_empty(), last_err) {
        (true, Some(err)) => Err(err),
        _ => Ok(out),
    }
}

fn backend_static(name: &str) -> &'static str {
    match name {
        "local" => "local",
        "vault-transit" => "vault-transit",
        "aws-kms" => "aws-kms",
        "pkcs11" => "pkcs11",
        "alibaba-kms" => "alibaba-kms",
        _ => "other",
    }
}

/// Resolves `--format auto` for a sealed or plain text file: binary containers by magic,
/// then the name, then JSON by content, else .env for text and binary otherwise.
pub fn detect(path: &Path, arg: FormatArg, content: &[u8]) -> Format {
    match arg {
        FormatArg::Dotenv => Format::Dotenv,
        FormatArg::Json => Format::Json,
        FormatArg::Yaml => Format::Yaml,
        FormatArg::Binary | FormatArg::Esdk => Format::Binary,
        FormatArg::Auto => {
            let p = (!crate::fsio::is_std(path)).then_some(path);
            let unnamed = p.and_then(Format::from_path).is_none();
            match Format::detect(p, content) {
                // A sealed YAML file, whatever its name: its metadata is a top-level `envseal:` map.
                Format::Binary if unnamed && looks_like_sealed_yaml(content) => Format::Yaml,
                Format::Binary if unnamed && looks_like_dotenv(content) => Format::Dotenv,
                f => f,
            }
        }
    }
}

/// Text with a line `envseal:` at column 0 (the metadata map of a sealed YAML file).
fn looks_like_sealed_yaml(content: &[u8]) -> bool {
    std::str::from_utf8(content).is_ok_and(|t| t.lines().any(|l| l.trim_end() == "envseal:"))
}

/// Text whose non-comment lines all look like `KEY=...` (used only when the name says
/// nothing).
fn looks_like_dotenv(content: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(content) else { return false };
    if text.is_empty() {
        return false;
    }
    envseal_stores::dotenv::DotenvDocument::parse(content).is_ok()
        && text.lines().any(|l| {
            let l = l.trim_start();
            !l.is_empty() && !l.starts_with('#')
        })
}

/// Parses a value-level document, turning "not that format" into a clear error.
pub fn parse_doc(format: Format, content: &[u8]) -> Result<Box<dyn Document>> {
    Ok(envseal_stores::parse(format, content)?)
}

/// `envseal config explain`.
pub fn config_explain(path: PathBuf, json: bool, kms: &KmsOpts) -> Result<ExitCode> {
    let s = settings(&path, kms, &[], None)?;
    if json {
        let v = serde_json::json!({
            "file": path,
            "config": s.config,
            "rule": s.rule.as_ref().map(|m| serde_json::json!({
                "index": m.index + 1,
                "path": m.rule.path,
                "matched": m.relative,
            })),
            "kms": { "value": s.kms.0, "source": s.kms.1.name() },
            "key": { "value": s.key.0, "source": s.key.1.name() },
            "context": s.context,
            "plain_keys": s.plain_keys,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match (&s.config, &s.rule) {
        (None, _) => outln!("config:     none found above {}", path.display()),
        (Some(c), None) => outln!("config:     {} (no rule matches {})", c.display(), path.display()),
        (Some(c), Some(m)) => {
            outln!("config:     {}", c.display());
            outln!("rule:       #{} path = {:?} (matched {})", m.index + 1, m.rule.path, m.relative.display());
        }
    }
    outln!("kms:        {} ({})", s.kms.0.join(", "), s.kms.1.name());
    outln!("key:        {} ({})", s.key.0, s.key.1.name());
    let ctx: Vec<String> = s.context.iter().map(|(k, v)| format!("{k}={v}")).collect();
    outln!("context:    {}", if ctx.is_empty() { "(none)".into() } else { ctx.join(", ") });
    outln!("plain keys: {}", s.plain_keys.as_deref().unwrap_or("(none)"));
    Ok(ExitCode::SUCCESS)
}
