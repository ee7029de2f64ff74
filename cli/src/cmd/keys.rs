//! `envseal keys`: key administration on backends that have it.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;
use clap::Subcommand;
use envseal_core::kms::{KeyMetadata, KeySpec, ProtectionLevel};

use crate::backend;
use crate::exit;

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create a key.
    #[command(after_help = "Examples:\n  envseal keys create --alias alias/app --description 'app secrets'")]
    Create {
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Alias to point at the new key (e.g. alias/app).
        #[arg(long)]
        alias: Option<String>,
        /// Ask for an HSM-protected key (backends that have HSMs).
        #[arg(long)]
        hsm: bool,
        /// Tag (repeatable).
        #[arg(long = "tag", value_name = "K=V", value_parser = crate::opts::parse_kv)]
        tags: Vec<(String, String)>,
    },
    /// List keys.
    #[command(after_help = "Examples:\n  envseal keys list\n  envseal keys list --json --kms local:/srv/keystore")]
    List,
    /// Describe a key (id or alias).
    #[command(after_help = "Examples:\n  envseal keys describe alias/default --json")]
    Describe {
        /// Key id or alias.
        key: String,
    },
    /// Add a new version with new key material; new data uses it, old data still opens.
    #[command(
        after_help = "Examples:\n  envseal keys rotate alias/default\n  envseal rewrap -r secrets/ --to-latest   # then move old files to the new version"
    )]
    Rotate {
        /// Key id or alias.
        key: String,
    },
    /// Enable a disabled key.
    #[command(after_help = "Examples:\n  envseal keys enable alias/app")]
    Enable {
        /// Key id or alias.
        key: String,
    },
    /// Disable a key (every cryptographic use fails until enabled).
    #[command(after_help = "Examples:\n  envseal keys disable alias/app")]
    Disable {
        /// Key id or alias.
        key: String,
    },
    /// Schedule deletion after a waiting period (7-30 days).
    #[command(after_help = "Examples:\n  envseal keys schedule-deletion alias/old --days 7")]
    ScheduleDeletion {
        /// Key id or alias.
        key: String,
        /// Waiting period in days.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Cancel a scheduled deletion (the key comes back disabled).
    #[command(after_help = "Examples:\n  envseal keys cancel-deletion alias/old && envseal keys enable alias/old")]
    CancelDeletion {
        /// Key id or alias.
        key: String,
    },
    /// Set the oldest key version allowed to decrypt.
    #[command(after_help = "Examples:\n  envseal keys set-min-version alias/app 3")]
    SetMinVersion {
        /// Key id or alias.
        key: String,
        /// Version.
        #[arg(value_name = "VERSION")]
        min_version: String,
    },
    /// Manage aliases.
    #[command(after_help = "Examples:\n  envseal keys alias create alias/app 2f0c...\n  envseal keys alias list")]
    Alias {
        #[command(subcommand)]
        action: AliasCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum AliasCmd {
    /// Point an alias at a key.
    #[command(after_help = "Examples:\n  envseal keys alias create alias/app 2f0c...")]
    Create {
        /// Alias, e.g. alias/app.
        alias: String,
        /// Key id or alias.
        key: String,
    },
    /// Remove an alias.
    #[command(after_help = "Examples:\n  envseal keys alias delete alias/app")]
    Delete {
        /// Alias.
        alias: String,
    },
    /// List aliases.
    #[command(after_help = "Examples:\n  envseal keys alias list --json")]
    List,
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn meta_json(m: &KeyMetadata) -> serde_json::Value {
    serde_json::json!({
        "key_id": m.key_id,
        "description": m.description,
        "state": m.state.as_str(),
        "protection_level": m.protection_level.as_str(),
        "created": time(m.created_at),
        "current_version": m.current_version,
        "versions": m.versions.iter().map(|v| serde_json::json!({"id": v.id, "created": time(v.created_at)})).collect::<Vec<_>>(),
        "min_decryption_version": m.min_decryption_version,
        "deletion_date": m.deletion_date.map(time),
        "aliases": m.aliases,
        "tags": m.tags,
    })
}

fn print_meta(m: &KeyMetadata, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(&meta_json(m))?);
    } else {
        outln!("key:         {}", m.key_id);
        if !m.aliases.is_empty() {
            outln!("aliases:     {}", m.aliases.join(", "));
        }
        if !m.description.is_empty() {
            outln!("description: {}", m.description);
        }
        outln!("state:       {}", m.state.as_str());
        if let Some(d) = m.deletion_date {
            outln!("deletion:    {}", time(d));
        }
        outln!("protection:  {}", m.protection_level.as_str());
        outln!("created:     {}", time(m.created_at));
        outln!("version:     {} (of {})", m.current_version, m.versions.len());
        if let Some(v) = &m.min_decryption_version {
            outln!("min decrypt: {v}");
        }
    }
    Ok(())
}

pub async fn run(cmd: KeysCmd, kms: Option<String>, json: bool) -> Result<ExitCode> {
    let backend = backend::open(kms.as_deref().unwrap_or(backend::DEFAULT_URI))?;
    let km = backend.key_manager().ok_or_else(|| {
        exit::fail(exit::Exit::Usage, format!("the {} backend has no key management", backend.backend()), None)
    })?;
    match cmd {
        KeysCmd::Create { description, alias, hsm, tags } => {
            let spec = KeySpec {
                description,
                protection_level: if hsm { ProtectionLevel::Hsm } else { ProtectionLevel::Software },
                tags: tags.into_iter().collect(),
            };
            if let Some(a) = &alias {
                // Refuse before creating anything, so a taken alias leaves no orphan key.
                if km.describe_key(a).await.is_ok() {
                    return Err(exit::fail(
                        exit::Exit::Usage,
                        format!("alias {a} already exists"),
                        Some("choose another alias, or move it later with `envseal keys alias create`"),
                    ));
                }
            }
            let m = km.create_key(&spec).await?;
            if let Some(a) = &alias {
                km.create_alias(a, &m.key_id).await?;
            }
            let m = km.describe_key(&m.key_id).await?;
            print_meta(&m, json)?;
        }
        KeysCmd::List => {
            let keys = km.list_keys().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&keys.iter().map(meta_json).collect::<Vec<_>>())?);
            } else {
                outln!("{:<38} {:<16} {:>7}  ALIASES", "KEY", "STATE", "VERSION");
                for m in &keys {
                    outln!(
                        "{:<38} {:<16} {:>7}  {}",
                        m.key_id,
                        m.state.as_str(),
                        m.current_version,
                        m.aliases.join(",")
                    );
                }
            }
        }
        KeysCmd::Describe { key } => print_meta(&km.describe_key(&key).await?, json)?,
        KeysCmd::Rotate { key } => {
            let m = km.rotate_key(&key).await?;
            if json {
                print_meta(&m, true)?;
            } else {
                eprintln!("envseal: {} rotated to version {}", m.key_id, m.current_version);
            }
        }
        KeysCmd::Enable { key } => {
            km.enable_key(&key).await?;
            eprintln!("envseal: {key} enabled");
        }
        KeysCmd::Disable { key } => {
            km.disable_key(&key).await?;
            eprintln!("envseal: {key} disabled");
        }
        KeysCmd::ScheduleDeletion { key, days } => {
            let m = km.schedule_key_deletion(&key, days).await?;
            if json {
                print_meta(&m, true)?;
            } else {
                eprintln!(
                    "envseal: {} will be deleted on {}; `envseal keys cancel-deletion {key}` stops it",
                    m.key_id,
                    m.deletion_date.map(time).unwrap_or_default()
                );
            }
        }
        KeysCmd::CancelDeletion { key } => {
            km.cancel_key_deletion(&key).await?;
            eprintln!("envseal: deletion of {key} cancelled; the key is disabled until `envseal keys enable {key}`");
        }
        KeysCmd::SetMinVersion { key, min_version } => {
            km.set_min_decryption_version(&key, &min_version).await?;
            eprintln!("envseal: {key}: data wrapped under versions below {min_version} can no longer be opened");
        }
        KeysCmd::Alias { action } => match action {
            AliasCmd::Create { alias, key } => km.create_alias(&alias, &key).await?,
            AliasCmd::Delete { alias } => km.delete_alias(&alias).await?,
            AliasCmd::List => {
                let aliases = km.list_aliases().await?;
                if json {
                    let v: Vec<_> =
                        aliases.iter().map(|a| serde_json::json!({"alias": a.name, "key_id": a.key_id})).collect();
                    outln!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    for a in aliases {
                        outln!("{:<32} {}", a.name, a.key_id);
                    }
                }
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}
