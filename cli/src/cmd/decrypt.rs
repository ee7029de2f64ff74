//! `envseal decrypt`.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use envseal_core::Engine;
use envseal_core::container::{self, Preamble};

use crate::fsio::{self, AtomicFile, Interruptible};
use crate::open::{backends_for_opening, not_allowed, open_bytes};
use crate::opts::KmsOpts;
use crate::trust::{self, OpenOpts};

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
        return Err(crate::exit::fail(crate::exit::Exit::Usage, "--in-place needs a file, not `-`", None));
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
        return Err(crate::exit::fail(
            crate::exit::Exit::BadInput,
            "input larger than 64 MiB and not a sealed binary file",
            None,
        ));
    }
    let mut o = open_bytes(&path, &content, &kms, &reading).await?;
    o.unlocked.decrypt(o.doc.as_mut())?;
    let bytes = zeroize::Zeroizing::new(o.doc.render());
    fsio::write_output(&out_path, &bytes, 0o600)?;
    Ok(ExitCode::SUCCESS)
}
