//! Error classes, exit codes, hints, and Ctrl-C handling.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use envseal_core::{Error, FormatError, KmsError};
use envseal_esdk::EsdkError;
use envseal_kms_local::LocalError;
use envseal_migrate::MigrateError;
use envseal_stores::StoreError;

/// The exit codes, each with its meaning: the one list behind `envseal help-exit-codes` and the
/// table in docs/CLI.md (a test compares the two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exit {
    /// Success.
    Success,
    /// Any other error.
    Other,
    /// A usage error found after parsing.
    Usage,
    /// Bad input: not sealed, already sealed, unparsable, of the wrong kind.
    BadInput,
    /// An I/O error.
    Io,
    /// The wrong encryption context.
    WrongContext,
    /// No usable key.
    NoKey,
    /// Something failed authentication.
    Tampered,
    /// A value-level file's MAC does not verify.
    MacMismatch,
    /// Input cut short.
    Truncated,
    /// A format version or suite this build does not read.
    Unsupported,
    /// The KMS said no.
    Denied,
    /// The KMS is throttling or unreachable.
    Unavailable,
    /// A key is disabled, pending deletion, or the version is below the minimum.
    KeyState,
    /// A keystore problem.
    Keystore,
    /// `run` could not start the command.
    CannotRun,
    /// Ctrl-C.
    Interrupted,
}

impl Exit {
    /// Every code, in order.
    pub const ALL: [Exit; 17] = [
        Exit::Success,
        Exit::Other,
        Exit::Usage,
        Exit::BadInput,
        Exit::Io,
        Exit::WrongContext,
        Exit::NoKey,
        Exit::Tampered,
        Exit::MacMismatch,
        Exit::Truncated,
        Exit::Unsupported,
        Exit::Denied,
        Exit::Unavailable,
        Exit::KeyState,
        Exit::Keystore,
        Exit::CannotRun,
        Exit::Interrupted,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Other => 1,
            Exit::Usage => 2,
            Exit::BadInput => 3,
            Exit::Io => 4,
            Exit::WrongContext => 5,
            Exit::NoKey => 6,
            Exit::Tampered => 7,
            Exit::MacMismatch => 8,
            Exit::Truncated => 9,
            Exit::Unsupported => 10,
            Exit::Denied => 11,
            Exit::Unavailable => 12,
            Exit::KeyState => 13,
            Exit::Keystore => 14,
            Exit::CannotRun => 127,
            Exit::Interrupted => 130,
        }
    }

    /// What the code means, as documented.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Other => "other error",
            Exit::Usage => "usage error (bad arguments)",
            Exit::BadInput => "bad input: not sealed, already sealed, cannot be parsed, or of the wrong kind",
            Exit::Io => "I/O error: missing, unreadable or unwritable file, disk full",
            Exit::WrongContext => "wrong encryption context",
            Exit::NoKey => {
                "no usable key: key or backend not found, no wrapped-key entry could be opened or is trusted"
            }
            Exit::Tampered => "tampered: header, wrapped key, chunk, value or key commitment failed authentication",
            Exit::MacMismatch => "whole-file MAC mismatch: entries added, removed, reordered or swapped",
            Exit::Truncated => "truncated input",
            Exit::Unsupported => "unsupported format version or suite (sealed by a newer envseal?)",
            Exit::Denied => "access denied by the KMS",
            Exit::Unavailable => "KMS throttled or unavailable (retry later)",
            Exit::KeyState => "key disabled, pending deletion, or version below the minimum decryption version",
            Exit::Keystore => "keystore problem: bad permissions, wrong passphrase or master key, corrupt keystore",
            Exit::CannotRun => "run: the command could not be started",
            Exit::Interrupted => "interrupted (Ctrl-C): files were left unchanged",
        }
    }

    /// The code as the process's exit status.
    pub fn status(self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

/// The documented exit codes, one per line (`envseal help-exit-codes`).
pub fn table() -> String {
    Exit::ALL.iter().map(|e| format!("{:>2}  {}\n", e.code(), e.meaning())).collect()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C / SIGTERM set a flag instead of killing the process mid-write; long operations check
/// it between chunks and roll back (temp files are removed, targets left untouched).
pub fn install_interrupt_handler() {
    // If the handler cannot be installed, the default (terminate) stays: writes are still
    // atomic, only a temp file may be left behind.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error raised when an operation stops because of Ctrl-C.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// A CLI-level error with its own class (usage problems found after parsing, etc.).
#[derive(Debug)]
pub struct Classified {
    /// The class.
    pub code: Exit,
    /// Message.
    pub message: String,
    /// Hint line.
    pub hint: Option<String>,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

/// Builds a classified error.
pub fn fail(code: Exit, message: impl Into<String>, hint: Option<&str>) -> anyhow::Error {
    anyhow::Error::new(Classified { code, message: message.into(), hint: hint.map(str::to_string) })
}

type Class = (Exit, Option<&'static str>);

const RESTORE: Option<&str> = Some("the file was altered or corrupted: restore it from a good copy");

fn format_class(e: &FormatError) -> Class {
    match e {
        FormatError::NotSealed => {
            (Exit::BadInput, Some("this file is not sealed by envseal; `envseal encrypt` seals it"))
        }
        FormatError::UnsupportedVersion(_) | FormatError::UnsupportedSuite(_) => {
            (Exit::Unsupported, Some("the file was sealed by a newer envseal: upgrade envseal"))
        }
        FormatError::Truncated | FormatError::TruncatedBody { .. } => (
            Exit::Truncated,
            Some("the file is incomplete (cut short while copying or downloading?): restore it from a good copy"),
        ),
        FormatError::LimitExceeded { .. } | FormatError::Malformed(_) => {
            (Exit::Tampered, Some("the file is corrupt or was altered: restore it from a good copy"))
        }
        FormatError::InvalidContext(_) => {
            (Exit::Usage, Some("context keys must be non-empty and must not start with `envseal:`"))
        }
        FormatError::WrongContext => {
            (Exit::WrongContext, Some("pass the context the file was sealed with (`envseal inspect FILE` shows it)"))
        }
        FormatError::MacMismatch => (
            Exit::MacMismatch,
            Some("values were added, removed, moved or altered outside envseal: restore the file from version control"),
        ),
        FormatError::CommitmentMismatch
        | FormatError::HeaderTampered
        | FormatError::KeyEntryTampered { .. }
        | FormatError::ChunkTampered { .. }
        | FormatError::TrailingData
        | FormatError::ValueTampered => (Exit::Tampered, RESTORE),
        _ => (Exit::Other, None),
    }
}

fn kms_class(e: &KmsError) -> Class {
    match e {
        KmsError::KeyNotFound { key } if key.contains("another local keystore") => (
            Exit::NoKey,
            Some("this data was sealed with another local keystore: point ENVSEAL_HOME (or --kms local:DIR) at it"),
        ),
        KmsError::KeyNotFound { .. } | KmsError::KeyVersionNotFound { .. } => {
            (Exit::NoKey, Some("check --key / --kms (`envseal keys list` shows the keys)"))
        }
        KmsError::KeyDisabled { .. } => (Exit::KeyState, Some("enable it: `envseal keys enable KEY`")),
        KmsError::KeyPendingDeletion { .. } => {
            (Exit::KeyState, Some("cancel the deletion: `envseal keys cancel-deletion KEY`"))
        }
        KmsError::KeyVersionBelowMinimum { .. } => (
            Exit::KeyState,
            Some("the data was wrapped under a retired key version: rewrap it with a key version still allowed"),
        ),
        KmsError::AccessDenied { .. } => (Exit::Denied, Some("ask an administrator for permission on this key")),
        KmsError::WrongContext => (Exit::WrongContext, Some("pass the context the data was sealed with")),
        KmsError::InvalidCiphertext => {
            (Exit::Tampered, Some("the wrapped key was altered or belongs to another keystore"))
        }
        KmsError::PlaintextTooLarge { .. } => {
            (Exit::BadInput, Some("use envelope encryption (`envseal encrypt`) for larger data"))
        }
        KmsError::Throttled { .. } | KmsError::Unavailable { .. } => {
            (Exit::Unavailable, Some("retry later; check the KMS endpoint"))
        }
        KmsError::Unsupported { .. } => (Exit::NoKey, Some("pass --kms with a backend that holds this file's key")),
        KmsError::InvalidRequest { .. } | KmsError::AlreadyExists { .. } => (Exit::Usage, None),
        _ => (Exit::Other, None),
    }
}

fn core_class(e: &Error) -> Class {
    match e {
        Error::Format(f) => format_class(f),
        Error::Kms(k) => kms_class(k),
        Error::NoKeyOpened(attempts) => {
            // If every attempt failed the same way, use that class.
            let classes: Vec<Class> = attempts.iter().map(|a| core_class(&a.error)).collect();
            match classes.first() {
                Some(first) if classes.iter().all(|c| c.0 == first.0) => *first,
                _ => (
                    Exit::NoKey,
                    Some("none of the file's keys could be used: check --kms, credentials and key states"),
                ),
            }
        }
        Error::KeyNotAllowed { .. } => (
            Exit::NoKey,
            Some(
                "the key is not among those a .envseal.toml rule or --allow-key trusts for this file (docs/CLI.md, Trust)",
            ),
        ),
        Error::Io(_) => (Exit::Io, None),
        Error::NoBackend { .. } => (
            Exit::NoKey,
            Some(
                "pass --kms URI for that backend (for pkcs11, or set ENVSEAL_PKCS11_URI); `envseal inspect FILE` lists the file's keys",
            ),
        ),
        _ => (Exit::Other, None),
    }
}

fn store_class(e: &StoreError) -> Class {
    match e {
        StoreError::Core(c) => core_class(c),
        StoreError::AlreadySealed => (
            Exit::BadInput,
            Some("it is sealed already: `envseal set`/`edit` change it, `envseal rewrap` changes its keys"),
        ),
        StoreError::NotSealed => {
            (Exit::BadInput, Some("this file is not sealed by envseal; `envseal encrypt` seals it"))
        }
        StoreError::Parse { .. } => {
            (Exit::BadInput, Some("fix the syntax at the line given (values are never shown in messages)"))
        }
        StoreError::Metadata(_) | StoreError::UnsealedValue(_) => {
            (Exit::Tampered, Some("the file's envseal metadata was altered: restore it from version control"))
        }
        StoreError::NoSuchKey(_) | StoreError::InvalidPath(_) => (Exit::BadInput, None),
        StoreError::BadRegex(_) => (Exit::Usage, None),
        _ => (Exit::Other, None),
    }
}

fn local_class(e: &LocalError) -> Class {
    let hint = match e {
        LocalError::WrongPassphrase { .. } => "check ENVSEAL_PASSPHRASE",
        LocalError::PassphraseNeeded { .. } => "set ENVSEAL_PASSPHRASE or run envseal from a terminal",
        LocalError::WrongMasterKey { .. } => {
            "check ENVSEAL_MASTER_KEY_FILE (the master key file created with the keystore)"
        }
        LocalError::NotFound { .. } => "run `envseal init`, or check ENVSEAL_HOME",
        LocalError::InsecurePermissions { .. } => "restrict the permissions as the message says",
        _ => "see docs/CLI.md, section Keystore",
    };
    (Exit::Keystore, Some(hint))
}

fn esdk_class(e: &EsdkError) -> Option<Class> {
    Some(match e {
        EsdkError::Kms(_) | EsdkError::Io(_) => return None,
        EsdkError::NotEsdk | EsdkError::Malformed(_) | EsdkError::TrailingData | EsdkError::InvalidContext(_) => {
            (Exit::BadInput, None)
        }
        EsdkError::CommitmentPolicy | EsdkError::UnsupportedSuite { .. } => (
            Exit::Unsupported,
            Some("envseal opens ESDK messages of the committing suites 0x0478 and 0x0578 only (docs/ESDK.md)"),
        ),
        EsdkError::UnsupportedVersion(_) | EsdkError::NonFramed => {
            (Exit::Unsupported, Some("see docs/ESDK.md for what envseal implements"))
        }
        EsdkError::TooManyDataKeys { .. } => {
            (Exit::BadInput, Some("raise --max-encrypted-data-keys if the message is trusted"))
        }
        EsdkError::WrongContext(_) => (Exit::WrongContext, None),
        EsdkError::InvalidOptions(_) => (Exit::Usage, None),
        EsdkError::NoKeyOpened(_) | EsdkError::NotMine | EsdkError::WrongKey => (
            Exit::NoKey,
            Some(
                "pass the key: --kms aws-kms:ARN (AWS credentials and AWS_ENDPOINT_URL from the environment) or --raw-aes-key",
            ),
        ),
        EsdkError::CommitmentMismatch
        | EsdkError::HeaderTampered
        | EsdkError::FrameTampered { .. }
        | EsdkError::BadSignature => (Exit::Tampered, Some("the message was altered; nothing was released")),
        EsdkError::Truncated => (Exit::Truncated, Some("the message is cut short; nothing was released")),
        _ => (Exit::Other, None),
    })
}

fn migrate_class(e: &MigrateError) -> Class {
    match e {
        MigrateError::NotSops | MigrateError::NotDotenvx | MigrateError::Malformed(_) | MigrateError::Store(_) => {
            (Exit::BadInput, None)
        }
        MigrateError::Unsupported(_) => (Exit::Unsupported, Some("see docs/MIGRATING.md for what envseal reads")),
        MigrateError::NoKeyOpened(_) => (
            Exit::NoKey,
            Some(
                "give an age identity (--age-identity, SOPS_AGE_KEY_FILE) or the KMS credentials (AWS SDK chain, VAULT_TOKEN)",
            ),
        ),
        MigrateError::WrongKey(_) => (Exit::NoKey, Some("check DOTENV_PRIVATE_KEY / --private-key-file")),
        MigrateError::ValueTampered(_) => {
            (Exit::Tampered, Some("the file was altered after it was encrypted; nothing was written"))
        }
        MigrateError::MacMismatch => {
            (Exit::MacMismatch, Some("the file was altered after it was encrypted; nothing was written"))
        }
        _ => (Exit::Other, None),
    }
}

/// Exit code and hint for an error chain: the first cause of a known kind decides.
pub fn classify(err: &anyhow::Error) -> (Exit, Option<String>) {
    let own = |c: Class| (c.0, c.1.map(str::to_string));
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Classified>() {
            return (c.code, c.hint.clone());
        }
        if cause.downcast_ref::<Interrupted>().is_some() {
            return (Exit::Interrupted, Some("nothing was changed".into()));
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return own(store_class(e));
        }
        if let Some(e) = cause.downcast_ref::<Error>() {
            return own(core_class(e));
        }
        if let Some(e) = cause.downcast_ref::<FormatError>() {
            return own(format_class(e));
        }
        if let Some(e) = cause.downcast_ref::<KmsError>() {
            return own(kms_class(e));
        }
        if let Some(e) = cause.downcast_ref::<LocalError>() {
            return own(local_class(e));
        }
        if let Some(c) = cause.downcast_ref::<EsdkError>().and_then(esdk_class) {
            return own(c);
        }
        if let Some(e) = cause.downcast_ref::<MigrateError>() {
            return own(migrate_class(e));
        }
        if cause.downcast_ref::<envseal_backends::UnknownBackend>().is_some() {
            return (Exit::Usage, Some("see docs/CLI.md, Backends and keys".into()));
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return (Exit::Io, None);
        }
    }
    (Exit::Other, None)
}

/// Prints `envseal: error: ...` and a hint to stderr; returns the exit code. A broken pipe on
/// stdout exits quietly.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let broken_pipe = |c: &(dyn std::error::Error + 'static)| {
        c.downcast_ref::<std::io::Error>().map(|e| e.kind()) == Some(std::io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<Error>(), Some(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe)
    };
    if err.chain().any(broken_pipe) {
        return Exit::Success.status();
    }
    let (code, hint) =
        if interrupted() { (Exit::Interrupted, Some("nothing was changed".to_string())) } else { classify(err) };
    // Join the chain, skipping a cause whose text its parent already printed.
    let mut msg = String::new();
    for c in err.chain() {
        let t = c.to_string();
        if !msg.contains(&t) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&t);
        }
    }
    eprintln!("envseal: error: {msg}");
    let hint = hint.or_else(|| {
        Some(
            match code {
                Exit::Usage => "see `envseal COMMAND --help` for the arguments and examples",
                Exit::BadInput => "check the file and the key path; `envseal inspect FILE` describes a sealed file",
                Exit::Io => {
                    "check that the path exists, is a regular file, and is readable (and its directory writable)"
                }
                _ => "see `envseal help-exit-codes` and docs/CLI.md",
            }
            .to_string(),
        )
    });
    if let Some(h) = hint {
        eprintln!("envseal: hint: {h}");
    }
    code.status()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/CLI.md's exit-code table lists exactly these codes with these meanings.
    #[test]
    fn the_documented_table_is_the_code() {
        let doc = include_str!("../../docs/CLI.md");
        let rows: Vec<(u8, String)> = doc
            .lines()
            .skip_while(|l| !l.starts_with("## Exit codes"))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let code = cells.get(1)?.parse::<u8>().ok()?;
                Some((code, cells.get(2)?.replace('`', "")))
            })
            .take_while(|_| true)
            .collect();
        let want: Vec<(u8, String)> = Exit::ALL.iter().map(|e| (e.code(), e.meaning().to_string())).collect();
        assert_eq!(rows, want, "docs/CLI.md's exit-code table and exit::Exit disagree");
    }
}
