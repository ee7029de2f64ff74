//! `envseal encrypt --format esdk` and `envseal decrypt` of AWS Encryption SDK messages
//! (docs/ESDK.md). The format and its invariants live in `envseal-esdk`; this module picks the
//! keyrings, the files and the exit codes.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use envseal_core::{Kms, WrappedKey};
use envseal_esdk::keyring::{AWS_KMS_PROVIDER_ID, ENVSEAL_PROVIDER_PREFIX};
use envseal_esdk::{DecryptOptions, EncryptOptions, EsdkError, Keyring, KmsKeyring, RawAesKeyring, Suite};
use zeroize::Zeroizing;

use crate::backend::Uri;
use crate::cmd::encrypt::split_key;
use crate::fsio::{self, AtomicFile, Interruptible};
use crate::{KmsOpts, exit};

/// ESDK options of `encrypt` and `decrypt`.
#[derive(Args, Debug, Clone, Default)]
pub struct EsdkArgs {
    /// ESDK algorithm suite for `--format esdk` (default: the signed committing suite, as the ESDK).
    #[arg(long = "esdk-algorithm", value_enum, value_name = "SUITE")]
    pub algorithm: Option<EsdkSuite>,
    /// ESDK frame length in bytes for `--format esdk` (default 4096, as the ESDK).
    #[arg(long = "frame-length", value_name = "BYTES")]
    pub frame_length: Option<u32>,
    /// An ESDK raw AES wrapping key: NAMESPACE/NAME=FILE, FILE holding 16, 24 or 32 raw bytes
    /// (repeatable; ESDK messages only).
    #[arg(long = "raw-aes-key", value_name = "NAMESPACE/NAME=FILE")]
    pub raw_aes_keys: Vec<String>,
    /// Most encrypted data keys an ESDK message may carry to be opened (default 16).
    #[arg(long = "max-encrypted-data-keys", value_name = "N")]
    pub max_encrypted_data_keys: Option<usize>,
}

/// ESDK algorithm suites envseal writes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EsdkSuite {
    /// 0x0578: key commitment and an ECDSA P-384 signature (the ESDK's default).
    #[value(name = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384")]
    Signed,
    /// 0x0478: key commitment, no signature.
    #[value(name = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY")]
    Unsigned,
}

fn raw_keyrings(args: &EsdkArgs) -> Result<Vec<RawAesKeyring>> {
    let mut out = Vec::new();
    for spec in &args.raw_aes_keys {
        let bad = || exit::fail(2, format!("--raw-aes-key {spec:?}: expected NAMESPACE/NAME=FILE"), None);
        let (id, file) = spec.split_once('=').ok_or_else(bad)?;
        let (ns, name) = id.split_once('/').ok_or_else(bad)?;
        let key =
            Zeroizing::new(std::fs::read(file).with_context(|| format!("cannot read the raw AES key file {file}"))?);
        out.push(RawAesKeyring::new(ns, name, key).map_err(|e| exit::fail(2, e.to_string(), None))?);
    }
    Ok(out)
}

/// Maps an ESDK error to the CLI's exit codes (docs/CLI.md).
fn fail(e: EsdkError) -> anyhow::Error {
    let (code, hint): (u8, Option<&str>) = match &e {
        EsdkError::Kms(_) | EsdkError::Io(_) => return anyhow::Error::new(e),
        EsdkError::NotEsdk | EsdkError::Malformed(_) | EsdkError::TrailingData | EsdkError::InvalidContext(_) => {
            (3, None)
        }
        EsdkError::CommitmentPolicy | EsdkError::UnsupportedSuite { .. } => {
            (10, Some("envseal opens ESDK messages of the committing suites 0x0478 and 0x0578 only (docs/ESDK.md)"))
        }
        EsdkError::UnsupportedVersion(_) | EsdkError::NonFramed => {
            (10, Some("see docs/ESDK.md for what envseal implements"))
        }
        EsdkError::TooManyDataKeys { .. } => (3, Some("raise --max-encrypted-data-keys if the message is trusted")),
        EsdkError::WrongContext(_) => (5, None),
        EsdkError::InvalidOptions(_) => (2, None),
        EsdkError::NoKeyOpened(_) | EsdkError::NotMine | EsdkError::WrongKey => (
            6,
            Some(
                "pass the key: --kms aws-kms:ARN (AWS credentials and AWS_ENDPOINT_URL from the environment) or --raw-aes-key",
            ),
        ),
        EsdkError::CommitmentMismatch
        | EsdkError::HeaderTampered
        | EsdkError::FrameTampered { .. }
        | EsdkError::BadSignature => (7, Some("the message was altered; nothing was released")),
        EsdkError::Truncated => (9, Some("the message is cut short; nothing was released")),
        _ => (1, None),
    };
    exit::fail(code, e.to_string(), hint)
}

/// `envseal encrypt --format esdk`.
pub async fn encrypt(
    path: &Path,
    output: Option<PathBuf>,
    context: &[(String, String)],
    kms: &KmsOpts,
    args: &EsdkArgs,
    json: bool,
) -> Result<ExitCode> {
    let raw = raw_keyrings(args)?;
    let s = super::settings(path, kms, context, None)?;
    let mut kms_keyrings = Vec::new();
    // Raw AES keys alone, unless a backend was asked for: no default keystore entry then.
    if raw.is_empty() || s.kms.1 != super::Source::Default {
        for (kms, key) in super::import::open_keys(&s)? {
            kms_keyrings.push(KmsKeyring::new(kms, key));
        }
    }
    let mut keyrings: Vec<&dyn Keyring> = kms_keyrings.iter().map(|k| k as &dyn Keyring).collect();
    keyrings.extend(raw.iter().map(|k| k as &dyn Keyring));
    let opts = EncryptOptions {
        suite: match args.algorithm {
            Some(EsdkSuite::Unsigned) => Suite::CommitKey,
            _ => Suite::CommitKeyEcdsaP384,
        },
        frame_length: args.frame_length.unwrap_or(envseal_esdk::header::DEFAULT_FRAME_LENGTH),
        context: s.context.clone(),
    };
    let input = fsio::open_input(path)?;
    let enc = envseal_esdk::begin_encrypt(&keyrings, &opts).await.map_err(fail)?;
    let keys: Vec<serde_json::Value> = enc
        .header()
        .edks
        .iter()
        .map(|e| serde_json::json!({ "provider_id": e.provider_id, "key": e.key_name() }))
        .collect();
    let out_path = match (output, fsio::is_std(path)) {
        (Some(p), _) => p,
        (None, true) => PathBuf::from("-"),
        (None, false) => path.to_path_buf(),
    };
    let summary = if fsio::is_std(&out_path) {
        let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        enc.encrypt(input, Interruptible(&mut out)).map_err(fail)?
    } else {
        let mut f = AtomicFile::create(&out_path, 0o644)?;
        let s = enc.encrypt(input, BufWriter::with_capacity(1 << 20, Interruptible(f.file()))).map_err(fail)?;
        f.commit()?;
        s
    };
    if !fsio::is_std(&out_path) {
        if json {
            let v = serde_json::json!({
                "path": out_path, "format": "esdk", "suite": opts.suite.name(),
                "frame_length": opts.frame_length, "plaintext_bytes": summary.plaintext_bytes, "keys": keys,
            });
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            eprintln!("envseal: wrote ESDK message {} ({})", out_path.display(), opts.suite.name());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The envseal backend name an encrypted data key's provider id stands for (the AWS backend's
/// name is the ESDK's provider id, `aws-kms`).
fn backend_of(provider_id: &str) -> Option<&str> {
    if provider_id == AWS_KMS_PROVIDER_ID {
        return Some(AWS_KMS_PROVIDER_ID);
    }
    provider_id.strip_prefix(ENVSEAL_PROVIDER_PREFIX)
}

/// `envseal decrypt` of an ESDK message; `input` starts at the first byte of the message.
pub async fn decrypt(
    mut input: impl Read,
    out_path: &Path,
    reading: &crate::trust::Reading,
    kms: &KmsOpts,
    args: &EsdkArgs,
) -> Result<ExitCode> {
    let opts = DecryptOptions {
        max_encrypted_data_keys: args.max_encrypted_data_keys.unwrap_or(envseal_esdk::header::DEFAULT_MAX_EDKS),
        required_context: reading
            .expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let header = envseal_esdk::read_header(&mut input, &opts).map_err(fail)?;
    let raw = raw_keyrings(args)?;
    // The backends the entries name (the CLI's usual rules: --kms first, else each backend
    // from its environment, never creating a keystore just to open a message).
    let entries: Vec<WrappedKey> = header
        .edks
        .iter()
        .filter_map(|e| {
            backend_of(&e.provider_id).map(|b| WrappedKey {
                backend: b.to_string(),
                key_id: e.key_name(),
                key_version: String::new(),
                blob: Vec::new(),
            })
        })
        .collect();
    let backends: Vec<Arc<dyn Kms>> = if entries.is_empty() {
        Vec::new()
    } else {
        match super::decrypt::backends_for_opening(&entries, kms, reading) {
            Ok(b) => b,
            // A raw AES key may still open the message.
            Err(e) if !raw.is_empty() => {
                eprintln!("envseal: warning: {e:#}");
                Vec::new()
            }
            Err(e) => return Err(e),
        }
    };
    // Full key ids given with --kms (AWS key ARNs) restrict their backend to those keys, as the
    // ESDK's strict keyrings do; otherwise any entry of the backend is tried (discovery).
    let strict: Vec<String> = kms
        .kms
        .iter()
        .filter_map(|u| {
            let (uri, key) = split_key(u);
            let named = match Uri::parse(uri) {
                Ok(Uri::Aws(k)) if !k.is_empty() => Some(k),
                _ => None,
            };
            key.map(str::to_string).or(named)
        })
        .filter(|k| k.starts_with("arn:") && k.contains(":key/"))
        .collect();
    let mut kms_keyrings = Vec::new();
    for b in backends {
        // The reader's trust (a rule that names keys, --allow-key) makes a backend strict too.
        let allowed: Vec<String> = match &reading.trust {
            envseal_core::entries::Trust::Allow(keys) => {
                keys.iter().filter(|k| k.backend == b.backend()).map(|k| k.key_id.clone()).collect()
            }
            _ => Vec::new(),
        };
        if allowed.iter().any(|k| k == "*") && strict.is_empty() {
            kms_keyrings.push(KmsKeyring::discovery(b));
        } else if !allowed.is_empty() {
            kms_keyrings.extend(allowed.iter().filter(|k| *k != "*").map(|k| KmsKeyring::new(b.clone(), k.clone())));
        } else if b.backend() == AWS_KMS_PROVIDER_ID && !strict.is_empty() {
            kms_keyrings.extend(strict.iter().map(|arn| KmsKeyring::new(b.clone(), arn.clone())));
        } else if !reading.trust.is_strict() {
            kms_keyrings.push(KmsKeyring::discovery(b));
        }
    }
    let mut keyrings: Vec<&dyn Keyring> = raw.iter().map(|k| k as &dyn Keyring).collect();
    keyrings.extend(kms_keyrings.iter().map(|k| k as &dyn Keyring));
    let dec = envseal_esdk::open(header, &keyrings, &opts).await.map_err(fail)?;
    if fsio::is_std(out_path) {
        let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        if dec.header().suite.is_signed() {
            // Nothing reaches stdout before the signature verified: the ciphertext is copied
            // to an anonymous temp file while it is checked, then decrypted from there.
            let mut spool = tempfile::tempfile().context("cannot create a spool file for the ciphertext")?;
            dec.decrypt_spooled(input, &mut spool, &mut Interruptible(&mut out)).map_err(fail)?;
        } else {
            dec.decrypt_streaming(input, &mut Interruptible(&mut out)).map_err(fail)?;
        }
        out.flush()?;
    } else {
        // Plaintext on disk only because the user asked; 0600 for a new file; renamed into
        // place only once the whole message verified.
        let mut f = AtomicFile::create(out_path, 0o600)?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, Interruptible(f.file()));
            dec.decrypt_to_staging(input, &mut w).map_err(fail)?;
            w.flush().with_context(|| format!("cannot write {}", out_path.display()))?;
        }
        f.commit()?;
    }
    Ok(ExitCode::SUCCESS)
}
