//! `envseal edit`: plaintext in a private temp file (tmpfs when available), `$EDITOR`, re-seal.

use std::io::{IsTerminal, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use envseal_core::EncryptionContext;

use super::decrypt::open_document;
use crate::{KmsOpts, exit, fsio};

/// A private directory for the plaintext: tmpfs (`/dev/shm`, `$XDG_RUNTIME_DIR`) when
/// available, so it never reaches a disk; else the system temp dir.
fn private_dir() -> PathBuf {
    for d in
        [Some(PathBuf::from("/dev/shm")), std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)].into_iter().flatten()
    {
        if d.is_dir() && tempfile::Builder::new().prefix(".envseal-probe-").tempfile_in(&d).is_ok() {
            return d;
        }
    }
    std::env::temp_dir()
}

fn editor() -> String {
    std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".to_string())
}

/// Overwrites and truncates the temp file before it is removed (best effort: the data may still
/// be in the editor's own swap or backup files, see docs/SECURITY.md).
fn wipe(f: &mut std::fs::File) {
    if let Ok(len) = f.metadata().map(|m| m.len()) {
        let _ = f.rewind();
        let _ = f.write_all(&vec![0u8; len as usize]);
        let _ = f.sync_all();
        let _ = f.set_len(0);
    }
}

pub async fn run(path: PathBuf, kms: KmsOpts) -> Result<ExitCode> {
    if fsio::is_std(&path) {
        return Err(exit::fail(2, "edit needs a file, not `-`", None));
    }
    fsio::check_target(&path)?;
    let mut o = open_document(&path, &kms, &EncryptionContext::new()).await?;
    let format = o.doc.format();
    let original = o.doc.render();
    let mut plain_doc = super::parse_doc(format, &original)?;
    o.unlocked.decrypt(plain_doc.as_mut())?;
    let plaintext = zeroize::Zeroizing::new(plain_doc.render());

    let ext = match format {
        envseal_stores::Format::Json => ".json",
        envseal_stores::Format::Yaml => ".yaml",
        _ => ".env",
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".envseal-edit-")
        .suffix(ext)
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(private_dir())
        .context("cannot create a private temporary file")?;
    tmp.as_file_mut().write_all(&plaintext)?;
    tmp.as_file_mut().sync_all()?;
    let result = edit_loop(&path, &mut o, format, tmp.path(), &plaintext);
    // An editor may have saved by renaming a new file over ours: wipe whatever file is at the
    // path now, then the one we created.
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(tmp.path()) {
        wipe(&mut f);
    }
    wipe(tmp.as_file_mut());
    drop(tmp);
    result
}

fn edit_loop(
    path: &Path,
    o: &mut super::decrypt::Opened,
    format: envseal_stores::Format,
    tmp: &Path,
    before: &[u8],
) -> Result<ExitCode> {
    loop {
        let ed = editor();
        // Through the shell, as git does, so EDITOR="code --wait" works.
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{ed} \"$1\""))
            .arg("envseal-edit")
            .arg(tmp)
            .status()
            .with_context(|| format!("cannot start the editor {ed:?}"))?;
        if exit::interrupted() {
            return Err(anyhow::Error::new(exit::Interrupted));
        }
        if !status.success() {
            return Err(exit::fail(1, format!("the editor {ed:?} failed ({status}); the file is unchanged"), None));
        }
        let after = zeroize::Zeroizing::new(std::fs::read(tmp).context("cannot read the edited file")?);
        if after.as_slice() == before {
            eprintln!("envseal: no changes");
            return Ok(ExitCode::SUCCESS);
        }
        let parsed = super::parse_doc(format, &after).and_then(|mut d| {
            o.unlocked.reseal(d.as_mut())?;
            Ok(d)
        });
        match parsed {
            Ok(d) => {
                fsio::write_output(path, &d.render(), 0o644)?;
                eprintln!("envseal: re-sealed {}", path.display());
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) if std::io::stdin().is_terminal() => {
                eprintln!("envseal: error: {e:#}");
                eprint!("envseal: edit again? [Y/n] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim().eq_ignore_ascii_case("n") {
                    return Err(exit::fail(3, "edit abandoned; the file is unchanged", None));
                }
            }
            Err(e) => return Err(e.context("the edited file is invalid; the sealed file is unchanged")),
        }
    }
}
