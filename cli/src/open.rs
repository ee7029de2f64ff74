//! Opening sealed files: which format a file is in, which backends can open its wrapped-key
//! entries (never creating a keystore as a side effect), and unlocking a value-level document
//! under the reader's trust.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use envseal_core::container;
use envseal_core::{Engine, Kms, WrappedKey};
use envseal_kms_local::LocalKms;
use envseal_stores::{Document, Format};

use crate::backend;
use crate::fsio;
use crate::opts::{FormatArg, KmsOpts, split_key};
use crate::trust::{self, OpenOpts, Reading};

/// A sealed value-level document, opened.
pub struct Opened {
    pub doc: Box<dyn envseal_stores::Document>,
    pub unlocked: envseal_stores::Unlocked,
}

/// Reads, parses and unlocks a value-level sealed file (trusted keys only, context checked,
/// commitment and MAC verified).
pub async fn open_document(path: &Path, kms: &KmsOpts, open: &OpenOpts) -> Result<Opened> {
    let content = fsio::read_document(path)?;
    let reading = trust::for_file(path, open).await?;
    open_bytes(path, &content, kms, &reading).await
}

/// Turns "no entry is wrapped under a trusted key" into a message that says where the trust
/// comes from and how to widen it.
pub fn not_allowed(path: &Path, reading: &Reading, e: envseal_core::Error) -> anyhow::Error {
    if !e.is_not_allowed() {
        return anyhow::Error::new(e);
    }
    crate::exit::fail(
        crate::exit::Exit::NoKey,
        format!(
            "{}: its wrapped keys are not allowed for it (trusted: {}, from {}): {e}",
            path.display(),
            trust::describe(&reading.trust),
            reading.source
        ),
        Some(
            "if you trust the key it names, pass --allow-key URI#KEY (or add it to the rule's `allow`), or --discover",
        ),
    )
}

/// A document without envseal metadata whose values all look sealed (`ENC[...]`): a sealed
/// file whose metadata was removed or cut off. One sealed-looking value among plain ones is
/// ordinary data (a plaintext may contain such a string).
pub fn metadata_stripped(doc: &dyn envseal_stores::Document) -> bool {
    let entries = doc.entries();
    !entries.is_empty() && entries.iter().all(|e| envseal_core::values::is_sealed(&e.text))
}

/// As [`open_document`], for content already read.
pub async fn open_bytes(path: &Path, content: &[u8], kms: &KmsOpts, reading: &Reading) -> Result<Opened> {
    if container::is_container(content) {
        return Err(crate::exit::fail(
            crate::exit::Exit::BadInput,
            format!("{} is a sealed binary file, not a .env/JSON/YAML file", path.display()),
            Some("`envseal decrypt` opens it"),
        ));
    }
    if std::str::from_utf8(content).is_err() {
        // Not text and not a container: nothing envseal sealed.
        return Err(anyhow::Error::new(envseal_stores::StoreError::NotSealed));
    }
    let format = detect(path, FormatArg::Auto, content);
    let format = if format == Format::Binary { Format::Dotenv } else { format };
    let doc = parse_doc(format, content)?;
    let Some(meta) = doc.metadata()? else {
        if metadata_stripped(doc.as_ref()) {
            return Err(crate::exit::fail(
                crate::exit::Exit::Tampered,
                format!(
                    "{} has sealed values but no envseal metadata (removed, or the file was cut short)",
                    path.display()
                ),
                Some("restore the file from version control or a good copy"),
            ));
        }
        return Err(anyhow::Error::new(envseal_stores::StoreError::NotSealed));
    };
    if !meta.context.contains_all(&reading.expected) {
        return Err(anyhow::Error::new(envseal_stores::StoreError::from(envseal_core::FormatError::WrongContext)));
    }
    let backends = backends_for_opening(&meta.keys, kms, reading)?;
    let refs: Vec<&dyn envseal_core::Kms> = backends.iter().map(|b| b.as_ref()).collect();
    let unlocked = envseal_stores::unlock(doc.as_ref(), &refs, &reading.expected, &reading.trust, Engine::default())
        .await
        .map_err(|e| match e {
            envseal_stores::StoreError::Core(c) => not_allowed(path, reading, c),
            e => anyhow::Error::new(e),
        })?;
    Ok(Opened { doc, unlocked })
}

/// The backends that can open `entries`, without creating a local keystore as a side effect:
/// a new, empty keystore holds none of the file's keys, so opening a file never creates one.
/// Local entries are skipped when no keystore exists where they would be looked for; if no
/// other entry is left, the error says there is no keystore. Only entries the reading trusts
/// are considered (no backend is even opened for the others), and backends the reading already
/// opened are reused.
pub fn backends_for_opening(all: &[WrappedKey], kms: &KmsOpts, reading: &Reading) -> Result<Vec<Arc<dyn Kms>>> {
    let trusted: Vec<WrappedKey> = all.iter().filter(|e| reading.trust.permits(e)).cloned().collect();
    if trusted.is_empty() {
        // Nothing to open: the library reports every entry as not allowed.
        return Ok(Vec::new());
    }
    let entries = &trusted[..];
    let pre = reading.backends();
    if pre.iter().any(|k| k.backend() == envseal_kms_local::BACKEND)
        || !entries.iter().any(|e| e.backend == envseal_kms_local::BACKEND)
    {
        return backends_for(entries, kms, &pre);
    }
    let mut dirs = Vec::new();
    for u in kms.kms.iter().map(|u| split_key(u).0) {
        if backend::name_of(u)? == envseal_kms_local::BACKEND {
            dirs.push(backend::local_dir(u)?);
        }
    }
    if dirs.is_empty() {
        dirs.push(LocalKms::default_dir()?);
    }
    if dirs.iter().any(|d| LocalKms::exists(d)) {
        return backends_for(entries, kms, &pre);
    }
    let others: Vec<WrappedKey> = entries.iter().filter(|e| e.backend != envseal_kms_local::BACKEND).cloned().collect();
    if others.is_empty() {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(crate::exit::fail(
            crate::exit::Exit::Keystore,
            format!("no keystore at {}: this file's key is in a local keystore", shown.join(", ")),
            Some("point ENVSEAL_HOME (or --kms local:DIR) at the keystore the file was sealed with"),
        ));
    }
    let kms = KmsOpts {
        kms: kms
            .kms
            .iter()
            .filter(|u| backend::name_of(split_key(u).0).ok() != Some(envseal_kms_local::BACKEND))
            .cloned()
            .collect(),
        key: kms.key.clone(),
    };
    backends_for(&others, &kms, &pre)
}

/// The backends needed to open a file with these entries: those given with --kms, then those
/// already opened (`pre`: from a rule or --allow-key), plus, for each other backend an entry
/// names, that backend from its usual environment (the default local keystore,
/// `VAULT_ADDR`/`VAULT_TOKEN`, ...).
pub fn backends_for(entries: &[WrappedKey], opts: &KmsOpts, pre: &[Arc<dyn Kms>]) -> Result<Vec<Arc<dyn Kms>>> {
    let used = |name: &str| entries.iter().any(|e| e.backend == name);
    let mut out: Vec<Arc<dyn Kms>> = Vec::new();
    let mut have: Vec<String> = Vec::new();
    let uris: Vec<&str> = opts.kms.iter().map(|u| split_key(u).0).collect();
    for uri in uris {
        let name = backend::name_of(uri)?;
        if used(name) && !have.iter().any(|h| h == name) {
            out.push(backend::open(uri)?);
            have.push(name.to_string());
        }
    }
    for k in pre {
        let name = k.backend();
        if used(name) && !have.iter().any(|h| h == name) {
            out.push(k.clone());
            have.push(name.to_string());
        }
    }
    let mut last_err = None;
    for e in entries {
        if have.contains(&e.backend) {
            continue;
        }
        // A backend that cannot be set up from the environment is skipped: another entry may
        // open the file; if none can, the error names each entry.
        match backend::open_by_name(&e.backend) {
            Ok(Some(k)) => {
                have.push(e.backend.clone());
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
