//! `envseal rekey`: a new data key for sealed files, for the same (verified) recipients.
//!
//! Value-level files get a new data key and file id, every value resealed (format 2), and a new
//! MAC; containers are streamed through a new data key and salt. Either way the new file is
//! proven to open before it replaces the old one, and anyone who kept an old wrapped key or data
//! key opens nothing sealed from then on. Recipients are the file's entries that verify (unwrap
//! and pass the key commitment): an entry's label alone could name anybody's key.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use envseal_core::container::{self, Opener, Preamble};
use envseal_core::entries::{self, Check, Recipient};
use envseal_core::{EncryptionContext, Engine, Kms, WrappedKey};

use super::decrypt::{backends_for_opening, not_allowed, open_bytes};
use crate::fsio::{self, AtomicFile};
use crate::trust::{self, OpenOpts, Reading};
use crate::{KmsOpts, exit};

/// Arguments of `envseal rekey`.
#[derive(Args, Debug)]
pub struct RekeyArgs {
    /// Sealed files (.env/JSON/YAML or binary containers).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Value padding of the re-keyed value-level files (default: the file's, else 32).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub padding: Option<u32>,
    #[command(flatten)]
    pub open: OpenOpts,
    #[command(flatten)]
    pub kms: KmsOpts,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The recipients a re-key carries over: the entries that verify, one per (backend, key id).
/// Entries that fail for a reason of their own are dropped (they open nothing) and reported;
/// any other failure (a backend not configured, denied, unreachable) stops the re-key.
pub async fn verified_recipients(
    path: &Path,
    kmses: &[Arc<dyn Kms>],
    entries: &[WrappedKey],
    kctx: &EncryptionContext,
    reading: &Reading,
    check: &Check<'_>,
    quiet: bool,
) -> Result<Vec<WrappedKey>> {
    let refs: Vec<&dyn Kms> = kmses.iter().map(|k| k.as_ref()).collect();
    let mut keep: Vec<WrappedKey> = Vec::new();
    for (i, r) in entries::verify_each(&refs, entries, kctx, &reading.trust, check).await {
        let e = &entries[i];
        match r {
            Ok(()) => {
                if !keep.iter().any(|k| k.backend == e.backend && k.key_id == e.key_id) {
                    keep.push(e.clone());
                }
            }
            Err(err) if entries::is_entry_fault(&err) => {
                if !quiet {
                    eprintln!(
                        "envseal: {}: entry {i} ({} {} v{}) could not be verified and is not carried over: {err}",
                        path.display(),
                        e.backend,
                        e.key_id,
                        e.key_version
                    );
                }
            }
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!(
                    "{}: cannot verify entry {i} ({} {}), so cannot tell whether to carry it over; nothing was changed",
                    path.display(),
                    e.backend,
                    e.key_id
                )));
            }
        }
    }
    if keep.is_empty() {
        return Err(exit::fail(6, format!("{}: no entry verified: nothing to re-key for", path.display()), None));
    }
    Ok(keep)
}

fn recipients<'a>(kmses: &'a [Arc<dyn Kms>], keep: &'a [WrappedKey]) -> Result<Vec<Recipient<'a>>> {
    keep.iter()
        .map(|e| {
            let kms = kmses
                .iter()
                .find(|k| k.backend() == e.backend)
                .ok_or_else(|| anyhow::anyhow!("internal error: no backend for a verified entry"))?;
            Ok(Recipient { kms: kms.as_ref(), key: &e.key_id })
        })
        .collect()
}

/// Re-keys a value-level file in place; returns its new entries.
pub async fn rekey_document(
    path: &Path,
    content: &[u8],
    kms: &KmsOpts,
    reading: &Reading,
    padding: Option<u32>,
    quiet: bool,
) -> Result<Vec<WrappedKey>> {
    let mut o = open_bytes(path, content, kms, reading).await?;
    let meta = o.unlocked.meta.clone();
    let kmses = backends_for_opening(&meta.keys, kms, reading)?;
    let file = envseal_core::rewrap::ValueFile {
        version: meta.version as u8,
        context: &meta.context,
        file_id: &meta.file_id,
        keys: &meta.keys,
        commitment: &meta.commitment,
    };
    let check = file.check(Engine::default());
    let keep = verified_recipients(path, &kmses, &meta.keys, &file.kms_context()?, reading, &check, quiet).await?;
    let rs = recipients(&kmses, &keep)?;
    o.unlocked.rekey(o.doc.as_mut(), &rs, padding).await?;
    let bytes = o.unlocked.render_checked(o.doc.as_ref())?;
    fsio::write_output(path, &bytes, 0o644)?;
    Ok(o.unlocked.meta.keys.clone())
}

/// Re-keys a container in place; returns its new entries.
async fn rekey_container(path: &Path, kms: &KmsOpts, reading: &Reading, quiet: bool) -> Result<Vec<WrappedKey>> {
    let mut input = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let preamble = Preamble::read_from(&mut input)?;
    if !preamble.header.context.contains_all(&reading.expected) {
        return Err(envseal_core::Error::from(envseal_core::FormatError::WrongContext).into());
    }
    let kmses = backends_for_opening(&preamble.entries, kms, reading)?;
    let check = preamble.check(Engine::default());
    let keep =
        verified_recipients(path, &kmses, &preamble.entries, &preamble.kms_context(), reading, &check, quiet).await?;
    let rs = recipients(&kmses, &keep)?;
    let refs: Vec<&dyn Kms> = kmses.iter().map(|k| k.as_ref()).collect();
    let opener = Opener { kmses: &refs, expected: &reading.expected, trust: &reading.trust, engine: Engine::default() };
    let mut out = AtomicFile::create(path, 0o644)?;
    let input = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    container::rekey(&opener, &rs, input, out.file()).await.map_err(|e| not_allowed(path, reading, e))?;
    // (Already proven by `container::rekey`; read back here only to report the new entries.)
    let new = Preamble::read_from(&mut std::io::BufReader::new(out.reopen()?))?;
    out.commit()?;
    Ok(new.entries)
}

pub async fn run(a: RekeyArgs) -> Result<ExitCode> {
    let mut summary = Vec::new();
    for path in &a.paths {
        if fsio::is_std(path) {
            return Err(exit::fail(2, "rekey needs files, not `-`", None));
        }
        fsio::check_target(path)?;
        let reading = trust::for_file(path, &a.open).await?;
        let mut head = Vec::new();
        fsio::open_input(path)?.take(8).read_to_end(&mut head)?;
        let entries = if container::is_container(&head) {
            rekey_container(path, &a.kms, &reading, a.json).await?
        } else {
            let content = fsio::read_document(path)?;
            rekey_document(path, &content, &a.kms, &reading, a.padding, a.json).await?
        };
        if !a.json {
            let keys: Vec<String> =
                entries.iter().map(|e| format!("{} {} v{}", e.backend, e.key_id, e.key_version)).collect();
            eprintln!("envseal: re-keyed {} (new data key for {})", path.display(), keys.join(", "));
        }
        summary.push(serde_json::json!({
            "path": path, "keys": entries.iter().map(super::encrypt::entry_json).collect::<Vec<_>>(),
        }));
    }
    if a.json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string_pretty(&serde_json::json!({ "rekeyed": summary }))?)?;
    }
    Ok(ExitCode::SUCCESS)
}
