//! `envseal init`.

use std::process::ExitCode;

use anyhow::Result;
use envseal_kms_local::{InitOptions, LocalKms, Unlock};

use crate::backend;

pub async fn run(passphrase: bool) -> Result<ExitCode> {
    let dir = backend::local_dir(backend::DEFAULT_URI)?;
    let unlock = if passphrase {
        backend::passphrase("New keystore passphrase: ")?
    } else {
        Unlock::MasterKeyFile(std::env::var_os("ENVSEAL_MASTER_KEY_FILE").map(Into::into))
    };
    LocalKms::init(&dir, InitOptions::new(unlock))?;
    eprintln!("envseal: created the local keystore in {} with key alias/default", dir.display());
    Ok(ExitCode::SUCCESS)
}
