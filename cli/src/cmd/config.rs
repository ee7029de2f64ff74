//! `envseal config explain`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::opts::KmsOpts;
use crate::settings::settings;

/// `envseal config explain`.
pub fn explain(path: PathBuf, json: bool, kms: &KmsOpts) -> Result<ExitCode> {
    let s = settings(&path, kms, &[], None)?;
    if json {
        let v = serde_json::json!({
            "file": path,
            "config": s.config,
            "rule": s.rule.as_ref().map(|m| serde_json::json!({
                "index": m.index + 1,
                "path": m.rule.path,
                "matched": m.relative,
            })),
            "kms": { "value": s.kms.0, "source": s.kms.1.name() },
            "key": { "value": s.key.0, "source": s.key.1.name() },
            "context": s.context,
            "plain_keys": s.plain_keys,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match (&s.config, &s.rule) {
        (None, _) => outln!("config:     none found above {}", path.display()),
        (Some(c), None) => outln!("config:     {} (no rule matches {})", c.display(), path.display()),
        (Some(c), Some(m)) => {
            outln!("config:     {}", c.display());
            outln!("rule:       #{} path = {:?} (matched {})", m.index + 1, m.rule.path, m.relative.display());
        }
    }
    outln!("kms:        {} ({})", s.kms.0.join(", "), s.kms.1.name());
    outln!("key:        {} ({})", s.key.0, s.key.1.name());
    let ctx: Vec<String> = s.context.iter().map(|(k, v)| format!("{k}={v}")).collect();
    outln!("context:    {}", if ctx.is_empty() { "(none)".into() } else { ctx.join(", ") });
    outln!("plain keys: {}", s.plain_keys.as_deref().unwrap_or("(none)"));
    Ok(ExitCode::SUCCESS)
}
