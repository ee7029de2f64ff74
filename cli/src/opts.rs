//! Options and argument shapes several commands share (`--kms`/`--key`, `--format`, value types,
//! `KEY=VALUE` and `URI#KEY` arguments), and how commands describe a wrapped-key entry.

use clap::{Args, ValueEnum};

/// Options shared by commands that talk to a KMS.
#[derive(Args, Debug, Clone, Default)]
pub struct KmsOpts {
    /// Backend URI (repeat to add wrapped-key entries when sealing). Default: `local:`.
    #[arg(long = "kms", env = "ENVSEAL_KMS", value_name = "URI", value_delimiter = ',')]
    pub kms: Vec<String>,
    /// Key id or alias (default `alias/default`).
    #[arg(long, env = "ENVSEAL_KEY", value_name = "KEY")]
    pub key: Option<String>,
}

/// How to parse a file.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// From the file name, else the content.
    Auto,
    /// KEY=value lines.
    Dotenv,
    /// A JSON object.
    Json,
    /// A YAML mapping.
    Yaml,
    /// Any bytes, as a streaming container.
    Binary,
    /// An AWS Encryption SDK message (docs/ESDK.md).
    Esdk,
}

/// Type of a value given to `set`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum TypeArg {
    /// A string.
    String,
    /// A number.
    Number,
    /// true/false.
    Bool,
    /// null.
    Null,
}

/// Parses a `KEY=VALUE` argument.
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| "expected KEY=VALUE".to_string())
}

/// Splits `URI#KEY` (a per-backend key) from a backend URI.
pub fn split_key(uri: &str) -> (&str, Option<&str>) {
    match uri.rsplit_once('#') {
        Some((u, k)) if !k.is_empty() => (u, Some(k)),
        _ => (uri, None),
    }
}

/// A wrapped-key entry as JSON (no blob bytes: they are long and useless to a reader).
pub fn entry_json(e: &envseal_core::WrappedKey) -> serde_json::Value {
    serde_json::json!({ "backend": e.backend, "key_id": e.key_id, "key_version": e.key_version, "wrapped_bytes": e.blob.len() })
}
