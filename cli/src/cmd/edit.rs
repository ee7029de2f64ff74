//! `envseal edit`: plaintext in a private temp file (tmpfs when available), `$EDITOR`, re-seal.

use std::io::{IsTerminal, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::decrypt::open_document;
use crate::trust::OpenOpts;
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

/// Removes the plaintext temp file if envseal dies without cleaning up (SIGKILL, the OOM
/// killer), when no destructor runs. A small `sh` reads a pipe from us: we send it each
/// editor's pid; when our end closes (we exited, or the kernel closed it for us) it waits for
/// the last editor to exit (skipping zombies), then truncates and removes the file if it is
/// still there. After a normal exit the file is already gone and it has nothing to do. It
/// ignores the signals a terminal sends the whole process group (Ctrl-C, hangup), which envseal
/// handles itself.
const REAPER: &str = r#"trap '' INT HUP TERM QUIT
pid=
while read -r l; do pid=$l; done
while [ -n "$pid" ] && read -r st < "/proc/$pid/stat" 2>/dev/null; do
  st=${st##*) }; st=${st%% *}
  [ "$st" = Z ] && break
  sleep 0.2 2>/dev/null || sleep 1
done
if [ -f "$1" ] && [ ! -L "$1" ]; then : > "$1"; rm -f -- "$1"; fi
"#;

/// The reaper process (see [`REAPER`]); `None` if `sh` could not be started (the temp file is
/// then removed on every exit path but a SIGKILL).
fn spawn_reaper(tmp: &Path) -> Option<std::process::Child> {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(REAPER)
        .arg("envseal-edit-reaper")
        .arg(tmp)
        // Nothing of ours: no passphrase or token in its environment.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
}

pub async fn run(path: PathBuf, open: OpenOpts, kms: KmsOpts) -> Result<ExitCode> {
    if fsio::is_std(&path) {
        return Err(exit::fail(2, "edit needs a file, not `-`", None));
    }
    fsio::check_target(&path)?;
    let mut o = open_document(&path, &kms, &open).await?;
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
    let mut reaper = spawn_reaper(tmp.path());
    tmp.as_file_mut().write_all(&plaintext)?;
    tmp.as_file_mut().sync_all()?;
    let result = edit_loop(&path, &mut o, format, tmp.path(), &plaintext, reaper.as_mut());
    // An editor may have saved by renaming a new file over ours: wipe whatever file is at the
    // path now, then the one we created.
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(tmp.path()) {
        wipe(&mut f);
    }
    wipe(tmp.as_file_mut());
    drop(tmp);
    if let Some(mut r) = reaper {
        drop(r.stdin.take());
        let _ = r.wait();
    }
    result
}

fn edit_loop(
    path: &Path,
    o: &mut super::decrypt::Opened,
    format: envseal_stores::Format,
    tmp: &Path,
    before: &[u8],
    mut reaper: Option<&mut std::process::Child>,
) -> Result<ExitCode> {
    loop {
        let ed = editor();
        // Through the shell, as git does, so EDITOR="code --wait" works.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{ed} \"$1\""))
            .arg("envseal-edit")
            .arg(tmp)
            .spawn()
            .with_context(|| format!("cannot start the editor {ed:?}"))?;
        if let Some(stdin) = reaper.as_mut().and_then(|r| r.stdin.as_mut()) {
            let _ = writeln!(stdin, "{}", child.id());
        }
        let status = child.wait().with_context(|| format!("cannot wait for the editor {ed:?}"))?;
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
            Ok(o.unlocked.render_checked(d.as_ref())?)
        });
        match parsed {
            Ok(bytes) => {
                fsio::write_output(path, &bytes, 0o644)?;
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
