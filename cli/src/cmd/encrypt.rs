//! `envseal encrypt`.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use envseal_core::container::{self, Recipient, SealOptions};
use envseal_core::{Engine, Kms};
use envseal_stores::{Format, SealSpec};

use crate::fsio::{self, AtomicFile, Interruptible};
use crate::{FormatArg, KmsOpts, exit};

/// Options of `encrypt`.
pub struct Opts {
    pub path: PathBuf,
    pub output: Option<PathBuf>,
    pub format: FormatArg,
    pub context: Vec<(String, String)>,
    pub plain_keys: Option<String>,
    pub padding: Option<u32>,
    pub kms: KmsOpts,
    pub esdk: super::esdk::EsdkArgs,
    pub json: bool,
}

/// Splits `URI#KEY` (a per-backend key) from a backend URI.
pub fn split_key(uri: &str) -> (&str, Option<&str>) {
    match uri.rsplit_once('#') {
        Some((u, k)) if !k.is_empty() => (u, Some(k)),
        _ => (uri, None),
    }
}

pub async fn run(o: Opts) -> Result<ExitCode> {
    if o.format == FormatArg::Esdk {
        return super::esdk::encrypt(&o.path, o.output, &o.context, &o.kms, &o.esdk, o.json).await;
    }
    let s = super::settings(&o.path, &o.kms, &o.context, o.plain_keys.clone())?;
    let ctx = super::context(&s.context)?;
    let mut kmses: Vec<(Arc<dyn Kms>, String)> = Vec::new();
    for u in &s.kms.0 {
        let (uri, key) = split_key(u);
        let o = crate::backend::open_with_key(&crate::backend::Uri::parse(uri)?)?;
        // Key: `URI#KEY`, else one named by the URI itself, else --key / config / default.
        let key =
            key.map(str::to_string).or(o.key.filter(|_| s.key.1 != super::Source::Flag)).unwrap_or(s.key.0.clone());
        kmses.push((o.kms, key));
    }
    let recipients: Vec<Recipient<'_>> = kmses.iter().map(|(k, key)| Recipient { kms: k.as_ref(), key }).collect();

    // Peek at the start of the input to detect the format and refuse sealed input.
    let mut input = fsio::open_input(&o.path)?;
    let mut head = Vec::with_capacity(8192);
    input.by_ref().take(8192).read_to_end(&mut head).with_context(|| format!("cannot read {}", o.path.display()))?;
    let format = super::detect(&o.path, o.format, &head);
    if container::is_container(&head) {
        return Err(exit::fail(
            3,
            format!("{} is already sealed", o.path.display()),
            Some("it is sealed already; `envseal decrypt` opens it"),
        ));
    }
    let out_path = match (&o.output, fsio::is_std(&o.path)) {
        (Some(p), _) => p.clone(),
        (None, true) => PathBuf::from("-"),
        (None, false) => o.path.clone(),
    };
    let in_place = out_path == o.path && !fsio::is_std(&o.path);
    let input = Cursor::new(head).chain(input);

    let summary = if format == Format::Binary {
        let opts = SealOptions { engine: Engine::default(), ..SealOptions::default() };
        let (preamble, enc) = container::begin_seal(&recipients, &ctx, &opts).await?;
        let pre = preamble.encode()?;
        let n = if fsio::is_std(&out_path) {
            let mut out = std::io::stdout();
            out.write_all(&pre)?;
            let n = enc.encrypt_parallel(input, Interruptible(&mut out))?;
            out.flush()?;
            n
        } else {
            let mut f = AtomicFile::create(&out_path, 0o644)?;
            f.file().write_all(&pre).with_context(|| format!("cannot write {}", out_path.display()))?;
            let n = enc.encrypt_parallel(input, Interruptible(f.file()))?;
            f.commit()?;
            n
        };
        serde_json::json!({
            "path": out_path, "format": "binary", "plaintext_bytes": n,
            "keys": preamble.entries.iter().map(entry_json).collect::<Vec<_>>(),
        })
    } else {
        let mut content = Vec::new();
        input.take(fsio::MAX_DOCUMENT + 1).read_to_end(&mut content)?;
        if content.len() as u64 > fsio::MAX_DOCUMENT {
            return Err(exit::fail(3, "input larger than 64 MiB", Some("seal it with --format binary")));
        }
        let mut doc = super::parse_doc(format, &content).map_err(|e| {
            exit::fail(
                3,
                format!("{e:#}"),
                Some("fix the syntax at the line given, or seal the file as opaque bytes with --format binary"),
            )
        })?;
        match doc.metadata() {
            // Sealed values without metadata (a sealed file whose metadata was removed or cut
            // off): sealing them again would seal the ciphertext, and hide the damage.
            Ok(None) if super::decrypt::metadata_stripped(doc.as_ref()) => {
                return Err(exit::fail(
                    3,
                    format!("{} already has sealed values (ENC[...]) but no envseal metadata", o.path.display()),
                    Some("restore the sealed file from version control; sealing it again would seal the ciphertext"),
                ));
            }
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(exit::fail(
                    3,
                    format!("{} is already sealed", o.path.display()),
                    Some("`envseal set`/`edit` change a sealed file"),
                ));
            }
            // Not valid envseal metadata in a file being sealed: the user's own data uses the
            // reserved name (it is not a damaged sealed file).
            Err(envseal_stores::StoreError::Metadata(_)) => {
                return Err(exit::fail(
                    3,
                    format!("{} uses the reserved name `envseal` for its own data", o.path.display()),
                    Some(
                        "rename that key (JSON/YAML top-level `envseal`, or .env `#ENVSEAL_` lines): envseal keeps its metadata there",
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let padding =
            o.padding.or(s.rule.as_ref().and_then(|m| m.rule.padding)).unwrap_or(envseal_core::values::DEFAULT_PADDING);
        let spec = SealSpec {
            recipients: &recipients,
            context: ctx.clone(),
            plain_keys: s.plain_keys.clone(),
            padding,
            engine: Engine::default(),
        };
        let u = envseal_stores::seal(doc.as_mut(), &spec).await?;
        let bytes = u.render_checked(doc.as_ref())?;
        let clear = if s.plain_keys.is_some() { u.plain_pointers(doc.as_ref()) } else { Vec::new() };
        fsio::write_output(&out_path, &bytes, 0o644)?;
        let total = doc.entries().len();
        if let Some(rule) = &s.plain_keys {
            // Say exactly what stays readable: the rule matches whole JSON pointers.
            if clear.is_empty() {
                eprintln!(
                    "envseal: note: the plain-keys pattern {rule:?} matched no value (it must match a whole JSON pointer such as /PUBLIC_URL): every value is sealed"
                );
            } else {
                eprintln!("envseal: left in clear ({}): {}", clear.len(), clear.join(", "));
            }
        }
        serde_json::json!({
            "path": out_path, "format": format.name(), "values_sealed": total - clear.len(), "values_plain": clear.len(),
            "plain": clear, "padding": padding,
            "keys": u.meta.keys.iter().map(entry_json).collect::<Vec<_>>(),
        })
    };
    if !fsio::is_std(&out_path) {
        if o.json {
            outln!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            eprintln!(
                "envseal: sealed {} ({}){}",
                out_path.display(),
                summary["format"].as_str().unwrap_or(""),
                if in_place { " in place" } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A wrapped-key entry as JSON (no blob bytes: they are long and useless to a reader).
pub fn entry_json(e: &envseal_core::WrappedKey) -> serde_json::Value {
    serde_json::json!({ "backend": e.backend, "key_id": e.key_id, "key_version": e.key_version, "wrapped_bytes": e.blob.len() })
}
