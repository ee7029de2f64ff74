//! What a reader expects of a sealed file before it opens it (docs/CLI.md, "Trust"): the keys
//! it may be wrapped under, and the context it must carry.
//!
//! - **Keys.** A `.envseal.toml` rule that names keys (`kms`, `key`, `allow`) makes reading
//!   strict: only entries wrapped under those keys are sent to a KMS; any other entry is refused
//!   before a KMS call. `--allow-key URI#KEY` (or `ENVSEAL_ALLOW_KEYS`) adds keys, and makes
//!   reading strict where no rule names keys. Discovery (try whatever key an entry names) is the
//!   explicit choice: `--discover`, or `discover = true` in the rule; it is also what happens
//!   when nothing names a key.
//! - **Context.** The rule's `context` (written when sealing) and every `--context K=V` must be
//!   present in the file's context, checked before any KMS call.
//!
//! Backends opened to resolve aliases to key ids are kept and reused to open the file, so a
//! passphrase or PIN is asked once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use envseal_core::entries::{AllowedKey, Trust};
use envseal_core::{EncryptionContext, Kms};
use envseal_kms_local::LocalKms;

use crate::backend::{self, Uri};
use crate::cmd::encrypt::split_key;
use crate::config;

/// Options of every command that opens a sealed file.
#[derive(Args, Debug, Clone, Default)]
pub struct OpenOpts {
    /// Required encryption context entry (repeatable): fail unless the file has it (added to
    /// the context a .envseal.toml rule requires).
    #[arg(long = "context", value_name = "K=V", value_parser = crate::parse_kv)]
    pub context: Vec<(String, String)>,
    /// Trust entries wrapped under this key (`URI#KEY`, a URI naming a key, or a URI for every
    /// key of that backend); repeatable. Reading is then strict: other entries are refused
    /// before any KMS call.
    #[arg(long = "allow-key", env = "ENVSEAL_ALLOW_KEYS", value_name = "URI#KEY", value_delimiter = ',')]
    pub allow_key: Vec<String>,
    /// Try whatever key the file's entries name, even where a .envseal.toml rule names keys
    /// (discovery: anyone who can write the file and holds any key you can decrypt with can
    /// then replace it).
    #[arg(long, conflicts_with = "allow_key")]
    pub discover: bool,
}

/// What a reader expects of one file.
pub struct Reading {
    /// Context the file must contain.
    pub expected: EncryptionContext,
    /// Which entries may be sent to a KMS.
    pub trust: Trust,
    /// Where the trust comes from, for messages.
    pub source: String,
    /// Backends opened while resolving keys, by URI (reused to open the file).
    pub opened: Vec<(Uri, Arc<dyn Kms>)>,
}

impl Reading {
    /// The backends already opened, for the entries of their backend.
    pub fn backends(&self) -> Vec<Arc<dyn Kms>> {
        self.opened.iter().map(|(_, k)| k.clone()).collect()
    }
}

/// An allowed key as the user wrote it: a backend URI and the key after `#`, if any.
fn parse_allowed(spec: &str) -> Result<(Uri, Option<String>)> {
    let (uri, key) = split_key(spec);
    let parsed = Uri::parse(uri)?;
    let key = match (&parsed, key) {
        (_, Some(k)) => Some(k.to_string()),
        (Uri::Aws(k), None) if !k.is_empty() => Some(k.clone()),
        _ => None,
    };
    Ok((parsed, key))
}

/// Whether a URI names its key itself (Vault, Alibaba, PKCS#11).
fn names_key(uri: &Uri) -> bool {
    matches!(uri, Uri::Vault(_) | Uri::Alibaba(_) | Uri::Pkcs11(_))
}

/// Resolves one allowed key to the canonical id its backend records in entries (a read-only
/// describe call; aliases become key ids). Without a key, a URI that names one (Vault, Alibaba,
/// PKCS#11) allows that key, and `local:`/`aws-kms:` allow every key of the backend. A backend
/// that cannot be opened or asked keeps the key as written: it then matches only entries that
/// record exactly that id.
async fn resolve(uri: &Uri, key: Option<&str>, opened: &mut Vec<(Uri, Arc<dyn Kms>)>) -> Result<AllowedKey> {
    let name = uri.backend_name();
    if key.is_none() && !names_key(uri) {
        return Ok(AllowedKey::new(name, "*"));
    }
    // Opening a file never creates a keystore: a missing one holds none of its keys.
    if let (Uri::Local(_), Some(key)) = (uri, key)
        && !LocalKms::exists(&backend::local_dir(uri)?)
    {
        return Ok(AllowedKey::new(name, key));
    }
    let (kms, uri_key) = match opened.iter().find(|(u, _)| u == uri) {
        Some((_, k)) => (k.clone(), None),
        None => match backend::open_with_key(uri) {
            Ok(o) => {
                opened.push((uri.clone(), o.kms.clone()));
                (o.kms, o.key)
            }
            Err(e) => match key {
                Some(k) => return Ok(AllowedKey::new(name, k)),
                None => return Err(e),
            },
        },
    };
    let Some(key) = key.map(str::to_string).or(uri_key) else { return Ok(AllowedKey::new(name, "*")) };
    let key = key.as_str();
    let id = match kms.key_manager() {
        Some(km) => km.describe_key(key).await.map(|m| m.key_id).unwrap_or_else(|_| key.to_string()),
        None => key.to_string(),
    };
    Ok(AllowedKey::new(kms.backend(), id))
}

/// The strict trust of a list of `--allow-key` specs (discovery for an empty list), for jobs
/// that do not follow per-file rules.
pub async fn from_allow(specs: &[String]) -> Result<Trust> {
    let mut opened = Vec::new();
    let mut allowed = Vec::new();
    for spec in specs {
        let (uri, key) = parse_allowed(spec)?;
        allowed.push(resolve(&uri, key.as_deref(), &mut opened).await?);
    }
    Ok(if allowed.is_empty() { Trust::Discovery } else { Trust::Allow(allowed) })
}

/// What to expect of `path`: its rule's context and keys, and the flags.
pub async fn for_file(path: &Path, open: &OpenOpts) -> Result<Reading> {
    let (config, rule) = config::lookup(path)?;
    let mut context: BTreeMap<String, String> = rule.as_ref().map(|m| m.rule.context.clone()).unwrap_or_default();
    for (k, v) in &open.context {
        context.insert(k.clone(), v.clone());
    }
    let expected = crate::cmd::context(&context)?;
    let mut opened = Vec::new();
    let mut allowed = Vec::new();
    let mut sources = Vec::new();
    for spec in &open.allow_key {
        let (uri, key) = parse_allowed(spec)?;
        allowed.push(resolve(&uri, key.as_deref(), &mut opened).await?);
        sources.push(format!("--allow-key {spec}"));
    }
    if let Some(m) = rule.as_ref().filter(|m| !open.discover && !m.rule.discover && m.rule.names_keys()) {
        let default_kms = [backend::DEFAULT_URI.to_string()];
        let uris = if m.rule.kms.is_empty() { &default_kms[..] } else { &m.rule.kms[..] };
        for u in uris {
            let (uri, key) = parse_allowed(u)?;
            // As sealing picks the key: `URI#KEY`, else the key the URI names, else the rule's
            // key, else the default.
            let key = match key {
                Some(k) => Some(k),
                None if names_key(&uri) => None,
                None => Some(m.rule.key.clone().unwrap_or_else(|| backend::DEFAULT_KEY.to_string())),
            };
            allowed.push(resolve(&uri, key.as_deref(), &mut opened).await?);
        }
        for u in &m.rule.allow {
            let (uri, key) = parse_allowed(u)?;
            allowed.push(resolve(&uri, key.as_deref(), &mut opened).await?);
        }
        let file = config.as_ref().map(|c| c.display().to_string()).unwrap_or_default();
        sources.push(format!("rule #{} of {file}", m.index + 1));
    }
    // `--discover` wins; a rule with `discover = true` contributed no keys above.
    let trust = if open.discover || allowed.is_empty() { Trust::Discovery } else { Trust::Allow(allowed) };
    let source = if trust.is_strict() { sources.join(", ") } else { "discovery".to_string() };
    Ok(Reading { expected, trust, source, opened })
}

/// The keys a strict reading allows, for messages (`backend:key_id`).
pub fn describe(trust: &Trust) -> String {
    match trust {
        Trust::Allow(keys) => keys.iter().map(|k| format!("{}:{}", k.backend, k.key_id)).collect::<Vec<_>>().join(", "),
        _ => "any key (discovery)".into(),
    }
}
