//! `envseal get`, `set`, `unset`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use envseal_core::values::{KeyPath, ValueType};
use envseal_stores::{Format, StoreError};

use super::decrypt::open_document;
use crate::fsio;
use crate::trust::OpenOpts;
use crate::{KmsOpts, TypeArg, exit};

/// A user's key argument as a path: one name for .env, a dotted path or JSON pointer otherwise.
pub fn key_path(format: Format, key: &str) -> Result<KeyPath> {
    if format == Format::Dotenv {
        return Ok(KeyPath::key(key));
    }
    Ok(envseal_stores::parse_key_path(key)?)
}

pub async fn get(path: PathBuf, key: String, open: OpenOpts, kms: KmsOpts) -> Result<ExitCode> {
    let o = open_document(&path, &kms, &open).await?;
    let kp = key_path(o.doc.format(), &key)?;
    let found = o.unlocked.decoded_values(o.doc.as_ref())?.into_iter().rev().find(|(p, _, _)| *p == kp);
    let Some((_, _, v)) = found else {
        return Err(anyhow::Error::new(StoreError::NoSuchKey(key)));
    };
    let mut out = std::io::stdout().lock();
    out.write_all(v.expose_secret())?;
    if out.is_terminal() {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn ty(t: TypeArg) -> ValueType {
    match t {
        TypeArg::String => ValueType::Str,
        TypeArg::Number => ValueType::Num,
        TypeArg::Bool => ValueType::Bool,
        TypeArg::Null => ValueType::Null,
    }
}

/// Writes a changed sealed document back, only once its bytes are proven to open
/// (`Unlocked::render_checked`).
pub fn write_back(path: &Path, o: &super::decrypt::Opened) -> Result<()> {
    if fsio::is_std(path) {
        return Err(exit::fail(2, "set/unset need a file, not `-`", None));
    }
    fsio::write_output(path, &o.unlocked.render_checked(o.doc.as_ref())?, 0o644)
}

pub async fn set(
    path: PathBuf,
    key: String,
    value: Option<String>,
    t: TypeArg,
    open: OpenOpts,
    kms: KmsOpts,
) -> Result<ExitCode> {
    let mut o = open_document(&path, &kms, &open).await?;
    let kp = key_path(o.doc.format(), &key)?;
    let value = zeroize::Zeroizing::new(match value.as_deref() {
        Some("-") => {
            let mut v = Vec::new();
            std::io::stdin().read_to_end(&mut v)?;
            v
        }
        Some(v) => v.as_bytes().to_vec(),
        None => rpassword::prompt_password(format!("Value for {key}: "))
            .map_err(|_| exit::fail(2, "no value given", Some("pass the value, or `-` to read it from stdin")))?
            .into_bytes(),
    });
    let vt = ty(t);
    if o.doc.format() == Format::Dotenv && vt != ValueType::Str {
        return Err(exit::fail(2, ".env values are strings", Some("drop --type")));
    }
    o.unlocked.set(o.doc.as_mut(), &kp, vt, &value)?;
    write_back(&path, &o)?;
    eprintln!("envseal: set {key} in {}", path.display());
    Ok(ExitCode::SUCCESS)
}

pub async fn unset(path: PathBuf, key: String, open: OpenOpts, kms: KmsOpts) -> Result<ExitCode> {
    let mut o = open_document(&path, &kms, &open).await?;
    let kp = key_path(o.doc.format(), &key)?;
    o.unlocked.unset(o.doc.as_mut(), &kp)?;
    write_back(&path, &o)?;
    eprintln!("envseal: removed {key} from {}", path.display());
    Ok(ExitCode::SUCCESS)
}
