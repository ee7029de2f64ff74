//! `envseal import sops|dotenvx|sops-config`: take over files encrypted by sops or dotenvx
//! (docs/MIGRATING.md). The formats and their checks live in `envseal-migrate`; this module
//! finds keys and files, seals the result with the usual settings and writes it atomically.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use envseal_core::container::Recipient;
use envseal_core::{Engine, Kms};
use envseal_migrate::MigrateError;
use envseal_migrate::sops::{MasterKey, SopsFile, SopsFormat};
use envseal_stores::{Document, Format, SealSpec};

use super::{Settings, Source};
use crate::backend::{self, Uri};
use crate::cmd::encrypt::split_key;
use crate::fsio;
use crate::{KmsOpts, exit, parse_kv};

/// `envseal import` subcommands.
#[derive(Subcommand, Debug)]
pub enum ImportCmd {
    /// Decrypt a sops-encrypted .env, JSON, YAML or INI file natively (sops's MAC checked) and
    /// seal it with envseal; comments and layout kept.
    #[command(
        after_help = "Examples:\n  envseal import sops secrets.enc.yaml -o secrets.yaml\n  envseal import sops .env --in-place --same-keys\n  envseal import sops -r config/ --in-place --age-identity ~/.config/sops/age/keys.txt\n\nKeys: age identities from --age-identity, SOPS_AGE_KEY, SOPS_AGE_KEY_FILE or ~/.config/sops/age/keys.txt;\nAWS KMS (AWS SDK chain, AWS_ENDPOINT_URL) and Vault/OpenBao Transit (VAULT_TOKEN) entries through\nenvseal's backends. PGP, GCP KMS and Azure Key Vault entries are not read. See docs/MIGRATING.md."
    )]
    Sops(SopsArgs),
    /// Decrypt dotenvx `encrypted:` values (private key from .env.keys) and seal the file with envseal.
    #[command(
        after_help = "Examples:\n  envseal import dotenvx .env --in-place\n  envseal import dotenvx .env.production --private-key-file secrets/.env.keys -o .env.production.sealed\n\nThe private key: the environment variable DOTENV_PRIVATE_KEY[_ENV], else --private-key-file\n(default: .env.keys beside the file)."
    )]
    Dotenvx(DotenvxArgs),
    /// Translate a .sops.yaml's creation rules into .envseal.toml rules.
    #[command(
        name = "sops-config",
        after_help = "Examples:\n  envseal import sops-config                 # .sops.yaml -> .envseal.toml beside it\n  envseal import sops-config infra/.sops.yaml -o -"
    )]
    SopsConfig(SopsConfigArgs),
}

/// sops input types.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SopsType {
    /// KEY=value lines.
    Dotenv,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// INI.
    Ini,
}

/// Where and how an imported file is sealed (shared by the importers).
#[derive(Args, Debug)]
pub struct SealTo {
    /// Write the sealed file here (`-` for stdout; default stdout unless --in-place).
    #[arg(short, long, value_name = "OUT", conflicts_with = "in_place")]
    output: Option<PathBuf>,
    /// Replace the input file with the sealed one.
    #[arg(long)]
    in_place: bool,
    /// Encryption context entry (repeatable).
    #[arg(long = "context", value_name = "K=V", value_parser = parse_kv)]
    context: Vec<(String, String)>,
    /// Values whose dotted key path matches stay in clear (default: the .envseal.toml rule's;
    /// for sops, else what sops left in clear through its unencrypted suffix/regex).
    #[arg(long, value_name = "REGEX")]
    plain_keys: Option<String>,
    #[command(flatten)]
    kms: KmsOpts,
    /// Print a JSON summary on stdout (when the output is a file).
    #[arg(long)]
    json: bool,
}

/// Arguments of `import sops`.
#[derive(Args, Debug)]
pub struct SopsArgs {
    /// The sops file (or, with -r, a directory).
    path: PathBuf,
    #[command(flatten)]
    to: SealTo,
    /// Import every sops file under the directory (with --in-place).
    #[arg(short, long, requires = "in_place")]
    recursive: bool,
    /// Seal with the sops file's own AWS KMS and Vault Transit keys (age and PGP have no envseal
    /// backend and are left out, with a warning).
    #[arg(long, conflicts_with = "kms")]
    same_keys: bool,
    /// age identity file (repeatable; default SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, ~/.config/sops/age/keys.txt).
    #[arg(long = "age-identity", value_name = "FILE")]
    age_identities: Vec<PathBuf>,
    /// Input type when the name does not say.
    #[arg(long = "input-type", value_enum)]
    input_type: Option<SopsType>,
}

/// Arguments of `import dotenvx`.
#[derive(Args, Debug)]
pub struct DotenvxArgs {
    /// The dotenvx .env file.
    path: PathBuf,
    #[command(flatten)]
    to: SealTo,
    /// The dotenvx keys file (default: .env.keys beside the file).
    #[arg(long, value_name = "FILE")]
    private_key_file: Option<PathBuf>,
}

/// Arguments of `import sops-config`.
#[derive(Args, Debug)]
pub struct SopsConfigArgs {
    /// The sops configuration.
    #[arg(default_value = ".sops.yaml")]
    path: PathBuf,
    /// Where to write the rules (`-` for stdout; default .envseal.toml beside the input).
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

/// Runs `envseal import`.
pub async fn run(cmd: ImportCmd) -> Result<ExitCode> {
    match cmd {
        ImportCmd::Sops(a) if a.recursive => sops_tree(&a).await,
        ImportCmd::Sops(a) => {
            let out = target(&a.path, a.to.output.as_deref(), a.to.in_place)?;
            sops_file(&a, &a.path, &out).await
        }
        ImportCmd::Dotenvx(a) => dotenvx(&a).await,
        ImportCmd::SopsConfig(a) => sops_config(&a),
    }
}

/// Exit codes for the importers' errors (docs/CLI.md).
fn fail(e: MigrateError) -> anyhow::Error {
    let (code, hint): (u8, Option<&str>) = match &e {
        MigrateError::NotSops | MigrateError::NotDotenvx | MigrateError::Malformed(_) | MigrateError::Store(_) => {
            (3, None)
        }
        MigrateError::Unsupported(_) => (10, Some("see docs/MIGRATING.md for what envseal reads")),
        MigrateError::NoKeyOpened(_) => (
            6,
            Some(
                "give an age identity (--age-identity, SOPS_AGE_KEY_FILE) or the KMS credentials (AWS SDK chain, VAULT_TOKEN)",
            ),
        ),
        MigrateError::WrongKey(_) => (6, Some("check DOTENV_PRIVATE_KEY / --private-key-file")),
        MigrateError::ValueTampered(_) => (7, Some("the file was altered after it was encrypted; nothing was written")),
        MigrateError::MacMismatch => (8, Some("the file was altered after it was encrypted; nothing was written")),
        _ => (1, None),
    };
    exit::fail(code, e.to_string(), hint)
}

/// Where the result goes: `-o`, else in place, else stdout.
fn target(input: &Path, output: Option<&Path>, in_place: bool) -> Result<PathBuf> {
    if in_place && fsio::is_std(input) {
        return Err(exit::fail(2, "--in-place needs a file, not `-`", None));
    }
    Ok(match (output, in_place) {
        (Some(p), _) => p.to_path_buf(),
        (None, true) => input.to_path_buf(),
        (None, false) => PathBuf::from("-"),
    })
}

/// Opens the backends and keys of the settings (`URI#KEY`, else the key the URI names, else
/// --key / config / default), as `encrypt` does.
pub(crate) fn open_keys(s: &Settings) -> Result<Vec<(Arc<dyn Kms>, String)>> {
    let mut out = Vec::new();
    for u in &s.kms.0 {
        let (uri, key) = split_key(u);
        let o = backend::open_with_key(&Uri::parse(uri)?)?;
        let key = key.map(str::to_string).or(o.key.filter(|_| s.key.1 != Source::Flag)).unwrap_or(s.key.0.clone());
        out.push((o.kms, key));
    }
    Ok(out)
}

/// Seals a plaintext document with the settings and writes it (atomically) to `out`.
async fn seal_and_write(
    mut doc: Box<dyn Document>,
    s: &Settings,
    out: &Path,
) -> Result<(usize, Vec<serde_json::Value>)> {
    let keys = open_keys(s)?;
    let recipients: Vec<Recipient<'_>> = keys.iter().map(|(k, key)| Recipient { kms: k.as_ref(), key }).collect();
    let padding = s.rule.as_ref().and_then(|m| m.rule.padding).unwrap_or(envseal_core::values::DEFAULT_PADDING);
    let spec = SealSpec {
        recipients: &recipients,
        context: super::context(&s.context)?,
        plain_keys: s.plain_keys.clone(),
        padding,
        engine: Engine::default(),
    };
    let u = envseal_stores::seal(doc.as_mut(), &spec).await?;
    fsio::write_output(out, &u.render_checked(doc.as_ref())?, 0o644)?;
    let sealed = doc.entries().iter().filter(|e| envseal_core::values::is_sealed(&e.text)).count();
    Ok((sealed, u.meta.keys.iter().map(super::encrypt::entry_json).collect()))
}

fn sops_format(a: &SopsArgs, path: &Path) -> Result<SopsFormat> {
    if let Some(t) = a.input_type {
        return Ok(match t {
            SopsType::Dotenv => SopsFormat::Dotenv,
            SopsType::Json => SopsFormat::Json,
            SopsType::Yaml => SopsFormat::Yaml,
            SopsType::Ini => SopsFormat::Ini,
        });
    }
    SopsFormat::from_path(path).ok_or_else(|| {
        exit::fail(3, format!("cannot tell the format of {} from its name", path.display()), Some("pass --input-type"))
    })
}

/// The age identities: --age-identity files, else SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, and
/// sops's default key file.
fn age_identities(a: &SopsArgs) -> Result<Vec<envseal_migrate::sops::AgeIdentity>> {
    let mut texts = Vec::new();
    for f in &a.age_identities {
        texts.push(fsio::read_text(f)?);
    }
    if texts.is_empty() {
        if let Ok(k) = std::env::var("SOPS_AGE_KEY") {
            texts.push(k);
        }
        let file = std::env::var_os("SOPS_AGE_KEY_FILE").map(PathBuf::from).or_else(|| {
            let base = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
            Some(base.join("sops/age/keys.txt")).filter(|p| p.is_file())
        });
        if let Some(f) = file {
            texts.push(fsio::read_text(&f)?);
        }
    }
    let mut out = Vec::new();
    for t in texts {
        out.extend(envseal_migrate::sops::age_identities(&t).map_err(fail)?);
    }
    Ok(out)
}

/// Opens envseal's backend for a sops key: AWS KMS from the SDK chain, Transit from the
/// address the file names (token from VAULT_TOKEN / BAO_TOKEN).
fn open_for_sops(mk: &MasterKey) -> Result<Option<Arc<dyn Kms>>, String> {
    match mk {
        MasterKey::AwsKms { .. } => backend::open_by_name("aws-kms").map_err(|e| format!("{e:#}")),
        MasterKey::VaultTransit { .. } => {
            let Some(uri) = mk.envseal_uri() else { return Ok(None) };
            Uri::parse(&uri).and_then(|u| backend::open(&u)).map(Some).map_err(|e| format!("{e:#}"))
        }
        _ => Ok(None),
    }
}

async fn sops_file(a: &SopsArgs, path: &Path, out: &Path) -> Result<ExitCode> {
    let format = sops_format(a, path)?;
    let content = fsio::read_document(path)?;
    let file = SopsFile::parse(format, &content).map_err(fail)?;
    let identities = age_identities(a)?;
    let data_key = file.data_key(&identities, &open_for_sops).await.map_err(fail)?;
    let plain = file.decrypt(&data_key).map_err(fail)?;
    drop(data_key);
    let out_format = match (fsio::is_std(out), Format::from_path(out)) {
        (false, Some(f)) => f,
        _ => match format {
            SopsFormat::Dotenv => Format::Dotenv,
            SopsFormat::Json => Format::Json,
            SopsFormat::Yaml => Format::Yaml,
            SopsFormat::Ini if !fsio::is_std(out) => {
                return Err(exit::fail(
                    2,
                    "an INI file becomes JSON or YAML: name the output *.json or *.yaml with -o",
                    None,
                ));
            }
            SopsFormat::Ini => Format::Json,
            _ => return Err(exit::fail(10, format!("sops {} files are not supported", format.name()), None)),
        },
    };
    let doc = plain.to_document(out_format).map_err(fail)?;
    // Settings for the file being written (its .envseal.toml rule), flags first.
    let rules_path = if fsio::is_std(out) { path } else { out };
    let mut kms = a.to.kms.clone();
    let mut context = a.to.context.clone();
    if a.same_keys {
        let keys: Vec<MasterKey> = file.master_keys().into_iter().flatten().collect();
        kms.kms = keys.iter().filter_map(MasterKey::envseal_uri).collect();
        for k in keys.iter().filter(|k| k.envseal_uri().is_none()) {
            eprintln!("envseal: warning: {} has no envseal backend; the sealed file does not carry it", k.describe());
        }
        if kms.kms.is_empty() {
            return Err(exit::fail(
                6,
                "--same-keys: none of the sops file's keys maps to an envseal backend (age and PGP have none)",
                Some("name envseal keys with --kms, or a .envseal.toml rule"),
            ));
        }
        let contexts: Vec<_> = keys
            .iter()
            .filter_map(|k| match k {
                MasterKey::AwsKms { context, .. } if !context.is_empty() => Some(context.clone()),
                _ => None,
            })
            .collect();
        if let Some(c) = contexts.first().filter(|c| contexts.iter().all(|x| x == *c)) {
            for (k, v) in c {
                if !context.iter().any(|(ck, _)| ck == k) {
                    context.push((k.clone(), v.clone()));
                }
            }
        }
    }
    let mut s = super::settings(rules_path, &kms, &context, a.to.plain_keys.clone())?;
    if s.plain_keys.is_none() {
        s.plain_keys = plain.plain_keys.clone();
    }
    for w in &plain.warnings {
        eprintln!("envseal: warning: {}: {w}", path.display());
    }
    let (sealed, keys) = seal_and_write(doc, &s, out).await?;
    if !fsio::is_std(out) {
        if a.to.json {
            let v = serde_json::json!({
                "source": path, "path": out, "from": "sops", "format": out_format.name(),
                "values_decrypted": plain.decrypted_count(), "values_sealed": sealed, "keys": keys,
            });
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            eprintln!(
                "envseal: imported {} (sops {}, {} value(s) decrypted, MAC verified) into {} ({sealed} value(s) sealed)",
                path.display(),
                format.name(),
                plain.decrypted_count(),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `import sops -r DIR --in-place`: every sops file under DIR (hidden directories skipped).
async fn sops_tree(a: &SopsArgs) -> Result<ExitCode> {
    let mut stack = vec![a.path.clone()];
    let (mut done, mut failed) = (0usize, 0usize);
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let hidden_dir = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') && p.is_dir());
            if hidden_dir {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Some(format) = SopsFormat::from_path(&p) else { continue };
            if format == SopsFormat::Ini {
                eprintln!(
                    "envseal: skipped {}: an INI file cannot be replaced in place (import it with -o FILE.json)",
                    p.display()
                );
                continue;
            }
            // Only files sops encrypted.
            let Ok(content) = fsio::read_document(&p) else { continue };
            if matches!(SopsFile::parse(format, &content), Err(MigrateError::NotSops | MigrateError::Malformed(_))) {
                continue;
            }
            match Box::pin(sops_file(a, &p, &p)).await {
                Ok(_) => done += 1,
                Err(e) => {
                    failed += 1;
                    eprintln!("envseal: error: {}: {e:#}", p.display());
                }
            }
        }
    }
    eprintln!(
        "envseal: imported {done} sops file(s){}",
        if failed > 0 { format!(", {failed} failed") } else { String::new() }
    );
    if failed > 0 {
        return Err(exit::fail(
            1,
            format!("{failed} file(s) could not be imported"),
            Some("each error is printed above; imported files were replaced, the others left as they were"),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

async fn dotenvx(a: &DotenvxArgs) -> Result<ExitCode> {
    let out = target(&a.path, a.to.output.as_deref(), a.to.in_place)?;
    let content = fsio::read_document(&a.path)?;
    let file_name = a.path.file_name().and_then(|n| n.to_str()).unwrap_or(".env");
    let name = envseal_migrate::dotenvx::private_key_name(file_name);
    let key_text = match std::env::var(&name) {
        Ok(k) if !k.is_empty() => zeroize::Zeroizing::new(k),
        _ => {
            let keys_file = a
                .private_key_file
                .clone()
                .unwrap_or_else(|| a.path.parent().unwrap_or(Path::new(".")).join(".env.keys"));
            let text = fsio::read_document(&keys_file).map_err(|e| {
                exit::fail(
                    6,
                    format!("no {name} in the environment, and {e:#}"),
                    Some("pass --private-key-file or set it"),
                )
            })?;
            let doc = envseal_stores::parse(Format::Dotenv, &text)?;
            let entry = doc.entries().into_iter().rev().find(|e| e.path.display() == name).ok_or_else(|| {
                exit::fail(
                    6,
                    format!("{} has no {name}", keys_file.display()),
                    Some("the keys file dotenvx wrote for this file"),
                )
            })?;
            zeroize::Zeroizing::new(doc.decode_value(&entry.text)?)
        }
    };
    let keys = envseal_migrate::dotenvx::PrivateKeys::parse(&key_text).map_err(fail)?;
    drop(key_text);
    let imported = envseal_migrate::dotenvx::import(&content, &keys).map_err(fail)?;
    let rules_path = if fsio::is_std(&out) { a.path.as_path() } else { out.as_path() };
    let s = super::settings(rules_path, &a.to.kms, &a.to.context, a.to.plain_keys.clone())?;
    let (decrypted, plain) = (imported.decrypted, imported.plain);
    let (sealed, keys) = seal_and_write(imported.document, &s, &out).await?;
    if !fsio::is_std(&out) {
        if a.to.json {
            let v = serde_json::json!({
                "source": a.path, "path": out, "from": "dotenvx", "format": "dotenv",
                "values_decrypted": decrypted, "values_plain_before": plain, "values_sealed": sealed, "keys": keys,
            });
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            eprintln!(
                "envseal: imported {} (dotenvx, {decrypted} value(s) decrypted) into {} ({sealed} value(s) sealed); the dotenvx private key can now be retired",
                a.path.display(),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sops_config(a: &SopsConfigArgs) -> Result<ExitCode> {
    let text = fsio::read_document(&a.path)?;
    let t = envseal_migrate::sops::config::translate(&text).map_err(fail)?;
    let name = a.path.file_name().and_then(|n| n.to_str()).unwrap_or(".sops.yaml");
    let toml = t.to_toml(name);
    let out = a.output.clone().unwrap_or_else(|| a.path.with_file_name(crate::config::FILE_NAME));
    if !fsio::is_std(&out) && out.exists() && !a.force {
        return Err(exit::fail(
            3,
            format!("{} exists", out.display()),
            Some("pass --force to replace it, or -o - to print"),
        ));
    }
    for w in &t.warnings {
        eprintln!("envseal: warning: {w}");
    }
    fsio::write_output(&out, toml.as_bytes(), 0o644)?;
    if !fsio::is_std(&out) {
        eprintln!("envseal: wrote {} rule(s) to {}", t.rules.len(), out.display());
    }
    Ok(ExitCode::SUCCESS)
}
