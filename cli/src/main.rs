//! `envseal`: seal secrets files and data with envelope encryption.

#![forbid(unsafe_code)]

/// `println!` that returns an error instead of panicking when stdout is closed (a broken pipe
/// then ends the program quietly, see `exit::report`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?;
    }};
}

/// `print!` counterpart of `outln!`.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($t)*)?;
    }};
}

mod backend;
mod cmd;
mod config;
mod exit;
mod fsio;
mod governance;
mod harden;
mod open;
mod opts;
mod settings;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::opts::{FormatArg, KmsOpts, TypeArg, parse_kv};

const AFTER_HELP: &str = "\
Examples:
  envseal encrypt secrets.env            seal every value in place (local keystore, created on first use)
  envseal decrypt secrets.env            print the plaintext to stdout
  envseal run -f secrets.env -- ./app    start ./app with the secrets in its environment
  envseal get secrets.env DB_PASSWORD    print one value
  envseal set secrets.env API_KEY -      set one value from stdin
  envseal edit secrets.env               edit in $EDITOR, re-seal on save
  envseal encrypt backup.tar -o backup.tar.sealed
  tar c dir | envseal encrypt - > dir.tar.sealed

Environment:
  ENVSEAL_HOME             keystore directory (default: $XDG_DATA_HOME/envseal or ~/.local/share/envseal)
  ENVSEAL_KMS              backend URI (default: local:)
  ENVSEAL_KEY              key id or alias (default: alias/default)
  ENVSEAL_MASTER_KEY_FILE  master key file of the local keystore
  ENVSEAL_PASSPHRASE       passphrase of a passphrase-protected local keystore
  ENVSEAL_PROFILE          profile for a keystore that enforces IAM policies (--profile)
  ENVSEAL_AUDIT_LOG        audit log for `envseal iam` changes (--audit-log)
  ENVSEAL_AUDIT_KEY        audit key for checkpoints and `envseal audit verify` (--audit-key / --key)

Exit codes: see `envseal help-exit-codes` or docs/CLI.md.";

/// Envelope encryption for secrets files, apps and operators.
#[derive(Parser, Debug)]
#[command(name = "envseal", version, about, after_help = AFTER_HELP, propagate_version = true)]
struct Cli {
    /// Act as this profile (access key or role in $XDG_CONFIG_HOME/envseal/profiles.toml) on a
    /// local keystore that enforces IAM policies (docs/IAM.md).
    #[arg(long, global = true, env = "ENVSEAL_PROFILE", value_name = "NAME")]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the local keystore (it is also created on first use).
    #[command(
        after_help = "Examples:\n  envseal init\n  envseal init --passphrase   # protect key material with a passphrase (Argon2id)"
    )]
    Init {
        /// Protect the keystore with a passphrase (from ENVSEAL_PASSPHRASE or a prompt) instead
        /// of a master key file.
        #[arg(long)]
        passphrase: bool,
    },
    /// Seal a file: values one by one for .env/JSON/YAML, the whole file otherwise.
    #[command(
        after_help = "Examples:\n  envseal encrypt .env\n  envseal encrypt config.json --context app=billing --plain-keys '/PUBLIC_[^/]*'\n  envseal encrypt big.tar -o big.tar.sealed\n  cat data | envseal encrypt - > data.sealed\n  envseal encrypt data.bin --format esdk --kms aws-kms:arn:aws:kms:REGION:ACCOUNT:key/ID -o data.bin.encrypted"
    )]
    Encrypt {
        /// File to seal (`-` for stdin; output then goes to stdout unless -o).
        path: PathBuf,
        /// Write here instead of replacing the file (`-` for stdout).
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
        /// Input format.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
        /// Encryption context entry (repeatable).
        #[arg(long = "context", value_name = "K=V", value_parser = parse_kv)]
        context: Vec<(String, String)>,
        /// Leave in clear the values whose whole JSON pointer (`/a/b/0`; a .env variable `K` is
        /// `/K`) matches this regular expression; the values left in clear are listed.
        #[arg(long, value_name = "REGEX")]
        plain_keys: Option<String>,
        /// Pad each sealed value to a multiple of N bytes, so that short values (booleans,
        /// numbers, short strings) seal to the same length (default 32; 0: no padding).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=4096))]
        padding: Option<u32>,
        #[command(flatten)]
        kms: KmsOpts,
        #[command(flatten)]
        esdk: cmd::esdk::EsdkArgs,
        /// Print a JSON summary on stdout (when the output is a file).
        #[arg(long)]
        json: bool,
    },
    /// Open a sealed file; the plaintext goes to stdout unless -o or --in-place.
    #[command(
        after_help = "Examples:\n  envseal decrypt .env\n  envseal decrypt big.tar.sealed -o big.tar\n  envseal decrypt .env --in-place\n  envseal decrypt data.bin.encrypted -o data.bin      # an AWS Encryption SDK message (docs/ESDK.md)"
    )]
    Decrypt {
        /// Sealed file (`-` for stdin).
        path: PathBuf,
        /// Write the plaintext to this file (`-` for stdout).
        #[arg(short, long, value_name = "OUT", conflicts_with = "in_place")]
        output: Option<PathBuf>,
        /// Replace the sealed file with its plaintext.
        #[arg(long)]
        in_place: bool,
        #[command(flatten)]
        open: trust::OpenOpts,
        #[command(flatten)]
        kms: KmsOpts,
        #[command(flatten)]
        esdk: cmd::esdk::EsdkArgs,
    },
    /// Run a command with the secrets of sealed files in its environment (never on disk).
    #[command(
        after_help = "Examples:\n  envseal run -- ./server --port 8080\n  envseal run -f .env -f .env.prod --pristine -- env"
    )]
    Run {
        /// Sealed file(s); later files override earlier ones (default: .env).
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        files: Vec<PathBuf>,
        /// Start the command with only the secrets (plus PATH), not the current environment.
        #[arg(long)]
        pristine: bool,
        #[command(flatten)]
        open: trust::OpenOpts,
        #[command(flatten)]
        kms: KmsOpts,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Print one value (dotted path `a.b[0]` or JSON pointer `/a/b/0` for JSON/YAML).
    #[command(after_help = "Examples:\n  envseal get .env DB_PASSWORD\n  envseal get config.json db.password")]
    Get {
        /// Sealed file.
        path: PathBuf,
        /// Key or key path.
        #[arg(value_name = "KEY")]
        name: String,
        #[command(flatten)]
        open: trust::OpenOpts,
        #[command(flatten)]
        kms: KmsOpts,
    },
    /// Add or change one value in a sealed file; the other values keep their ciphertext.
    #[command(
        after_help = "Examples:\n  envseal set .env API_KEY sk-123\n  printf %s \"$TOKEN\" | envseal set .env TOKEN -"
    )]
    Set {
        /// Sealed file.
        path: PathBuf,
        /// Key or key path.
        #[arg(value_name = "KEY")]
        name: String,
        /// The value (`-` reads it from stdin; omitted: prompt without echo).
        value: Option<String>,
        /// JSON/YAML type of the value.
        #[arg(long = "type", value_enum, default_value_t = TypeArg::String)]
        ty: TypeArg,
        #[command(flatten)]
        open: trust::OpenOpts,
        #[command(flatten)]
        kms: KmsOpts,
    },
    /// Remove one value from a sealed file.
    #[command(after_help = "Examples:\n  envseal unset .env OLD_TOKEN\n  envseal unset config.json db.replicas[2]")]
    Unset {
        /// Sealed file.
        path: PathBuf,
        /// Key or key path.
        #[arg(value_name = "KEY")]
        name: String,
        #[command(flatten)]
        open: trust::OpenOpts,
        #[command(flatten)]
        kms: KmsOpts,
    },
    /// Edit a sealed file in $EDITOR (plaintext in a private temp file, removed afterwards).
    #[command(after_help = "Examples:\n  EDITOR=nano envseal edit .env")]
    Edit {
        /// Sealed file.
        path: PathBuf,
        #[command(flatten)]
        open: trust::OpenOpts,
        #[command(flatten)]
        kms: KmsOpts,
    },
    /// Describe a sealed file without decrypting it (no KMS call).
    #[command(after_help = "Examples:\n  envseal inspect .env\n  envseal inspect big.tar.sealed --json")]
    Inspect {
        /// Sealed file (`-` for stdin).
        path: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Replace the wrapped keys of sealed files (after a key rotation, to another key, add or
    /// remove one); the data is untouched. Concurrent, resumable, kill-safe.
    #[command(
        after_help = "Examples:\n  envseal keys rotate alias/default && envseal rewrap -r secrets/ --to-latest\n  envseal rewrap -r secrets/ --dry-run\n  envseal rewrap -r secrets/ --to alias/new --jobs 32 --json\n  envseal rewrap -r secrets/ --resume          # after an interrupted run\n  envseal rewrap app.env --add-key local:#alias/backup\n\nSee docs/ROTATION.md."
    )]
    Rewrap(cmd::rewrap::RewrapArgs),
    /// Re-key sealed files: a new data key (and file id) for the same verified recipients, every
    /// value resealed; revokes anyone who kept an old wrapped key or data key.
    #[command(
        after_help = "Examples:\n  envseal rekey .env\n  envseal rekey config.json backup.tar.sealed --json\n\nSee docs/ROTATION.md."
    )]
    Rekey(cmd::rekey::RekeyArgs),
    /// Rotate sealed database columns (envseal-fields): rewrap the key vault, re-key a table.
    #[command(
        after_help = "Examples:\n  envseal db rewrap --url postgres://app@db/app --to-latest\n  envseal db rekey --url postgres://app@db/app --table users --pk id --column email\n\nSee docs/FIELDS.md."
    )]
    Db {
        #[command(subcommand)]
        action: cmd::db::DbCmd,
    },
    /// Manage KMS keys (create, list, rotate, ...).
    #[command(
        after_help = "Examples:\n  envseal keys list\n  envseal keys create --alias alias/app\n  envseal keys rotate alias/app"
    )]
    Keys {
        #[command(subcommand)]
        action: cmd::keys::KeysCmd,
        /// Backend URI (default `local:`).
        #[arg(long = "kms", env = "ENVSEAL_KMS", value_name = "URI", global = true)]
        kms: Option<String>,
        /// JSON output.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Local KMS emulator (`envseal kms serve`): the Alibaba Cloud KMS and AWS KMS APIs on 127.0.0.1.
    #[command(
        after_help = "Examples:\n  envseal kms serve\n  envseal kms serve --port 8300 --api aws --backend local:./kms-data\n\nSee docs/backends/emulator.md."
    )]
    Kms {
        #[command(subcommand)]
        action: cmd::kms::KmsCmd,
    },
    /// IAM files: users, access keys, groups, roles, policies; simulate a request (docs/IAM.md).
    #[command(
        after_help = "Examples:\n  envseal iam validate iam.toml\n  envseal iam create-user iam.toml alice --group developers\n  envseal iam create-access-key iam.toml alice\n  envseal iam simulate iam.toml --principal user/alice --action kms:Decrypt --resource '*'"
    )]
    Iam {
        #[command(subcommand)]
        action: cmd::iam::IamCmd,
    },
    /// Audit trails: verify the hash chain and checkpoints, search records (docs/AUDIT.md).
    #[command(
        after_help = "Examples:\n  envseal audit verify audit.log --key audit.key\n  envseal audit query audit.log --since 1h --outcome denied"
    )]
    Audit {
        #[command(subcommand)]
        action: cmd::audit::AuditCmd,
    },
    /// Take over files encrypted by sops or dotenvx; translate .sops.yaml (docs/MIGRATING.md).
    #[command(
        after_help = "Examples:\n  envseal import sops secrets.enc.yaml -o secrets.yaml\n  envseal import dotenvx .env --in-place\n  envseal import sops-config"
    )]
    Import {
        #[command(subcommand)]
        action: cmd::import::ImportCmd,
    },
    /// Configuration (.envseal.toml) tools.
    #[command(after_help = "Examples:\n  envseal config explain prod/.env")]
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Print shell completions.
    #[command(
        after_help = "Examples:\n  envseal completions bash > /etc/bash_completion.d/envseal\n  envseal completions zsh > \"${fpath[1]}/_envseal\""
    )]
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
    /// List the exit codes and what each means.
    #[command(after_help = "Examples:\n  envseal help-exit-codes")]
    HelpExitCodes,
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Show which .envseal.toml rule applies to a file, and the settings that result.
    #[command(
        after_help = "Examples:\n  envseal config explain secrets/prod.env\n  ENVSEAL_KEY=alias/other envseal config explain app.json --json"
    )]
    Explain {
        /// The file.
        path: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        kms: KmsOpts,
    },
}

fn main() -> ExitCode {
    if let Err(e) = harden::disable_core_dumps() {
        eprintln!("envseal: warning: core dumps could not be turned off ({e})");
    }
    exit::install_interrupt_handler();
    let cli = Cli::parse();
    governance::set_profile(cli.profile.clone());
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return exit::report(&anyhow::anyhow!(e).context("cannot start the async runtime")),
    };
    let result = rt.block_on(run(cli));
    match result {
        Ok(code) => code,
        Err(e) => exit::report(&e),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init { passphrase } => cmd::init::run(passphrase).await,
        Command::Encrypt { path, output, format, context, plain_keys, padding, kms, esdk, json } => {
            cmd::encrypt::run(cmd::encrypt::Opts {
                path,
                output,
                format,
                context,
                plain_keys,
                padding,
                kms,
                esdk,
                json,
            })
            .await
        }
        Command::Decrypt { path, output, in_place, open, kms, esdk } => {
            cmd::decrypt::run(path, output, in_place, open, kms, esdk).await
        }
        Command::Run { files, pristine, open, kms, command } => {
            cmd::run::run(files, pristine, open, kms, command).await
        }
        Command::Get { path, name, open, kms } => cmd::values::get(path, name, open, kms).await,
        Command::Set { path, name, value, ty, open, kms } => cmd::values::set(path, name, value, ty, open, kms).await,
        Command::Unset { path, name, open, kms } => cmd::values::unset(path, name, open, kms).await,
        Command::Edit { path, open, kms } => cmd::edit::run(path, open, kms).await,
        Command::Inspect { path, json } => cmd::inspect::run(path, json),
        Command::Rewrap(args) => cmd::rewrap::run(args).await,
        Command::Rekey(args) => cmd::rekey::run(args).await,
        Command::Db { action } => cmd::db::run(action).await,
        Command::Keys { action, kms, json } => cmd::keys::run(action, kms, json).await,
        Command::Kms { action } => cmd::kms::run(action).await,
        Command::Iam { action } => cmd::iam::run(action),
        Command::Import { action } => cmd::import::run(action).await,
        Command::Audit { action } => cmd::audit::run(action),
        Command::Config { action: ConfigCmd::Explain { path, json, kms } } => cmd::config::explain(path, json, &kms),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "envseal", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::HelpExitCodes => {
            out!("{}", exit::table());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
