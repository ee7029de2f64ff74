//! `envseal decrypt`.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use envseal_core::container::{self, Preamble};
use envseal_core::{Engine, Kms, WrappedKey};
use envseal_kms_local::LocalKms;
use envseal_stores::Format;

use crate::backend::{self, Uri};
use crate::cmd::encrypt::split_key;
use crate::fsio::{self, AtomicFile, Interruptible};
use crate::trust::{self, OpenOpts, Reading};
use crate::{FormatArg, KmsOpts};

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
        6,
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
            3,
            format!("{} is a sealed binary file, not a .env/JSON/YAML file", path.display()),
            Some("`envseal decrypt` opens it"),
        ));
    }
    if std::str::from_utf8(content).is_err() {
        // Not text and not a container: nothing envseal sealed.
        return Err(anyhow::Error::new(envseal_stores::StoreError::NotSealed));
    }
    let format = super::detect(path, FormatArg::Auto, content);
    let format = if format == Format::Binary { Format::Dotenv } else { format };
    let doc = super::parse_doc(format, content)?;
    let Some(meta) = doc.metadata()? else {
        if metadata_stripped(doc.as_ref()) {
            return Err(crate::exit::fail(
                7,
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
        return super::backends_for(entries, kms, &pre);
    }
    let is_local = |u: &String| matches!(Uri::parse(split_key(u).0), Ok(Uri::Local(_)));
    let mut dirs = Vec::new();
    for u in kms.kms.iter().filter(|u| is_local(u)) {
        dirs.push(backend::local_dir(&Uri::parse(split_key(u).0)?)?);
    }
    if dirs.is_empty() {
        dirs.push(LocalKms::default_dir()?);
    }
    if dirs.iter().any(|d| LocalKms::exists(d)) {
        return super::backends_for(entries, kms, &pre);
    }
    let others: Vec<WrappedKey> = entries.iter().filter(|e| e.backend != envseal_kms_local::BACKEND).cloned().collect();
    if others.is_empty() {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(crate::exit::fail(
            14,
            format!("no keystore at {}: this file's key is in a local keystore", shown.join(", ")),
            Some("point ENVSEAL_HOME (or --kms local:DIR) at the keystore the file was sealed with"),
        ));
    }
    let kms = KmsOpts { kms: kms.kms.iter().filter(|u| !is_local(u)).cloned().collect(), key: kms.key.clone() };
    super::backends_for(&others, &kms, &pre)
}

pub async fn run(
    path: PathBuf,
    output: Option<PathBuf>,
    in_place: bool,
    open: OpenOpts,
    kms: KmsOpts,
    esdk: super::esdk::EsdkArgs,
) -> Result<ExitCode> {
    let reading = trust::for_file(&path, &open).await?;
    if in_place && fsio::is_std(&path) {
        return Err(crate::exit::fail(2, "--in-place needs a file, not `-`", None));
    }
    let out_path = match (output, in_place) {
        (Some(p), _) => p,
        (None, true) => path.clone(),
        (None, false) => PathBuf::from("-"),
    };
    let mut input = fsio::open_input(&path)?;
    let mut head = Vec::with_capacity(8);
    input.by_ref().take(8).read_to_end(&mut head).with_context(|| format!("cannot read {}", path.display()))?;
    if envseal_esdk::looks_like_message(&head) {
        return super::esdk::decrypt(Cursor::new(head).chain(input), &out_path, &reading, &kms, &esdk).await;
    }
    if container::is_container(&head) {
        let mut input = Cursor::new(head).chain(input);
        let preamble = Preamble::read_from(&mut input)?;
        if !preamble.header.context.contains_all(&reading.expected) {
            return Err(envseal_core::Error::from(envseal_core::FormatError::WrongContext).into());
        }
        let backends = backends_for_opening(&preamble.entries, &kms, &reading)?;
        let refs: Vec<&dyn envseal_core::Kms> = backends.iter().map(|b| b.as_ref()).collect();
        let (dec, _) =
            container::unwrap_data_key(&refs, &preamble, &reading.expected, &reading.trust, Engine::default())
                .await
                .map_err(|e| not_allowed(&path, &reading, e))?;
        if fsio::is_std(&out_path) {
            let mut out = std::io::stdout();
            dec.decrypt_parallel(input, Interruptible(&mut out))?;
            out.flush()?;
        } else {
            // Plaintext on disk only because the user asked; 0600 for a new file.
            let mut f = AtomicFile::create(&out_path, 0o600)?;
            dec.decrypt_parallel(input, Interruptible(f.file()))?;
            f.commit()?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut content = head;
    input
        .take(fsio::MAX_DOCUMENT + 1)
        .read_to_end(&mut content)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if content.len() as u64 > fsio::MAX_DOCUMENT {
        return Err(crate::exit::fail(3, "input larger than 64 MiB and not a sealed binary file", None));
    }
    let mut o = open_bytes(&path, &content, &kms, &reading).await?;
    o.unlocked.decrypt(o.doc.as_mut())?;
    let bytes = zeroize::Zeroizing::new(o.doc.render());
    fsio::write_output(&out_path, &bytes, 0o600)?;
    Ok(ExitCode::SUCCESS)
}
