//! Reading sops-encrypted files natively: .env, JSON, YAML and INI (sops 3.x, `AES256_GCM`
//! values). [`SopsFile::parse`] reads the structure and metadata; [`SopsFile::data_key`] unwraps
//! the data key with age identities or an envseal KMS backend; [`SopsFile::decrypt`] checks
//! sops's MAC and decrypts every value, and only then returns the plaintext, which
//! [`Decrypted::to_document`] turns into a plaintext envseal document, ready to be sealed.

pub mod cipher;
pub mod config;
pub mod meta;

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;

use envseal_core::values::{KeyPath, PathSegment, ValueType};
use envseal_core::{DataKey, EncryptionContext, Kms, WrappedKey};
use envseal_stores::{Document, Format};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use self::cipher::SopsType;
use self::meta::Metadata;
use crate::MigrateError;

/// sops's `MACOnlyEncryptedInitialization` (SHA-256 of "sops"): the first bytes hashed when the
/// MAC covers encrypted values only.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b, 0x0b, 0x97, 0x5b,
    0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// The file formats sops writes that envseal reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SopsFormat {
    /// `KEY=value` lines.
    Dotenv,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// INI.
    Ini,
}

impl SopsFormat {
    /// The format a file name suggests (as sops decides it): `.json`, `.yaml`/`.yml`, `.ini`,
    /// `.env`/`.env.*`/`*.env`.
    pub fn from_path(path: &std::path::Path) -> Option<SopsFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("json") => Some(SopsFormat::Json),
            Some("yaml" | "yml") => Some(SopsFormat::Yaml),
            Some("ini") => Some(SopsFormat::Ini),
            Some("env") => Some(SopsFormat::Dotenv),
            _ if name == ".env" || name.starts_with(".env.") => Some(SopsFormat::Dotenv),
            _ => None,
        }
    }

    /// `dotenv`, `json`, `yaml`, `ini`.
    pub fn name(self) -> &'static str {
        match self {
            SopsFormat::Dotenv => "dotenv",
            SopsFormat::Json => "json",
            SopsFormat::Yaml => "yaml",
            SopsFormat::Ini => "ini",
        }
    }
}

/// One value of the file.
#[derive(Clone, Debug)]
struct Leaf {
    /// Where it goes in the envseal document.
    path: KeyPath,
    /// Its mapping keys (sops's path: sequence indices are not part of it).
    keys: Vec<String>,
    /// Its type as stored.
    ty: ValueType,
    /// Its text as stored (for .env, with `\n` decoded as sops does).
    text: String,
}

/// A line of a sops .env file.
#[derive(Clone, Debug)]
enum DotenvLine {
    Comment(String),
    Pair(String, String),
}

/// A parsed sops file (nothing verified yet).
#[derive(Debug)]
pub struct SopsFile {
    format: SopsFormat,
    source: String,
    leaves: Vec<Leaf>,
    dotenv: Vec<DotenvLine>,
    /// The metadata.
    pub metadata: Metadata,
}

/// A master key named in the metadata, as a caller needs it to open a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MasterKey {
    /// An age recipient.
    Age {
        /// `age1...`
        recipient: String,
    },
    /// An AWS KMS key.
    AwsKms {
        /// The key ARN.
        arn: String,
        /// The KMS encryption context sops used.
        context: std::collections::BTreeMap<String, String>,
    },
    /// A Vault/OpenBao Transit key.
    VaultTransit {
        /// `https://host:port`.
        address: String,
        /// The Transit mount.
        mount: String,
        /// The key name.
        key: String,
    },
    /// A key type envseal does not read (PGP, GCP KMS, Azure Key Vault).
    Unsupported {
        /// `pgp`, `gcp_kms`, `azure_kv`.
        kind: &'static str,
    },
}

impl MasterKey {
    /// The envseal backend URI for this key, where there is one (`aws-kms:ARN`,
    /// `vault-transit[+http]://HOST/MOUNT/KEY`).
    pub fn envseal_uri(&self) -> Option<String> {
        match self {
            MasterKey::AwsKms { arn, .. } => Some(format!("aws-kms:{arn}")),
            MasterKey::VaultTransit { address, mount, key } => {
                let (scheme, host) = match address.split_once("://") {
                    Some(("http", h)) => ("vault-transit+http", h),
                    Some((_, h)) => ("vault-transit", h),
                    None => ("vault-transit", address.as_str()),
                };
                Some(format!("{scheme}://{}/{}/{key}", host.trim_end_matches('/'), mount.trim_matches('/')))
            }
            _ => None,
        }
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            MasterKey::Age { recipient } => format!("age {recipient}"),
            MasterKey::AwsKms { arn, .. } => format!("aws-kms {arn}"),
            MasterKey::VaultTransit { .. } => format!("vault {}", self.envseal_uri().unwrap_or_default()),
            MasterKey::Unsupported { kind } => kind.to_string(),
        }
    }
}

/// An age identity (X25519 `AGE-SECRET-KEY-1...`, as sops uses).
pub type AgeIdentity = Box<dyn age::Identity + Send + Sync>;

/// Parses age identities (an age identity file: `AGE-SECRET-KEY-1...` lines and comments), as
/// `SOPS_AGE_KEY_FILE` / `SOPS_AGE_KEY` hold them.
///
/// # Errors
/// [`MigrateError::Malformed`] (never quoting the keys).
pub fn age_identities(text: &str) -> Result<Vec<AgeIdentity>, MigrateError> {
    age::IdentityFile::from_buffer(text.as_bytes())
        .and_then(|f| f.into_identities().map_err(|e| std::io::Error::other(e.to_string())))
        .map_err(|e| MigrateError::Malformed(format!("not an age identity file: {}", e.kind())))
}

/// Opens the envseal backend for a sops master key (`Ok(None)`: not available here).
pub type BackendOpener<'a> = dyn Fn(&MasterKey) -> Result<Option<Arc<dyn Kms>>, String> + Send + Sync + 'a;

/// A decrypted, MAC-verified sops file.
pub struct Decrypted {
    format: SopsFormat,
    source: String,
    /// Decrypted values, by leaf index.
    values: Vec<Option<(ValueType, Zeroizing<String>)>>,
    leaves: Vec<Leaf>,
    dotenv: Vec<DotenvLine>,
    /// Decrypted comments: (stored `ENC[...]` text, plaintext).
    comments: Vec<(String, Zeroizing<String>)>,
    /// What the caller should know (comments now in clear, settings without an equivalent).
    pub warnings: Vec<String>,
    /// A plain-keys rule (whole JSON pointers, FORMAT.md §10.4) that keeps in clear exactly the
    /// values sops left unencrypted, if any.
    pub plain_keys: Option<String>,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted").field("format", &self.format).field("values", &self.values.len()).finish()
    }
}

impl SopsFile {
    /// Parses a sops file of `format`.
    ///
    /// # Errors
    /// [`MigrateError::NotSops`] without sops metadata; [`MigrateError::Malformed`];
    /// [`MigrateError::Unsupported`] for settings envseal does not implement (comment regexes).
    pub fn parse(format: SopsFormat, content: &[u8]) -> Result<SopsFile, MigrateError> {
        let source = String::from_utf8(content.to_vec()).map_err(|_| MigrateError::Malformed("not UTF-8".into()))?;
        let (leaves, dotenv, meta_value) = match format {
            SopsFormat::Dotenv => parse_dotenv(&source)?,
            SopsFormat::Ini => parse_ini(&source)?,
            SopsFormat::Json | SopsFormat::Yaml => parse_tree(format, content)?,
        };
        let metadata = Metadata::from_value(meta_value.ok_or(MigrateError::NotSops)?)?;
        if metadata.unencrypted_comment_regex.is_some() || metadata.encrypted_comment_regex.is_some() {
            return Err(MigrateError::Unsupported("sops files using (un)encrypted_comment_regex".into()));
        }
        Ok(SopsFile { format, source, leaves, dotenv, metadata })
    }

    /// The format.
    pub fn format(&self) -> SopsFormat {
        self.format
    }

    /// Every master key of the file, in sops's decryption order (age first), per key group.
    pub fn master_keys(&self) -> Vec<Vec<MasterKey>> {
        self.metadata
            .groups()
            .iter()
            .map(|g| {
                let mut v: Vec<MasterKey> = Vec::new();
                v.extend(g.age.iter().map(|a| MasterKey::Age { recipient: a.recipient.clone() }));
                v.extend(g.kms.iter().map(|k| MasterKey::AwsKms { arn: k.arn.clone(), context: k.context.clone() }));
                v.extend(g.hc_vault.iter().map(|h| MasterKey::VaultTransit {
                    address: h.vault_address.clone(),
                    mount: h.engine_path.clone(),
                    key: h.key_name.clone(),
                }));
                v.extend(g.pgp.iter().map(|_| MasterKey::Unsupported { kind: "pgp" }));
                v.extend(g.gcp_kms.iter().map(|_| MasterKey::Unsupported { kind: "gcp_kms" }));
                v.extend(g.azure_kv.iter().map(|_| MasterKey::Unsupported { kind: "azure_kv" }));
                v
            })
            .collect()
    }

    /// Unwraps the file's data key: with the age identities, else through the backends
    /// `open` gives for the AWS KMS and Vault Transit entries. PGP, GCP and Azure entries are
    /// not read.
    ///
    /// # Errors
    /// [`MigrateError::Unsupported`] for several key groups (Shamir); [`MigrateError::NoKeyOpened`]
    /// listing why each entry failed.
    pub async fn data_key(
        &self,
        identities: &[AgeIdentity],
        open: &BackendOpener<'_>,
    ) -> Result<DataKey, MigrateError> {
        let groups = self.metadata.groups();
        if groups.len() != 1 {
            return Err(MigrateError::Unsupported(format!(
                "sops files with {} key groups (Shamir secret sharing)",
                groups.len()
            )));
        }
        let g = &groups[0];
        let mut attempts = Vec::new();
        for a in &g.age {
            if identities.is_empty() {
                attempts
                    .push(format!("age {}: no age identity given (--age-identity, SOPS_AGE_KEY_FILE)", a.recipient));
                continue;
            }
            match age_unwrap(&a.enc, identities) {
                Ok(k) => return Ok(k),
                Err(e) => attempts.push(format!("age {}: {e}", a.recipient)),
            }
        }
        for k in &g.kms {
            let mk = MasterKey::AwsKms { arn: k.arn.clone(), context: k.context.clone() };
            let blob = match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, k.enc.trim()) {
                Ok(b) => b,
                Err(_) => {
                    attempts.push(format!("aws-kms {}: the wrapped key is not base64", k.arn));
                    continue;
                }
            };
            let wrapped =
                WrappedKey { backend: "aws-kms".into(), key_id: k.arn.clone(), key_version: String::new(), blob };
            match kms_unwrap(&mk, &wrapped, &k.context, open).await {
                Ok(d) => return Ok(d),
                Err(e) => attempts.push(format!("aws-kms {}: {e}", k.arn)),
            }
        }
        for h in &g.hc_vault {
            let mk = MasterKey::VaultTransit {
                address: h.vault_address.clone(),
                mount: h.engine_path.clone(),
                key: h.key_name.clone(),
            };
            let version = h
                .enc
                .strip_prefix("vault:v")
                .and_then(|r| r.split_once(':'))
                .map(|(v, _)| v.to_string())
                .unwrap_or_default();
            let wrapped = WrappedKey {
                backend: "vault-transit".into(),
                key_id: h.key_name.clone(),
                key_version: version,
                blob: h.enc.as_bytes().to_vec(),
            };
            match kms_unwrap(&mk, &wrapped, &Default::default(), open).await {
                Ok(d) => return Ok(d),
                Err(e) => attempts.push(format!("{}: {e}", mk.describe())),
            }
        }
        for (kind, n) in [("pgp", g.pgp.len()), ("gcp_kms", g.gcp_kms.len()), ("azure_kv", g.azure_kv.len())] {
            if n > 0 {
                attempts.push(format!("{kind} ({n} key(s)): not supported by envseal"));
            }
        }
        Err(MigrateError::NoKeyOpened(attempts))
    }

    /// Checks sops's MAC and decrypts every value and comment with `data_key`. Nothing is
    /// returned unless the MAC matches.
    ///
    /// # Errors
    /// [`MigrateError::ValueTampered`], [`MigrateError::MacMismatch`],
    /// [`MigrateError::Malformed`] (e.g. a value left in clear where sops's rules say it must
    /// be encrypted).
    pub fn decrypt(&self, data_key: &DataKey) -> Result<Decrypted, MigrateError> {
        let m = &self.metadata;
        let rules = Rules::new(m)?;
        let mac_only = m.mac_only_encrypted.unwrap_or(false);
        let mut mac = Sha512::new();
        if mac_only {
            mac.update(MAC_ONLY_ENCRYPTED_INIT);
        }
        let mut values = Vec::with_capacity(self.leaves.len());
        // The values sops left in clear, as whole JSON pointers: envseal's plain-keys rule for
        // exactly these (FORMAT.md §10.4).
        let mut in_clear = Vec::new();
        for leaf in &self.leaves {
            let where_ = leaf.path.display();
            if leaf.ty == ValueType::Null {
                values.push(None);
                continue;
            }
            let encrypted = rules.encrypted(&leaf.keys);
            if !encrypted {
                in_clear.push(regex::escape(&leaf.path.pointer()));
                if !mac_only {
                    mac.update(mac_bytes(self.format, leaf.ty, &leaf.text).as_bytes());
                }
                values.push(None);
                continue;
            }
            if leaf.ty == ValueType::Str && leaf.text.is_empty() {
                // sops stores empty strings as they are.
                values.push(Some((ValueType::Str, Zeroizing::new(String::new()))));
                continue;
            }
            if leaf.ty != ValueType::Str || !cipher::is_encrypted(&leaf.text) {
                return Err(MigrateError::Malformed(format!(
                    "{where_} is in clear, but the file's sops rules say it is encrypted (added after encryption?)"
                )));
            }
            let (ty, plain) = cipher::decrypt(&leaf.text, data_key, &cipher::aad(&leaf.keys), &where_)?;
            mac.update(&plain[..]);
            let text = Zeroizing::new(
                String::from_utf8(plain.to_vec())
                    .map_err(|_| MigrateError::Malformed(format!("{where_}: decrypted value is not UTF-8")))?,
            );
            let ty = match ty {
                SopsType::Str | SopsType::Bytes => ValueType::Str,
                SopsType::Int | SopsType::Float => ValueType::Num,
                SopsType::Bool => ValueType::Bool,
                SopsType::Comment => {
                    return Err(MigrateError::Malformed(format!("{where_}: a comment stored as a value")));
                }
            };
            let text = if ty == ValueType::Bool { Zeroizing::new(text.to_ascii_lowercase()) } else { text };
            values.push(Some((ty, text)));
        }
        let computed = hex::encode_upper(mac.finalize());
        let (_, stored) = cipher::decrypt(&m.mac, data_key, &go_rfc3339(&m.lastmodified), "sops mac")
            .map_err(|_| MigrateError::MacMismatch)?;
        if !bool::from(computed.as_bytes().ct_eq(&stored[..])) {
            return Err(MigrateError::MacMismatch);
        }
        // Comments are outside sops's MAC; each is bound to the mapping it sits in.
        let mut comments = Vec::new();
        let mut warnings = Vec::new();
        let mut aads: BTreeSet<String> = BTreeSet::new();
        for l in &self.leaves {
            for n in 0..=l.keys.len() {
                aads.insert(cipher::aad(&l.keys[..n]));
            }
        }
        aads.insert(":".into());
        for c in self.encrypted_comments() {
            let found = aads.iter().find_map(|a| cipher::decrypt(&c, data_key, a, "comment").ok());
            match found {
                Some((SopsType::Comment, p)) => {
                    let p = String::from_utf8(p.to_vec())
                        .map_err(|_| MigrateError::Malformed("comment not UTF-8".into()))?;
                    if p.contains(['\n', '\r']) {
                        return Err(MigrateError::Malformed("a decrypted comment spans several lines".into()));
                    }
                    comments.push((c, Zeroizing::new(p)));
                }
                _ => warnings.push("a comment could not be decrypted and is kept as sops wrote it".into()),
            }
        }
        if !comments.is_empty() {
            warnings.push(format!(
                "{} comment(s) that sops had encrypted are now in clear (envseal seals values, not comments)",
                comments.len()
            ));
        }
        if self.format == SopsFormat::Ini
            && self.source.lines().any(|l| matches!(l.trim_start().chars().next(), Some(';' | '#')))
        {
            warnings.push("INI comments are not carried over".into());
        }
        if m.encrypted_suffix.is_some() || m.encrypted_regex.is_some() {
            warnings.push(
                "the file used encrypted_suffix/encrypted_regex: envseal seals every value except those matching the plain-keys rule"
                    .into(),
            );
        }
        Ok(Decrypted {
            format: self.format,
            source: self.source.clone(),
            values,
            leaves: self.leaves.clone(),
            dotenv: self.dotenv.clone(),
            comments,
            warnings,
            plain_keys: (!in_clear.is_empty()).then(|| in_clear.join("|")),
        })
    }

    /// The `ENC[...]` comments of the file, as stored.
    fn encrypted_comments(&self) -> Vec<String> {
        match self.format {
            SopsFormat::Dotenv => self
                .dotenv
                .iter()
                .filter_map(|l| match l {
                    DotenvLine::Comment(c) if cipher::is_encrypted(c) => Some(c.clone()),
                    _ => None,
                })
                .collect(),
            SopsFormat::Yaml => self
                .source
                .lines()
                .filter_map(|l| l.trim().strip_prefix('#'))
                .filter(|c| cipher::is_encrypted(c) && c.ends_with("type:comment]"))
                .map(str::to_string)
                .collect(),
            SopsFormat::Json | SopsFormat::Ini => Vec::new(),
        }
    }
}

/// Go's `time.Time.Format(time.RFC3339)` of a parsed RFC 3339 timestamp: fractional seconds
/// dropped, a zero offset written `Z` (the MAC's additional data is this string).
fn go_rfc3339(s: &str) -> String {
    let s = s.trim();
    let (main, zone) = match s.find(['Z', 'z', '+']).or_else(|| s.rfind('-').filter(|i| *i > 10)) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let main = main.split('.').next().unwrap_or(main);
    let zone = match zone {
        "z" | "Z" | "+00:00" | "-00:00" => "Z",
        z => z,
    };
    format!("{main}{zone}")
}

/// sops's `ToBytes` of a value left in clear.
fn mac_bytes(format: SopsFormat, ty: ValueType, text: &str) -> String {
    match ty {
        ValueType::Bool => if text == "true" { "True" } else { "False" }.to_string(),
        // JSON numbers are float64 in sops; YAML integers stay integers.
        ValueType::Num => match (format, text.parse::<i64>()) {
            (SopsFormat::Yaml, Ok(i)) => i.to_string(),
            _ => text.parse::<f64>().map(|f| f.to_string()).unwrap_or_else(|_| text.to_string()),
        },
        _ => text.to_string(),
    }
}

/// sops's `shouldBeEncrypted` for the suffix and regex settings.
struct Rules {
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<regex::Regex>,
    encrypted_regex: Option<regex::Regex>,
}

impl Rules {
    fn new(m: &Metadata) -> Result<Rules, MigrateError> {
        let re = |r: &Option<String>| {
            r.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| regex::Regex::new(s).map_err(|e| MigrateError::Malformed(format!("sops regex: {e}"))))
                .transpose()
        };
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Ok(Rules {
            unencrypted_suffix: nonempty(&m.unencrypted_suffix),
            encrypted_suffix: nonempty(&m.encrypted_suffix),
            unencrypted_regex: re(&m.unencrypted_regex)?,
            encrypted_regex: re(&m.encrypted_regex)?,
        })
    }

    fn encrypted(&self, keys: &[String]) -> bool {
        let mut enc = true;
        if let Some(s) = &self.unencrypted_suffix
            && keys.iter().any(|k| k.ends_with(s.as_str()))
        {
            enc = false;
        }
        if let Some(s) = &self.encrypted_suffix {
            enc = keys.iter().any(|k| k.ends_with(s.as_str()));
        }
        if let Some(r) = &self.unencrypted_regex
            && keys.iter().any(|k| r.is_match(k))
        {
            enc = false;
        }
        if let Some(r) = &self.encrypted_regex {
            enc = keys.iter().any(|k| r.is_match(k));
        }
        enc
    }
}

fn age_unwrap(enc: &str, identities: &[AgeIdentity]) -> Result<DataKey, String> {
    let reader = age::armor::ArmoredReader::new(enc.as_bytes());
    let d = age::Decryptor::new(reader).map_err(|e| e.to_string())?;
    let mut r = d.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(|e| e.to_string())?;
    let mut key = Zeroizing::new(Vec::new());
    r.by_ref().take(33).read_to_end(&mut key).map_err(|e| e.to_string())?;
    let key: [u8; 32] = key.as_slice().try_into().map_err(|_| "the unwrapped data key is not 32 bytes".to_string())?;
    Ok(DataKey::from_bytes(key))
}

async fn kms_unwrap(
    mk: &MasterKey,
    wrapped: &WrappedKey,
    context: &std::collections::BTreeMap<String, String>,
    open: &BackendOpener<'_>,
) -> Result<DataKey, String> {
    let Some(kms) = open(mk)? else {
        return Err("backend not available here".into());
    };
    let ctx = EncryptionContext::from_pairs(context.iter().map(|(k, v)| (k.clone(), v.clone())))
        .map_err(|e| e.to_string())?;
    let d = kms.decrypt(wrapped, &ctx).await.map_err(|e| e.to_string())?;
    DataKey::try_from_secret(&d.plaintext).map_err(|e| e.to_string())
}

type Parsed = (Vec<Leaf>, Vec<DotenvLine>, Option<serde_json::Value>);

/// sops 3.x's .env store: lines split on `\n`, empty lines skipped, `#` comments, `KEY=value`
/// split at the first `=`, `\n` in values decoded; `sops_` keys are metadata.
fn parse_dotenv(source: &str) -> Result<Parsed, MigrateError> {
    let mut lines = Vec::new();
    let mut leaves = Vec::new();
    let mut meta = Vec::new();
    for (n, line) in source.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            lines.push(DotenvLine::Comment(c.to_string()));
            continue;
        }
        let (k, v) =
            line.split_once('=').ok_or_else(|| MigrateError::Malformed(format!("line {}: not KEY=value", n + 1)))?;
        if let Some(m) = k.strip_prefix("sops_") {
            meta.push((m.to_string(), v.to_string()));
            continue;
        }
        let v = v.replace("\\n", "\n");
        leaves.push(Leaf { path: KeyPath::key(k), keys: vec![k.to_string()], ty: ValueType::Str, text: v.clone() });
        lines.push(DotenvLine::Pair(k.to_string(), v));
    }
    let meta = (!meta.is_empty()).then(|| meta::unflatten(&meta)).transpose()?;
    Ok((leaves, lines, meta))
}

/// An INI file as sops's INI store (go-ini) reads it: sections (`DEFAULT` before the first),
/// `key = value` or `key: value`, `;`/`#` comments, surrounding quotes removed; `[sops]` is
/// the metadata.
fn parse_ini(source: &str) -> Result<Parsed, MigrateError> {
    let mut section = "DEFAULT".to_string();
    let mut leaves = Vec::new();
    let mut meta = Vec::new();
    for (n, raw) in source.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[') {
            section = s
                .strip_suffix(']')
                .ok_or_else(|| MigrateError::Malformed(format!("line {}: unterminated section", n + 1)))?
                .trim()
                .to_string();
            continue;
        }
        let i =
            line.find(['=', ':']).ok_or_else(|| MigrateError::Malformed(format!("line {}: not key = value", n + 1)))?;
        let key = line[..i].trim().to_string();
        let mut value = line[i + 1..].trim();
        let quoted = value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"')) || (value.starts_with('\'') && value.ends_with('\'')));
        if quoted {
            value = &value[1..value.len() - 1];
        } else if let Some(c) = value.find(['#', ';']) {
            value = value[..c].trim_end();
        }
        if section == "sops" {
            meta.push((key, value.to_string()));
            continue;
        }
        leaves.push(Leaf {
            path: KeyPath(vec![PathSegment::Key(section.clone()), PathSegment::Key(key.clone())]),
            keys: vec![section.clone(), key],
            ty: ValueType::Str,
            text: value.to_string(),
        });
    }
    let meta = (!meta.is_empty()).then(|| meta::unflatten(&meta)).transpose()?;
    Ok((leaves, Vec::new(), meta))
}

/// JSON and YAML through envseal's own lossless parsers: the top-level `sops` mapping is the
/// metadata; every other value is a leaf, in document order. Keys named `sops_*` (or `sops`
/// below the top level) are ordinary data here.
fn parse_tree(format: SopsFormat, content: &[u8]) -> Result<Parsed, MigrateError> {
    let f = if format == SopsFormat::Json { Format::Json } else { Format::Yaml };
    let doc = envseal_stores::parse(f, content).map_err(|e| MigrateError::Malformed(e.to_string()))?;
    let mut leaves = Vec::new();
    let mut meta: Option<serde_json::Value> = None;
    for e in doc.entries() {
        if e.path.0.first() == Some(&PathSegment::Key("sops".into())) {
            let root = meta.get_or_insert_with(|| serde_json::Value::Object(Default::default()));
            insert_json(root, &e.path.0[1..], json_value(e.ty, &e.text))?;
            continue;
        }
        let keys = e
            .path
            .0
            .iter()
            .filter_map(|s| match s {
                PathSegment::Key(k) => Some(k.clone()),
                PathSegment::Index(_) => None,
            })
            .collect();
        leaves.push(Leaf { path: e.path, keys, ty: e.ty, text: e.text });
    }
    Ok((leaves, Vec::new(), meta))
}

fn json_value(ty: ValueType, text: &str) -> serde_json::Value {
    match ty {
        ValueType::Str => serde_json::Value::String(text.to_string()),
        ValueType::Num => text.parse::<i64>().map(serde_json::Value::from).unwrap_or_else(|_| text.into()),
        ValueType::Bool => serde_json::Value::Bool(text == "true"),
        ValueType::Null => serde_json::Value::Null,
    }
}

fn insert_json(
    node: &mut serde_json::Value,
    path: &[PathSegment],
    value: serde_json::Value,
) -> Result<(), MigrateError> {
    use serde_json::Value;
    let bad = || MigrateError::Malformed("sops metadata structure".into());
    let Some((first, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    let slot = match first {
        PathSegment::Key(k) => {
            if node.is_null() {
                *node = Value::Object(Default::default());
            }
            node.as_object_mut().ok_or_else(bad)?.entry(k.clone()).or_insert(Value::Null)
        }
        PathSegment::Index(i) => {
            if node.is_null() {
                *node = Value::Array(Vec::new());
            }
            let a = node.as_array_mut().ok_or_else(bad)?;
            let i = *i as usize;
            if i > 1024 {
                return Err(bad());
            }
            if a.len() <= i {
                a.resize(i + 1, Value::Null);
            }
            &mut a[i]
        }
    };
    insert_json(slot, rest, value)
}

impl Decrypted {
    /// The plaintext document, in `format` (the source's own format; an INI file becomes JSON
    /// or YAML, its sections as mappings): comments and layout of the sops file kept (for
    /// .env, JSON and YAML), the sops metadata removed, each value decrypted.
    ///
    /// # Errors
    /// [`MigrateError::Unsupported`] for another format; store errors.
    pub fn to_document(&self, format: Format) -> Result<Box<dyn Document>, MigrateError> {
        let store = |e: envseal_stores::StoreError| MigrateError::Store(e.to_string());
        match (self.format, format) {
            (SopsFormat::Dotenv, Format::Dotenv) => {
                let scratch = envseal_stores::parse(Format::Dotenv, b"").map_err(store)?;
                let comments: std::collections::HashMap<&str, &str> =
                    self.comments.iter().map(|(c, p)| (c.as_str(), p.as_str())).collect();
                let mut text = Zeroizing::new(String::new());
                let mut leaf = 0;
                for line in &self.dotenv {
                    match line {
                        DotenvLine::Comment(c) => {
                            text.push('#');
                            text.push_str(comments.get(c.as_str()).copied().unwrap_or(c));
                        }
                        DotenvLine::Pair(k, v) => {
                            let value = match &self.values[leaf] {
                                Some((_, p)) => p.as_str(),
                                None => v.as_str(),
                            };
                            leaf += 1;
                            text.push_str(k);
                            text.push('=');
                            text.push_str(&scratch.encode_value(&KeyPath::key(k.clone()), value).map_err(store)?);
                        }
                    }
                    text.push('\n');
                }
                envseal_stores::parse(Format::Dotenv, text.as_bytes()).map_err(store)
            }
            (SopsFormat::Json, Format::Json) | (SopsFormat::Yaml, Format::Yaml) => {
                let mut source = Zeroizing::new(self.source.clone());
                for (c, p) in &self.comments {
                    *source = source.replacen(&format!("#{c}"), &format!("#{}", p.as_str()), 1);
                }
                let mut doc = envseal_stores::parse(format, source.as_bytes()).map_err(store)?;
                doc.remove_value(&KeyPath::key("sops")).map_err(store)?;
                self.fill(doc.as_mut())?;
                Ok(doc)
            }
            (SopsFormat::Ini, Format::Json | Format::Yaml) => {
                // An empty mapping, which both JSON and YAML read.
                let mut doc = envseal_stores::parse(format, b"{}\n").map_err(store)?;
                for (i, leaf) in self.leaves.iter().enumerate() {
                    let (ty, text) = match &self.values[i] {
                        Some((ty, p)) => (*ty, p.as_str()),
                        None => (leaf.ty, leaf.text.as_str()),
                    };
                    doc.set_value(&leaf.path, ty, text, false).map_err(store)?;
                }
                Ok(doc)
            }
            (from, to) => Err(MigrateError::Unsupported(format!(
                "converting a sops {} file to {} (import it to its own format{})",
                from.name(),
                to.name(),
                if from == SopsFormat::Ini { ": for INI, JSON or YAML" } else { "" }
            ))),
        }
    }

    fn fill(&self, doc: &mut dyn Document) -> Result<(), MigrateError> {
        for (i, leaf) in self.leaves.iter().enumerate() {
            if let Some((ty, p)) = &self.values[i] {
                doc.set_value(&leaf.path, *ty, p, false).map_err(|e| MigrateError::Store(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Number of values decrypted.
    pub fn decrypted_count(&self) -> usize {
        self.values.iter().filter(|v| v.is_some()).count()
    }
}

#[cfg(test)]
mod tests;
