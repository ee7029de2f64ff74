//! `envseal inspect`: describe a sealed file without any KMS call or decryption.

use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use envseal_core::aead::TAG_LEN;
use envseal_core::container::{self, Preamble};

use crate::fsio;
use crate::opts::FormatArg;
use crate::opts::entry_json;

fn modified(path: &std::path::Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(humantime::format_rfc3339_seconds(m).to_string())
}

pub fn run(path: PathBuf, json: bool) -> Result<ExitCode> {
    let mut input = fsio::open_input(&path)?;
    let mut head = Vec::new();
    input.by_ref().take(8).read_to_end(&mut head).with_context(|| format!("cannot read {}", path.display()))?;
    let v = if container::is_container(&head) {
        let mut r = Cursor::new(head).chain(input);
        let p = Preamble::read_from(&mut r)?;
        let pre_len = p.encode()?.len() as u64;
        let mut body = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            body += n as u64;
        }
        let ct_chunk = p.header.chunk_size as u64 + TAG_LEN as u64;
        let chunks = body.div_ceil(ct_chunk).max(1);
        serde_json::json!({
            "path": path, "format": "binary", "format_version": container::VERSION,
            "suite": format!("0x{:04x} AES-256-GCM, HKDF-SHA-512, key commitment", p.header.suite),
            "file_id": hex::encode(p.header.salt),
            "chunk_size": p.header.chunk_size,
            "context": p.header.context.iter().collect::<std::collections::BTreeMap<_, _>>(),
            "keys": p.entries.iter().map(entry_json).collect::<Vec<_>>(),
            "sealed_bytes": pre_len + body,
            "plaintext_bytes": body.saturating_sub(chunks * TAG_LEN as u64),
            "modified": modified(&path),
        })
    } else {
        let mut content = head;
        input.take(fsio::MAX_DOCUMENT).read_to_end(&mut content)?;
        let format = crate::open::detect(&path, FormatArg::Auto, &content);
        let format = if format == envseal_stores::Format::Binary { envseal_stores::Format::Dotenv } else { format };
        let doc = crate::open::parse_doc(format, &content)?;
        let meta = doc.metadata()?.ok_or(envseal_stores::StoreError::NotSealed)?;
        let entries = doc.entries();
        let sealed = entries.iter().filter(|e| envseal_core::values::is_sealed(&e.text)).count();
        serde_json::json!({
            "path": path, "format": format.name(), "format_version": meta.version,
            "suite": "AES-256-GCM per value (synthetic nonce), HKDF-SHA-512, key commitment, HMAC-SHA-256 file MAC",
            "file_id": hex::encode(meta.file_id),
            "context": meta.context.iter().collect::<std::collections::BTreeMap<_, _>>(),
            "keys": meta.keys.iter().map(entry_json).collect::<Vec<_>>(),
            "values_sealed": sealed,
            "values_plain": entries.len() - sealed,
            "plain_keys": meta.plain_keys,
            "sealed_bytes": content.len(),
            "created": meta.created,
            "modified": meta.modified.or_else(|| modified(&path)),
        })
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let o = v.as_object().map(|o| o.to_owned()).unwrap_or_default();
    for (k, val) in o {
        match (k.as_str(), &val) {
            ("keys", serde_json::Value::Array(keys)) => {
                for (i, e) in keys.iter().enumerate() {
                    outln!(
                        "{:<16} {} {} version {} ({} wrapped bytes)",
                        format!("key[{i}]:"),
                        e["backend"].as_str().unwrap_or(""),
                        e["key_id"].as_str().unwrap_or(""),
                        e["key_version"].as_str().unwrap_or(""),
                        e["wrapped_bytes"]
                    );
                }
            }
            (_, serde_json::Value::Null) => {}
            (_, serde_json::Value::String(s)) => outln!("{:<16} {s}", format!("{k}:")),
            _ => outln!("{:<16} {val}", format!("{k}:")),
        }
    }
    Ok(ExitCode::SUCCESS)
}
