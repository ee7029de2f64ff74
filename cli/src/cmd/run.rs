//! `envseal run`: secrets into a child's environment, never onto disk.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use envseal_core::values::{KeyPath, PathSegment};

use super::decrypt::open_document;
use crate::trust::OpenOpts;
use crate::{KmsOpts, exit};

/// Environment variable name for a key path: segments joined with `_` (`db.hosts[0]` →
/// `db_hosts_0`).
pub fn env_name(p: &KeyPath) -> String {
    p.0.iter()
        .map(|s| match s {
            PathSegment::Key(k) => k.clone(),
            PathSegment::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join("_")
}

pub async fn run(
    files: Vec<PathBuf>,
    pristine: bool,
    open: OpenOpts,
    kms: KmsOpts,
    command: Vec<String>,
) -> Result<ExitCode> {
    let files = if files.is_empty() { vec![PathBuf::from(".env")] } else { files };
    let mut vars: Vec<(String, zeroize::Zeroizing<Vec<u8>>)> = Vec::new();
    for f in &files {
        let o = open_document(f, &kms, &open).await?;
        for (path, _, v) in o.unlocked.decoded_values(o.doc.as_ref())? {
            let name = env_name(&path);
            if name.is_empty() || name.contains('=') || name.contains('\0') || v.expose_secret().contains(&0) {
                return Err(exit::fail(
                    3,
                    format!("{name:?} in {} cannot be an environment variable", f.display()),
                    None,
                ));
            }
            vars.push((name, v.into_zeroizing()));
        }
    }
    let (prog, args) = command.split_first().ok_or_else(|| exit::fail(2, "no command given", None))?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args);
    if pristine {
        let path: Option<OsString> = std::env::var_os("PATH");
        cmd.env_clear();
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
    }
    for (k, v) in &vars {
        cmd.env(k, OsStr::from_bytes(v));
    }
    // exec replaces this process: the child's exit status is ours, signals reach it directly,
    // and our copies of the secrets vanish with our address space.
    let err = cmd.exec();
    Err(exit::fail(127, format!("cannot run {prog:?}: {err}"), Some("check the command name and PATH")))
}
