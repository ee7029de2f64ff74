//! Error classes, exit codes, hints, and Ctrl-C handling.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use envseal_core::{Error, FormatError, KmsError};
use envseal_stores::StoreError;

/// The documented exit codes (also in docs/CLI.md).
pub const TABLE: &str = "\
 0  success
 1  other error
 2  usage error (bad arguments)
 3  bad input: not sealed, already sealed, cannot be parsed, or of the wrong kind
 4  I/O error: missing, unreadable or unwritable file, disk full
 5  wrong encryption context
 6  no usable key: key or backend not found, no wrapped-key entry could be opened
 7  tampered: header, wrapped key, chunk, value or key commitment failed authentication
 8  whole-file MAC mismatch: entries added, removed, reordered or swapped
 9  truncated input
10  unsupported format version or suite (sealed by a newer envseal?)
11  access denied by the KMS
12  KMS throttled or unavailable (retry later)
13  key disabled, pending deletion, or version below the minimum decryption version
14  keystore problem: bad permissions, wrong passphrase or master key, corrupt keystore
127 run: the command could not be started
130 interrupted (Ctrl-C): files were left unchanged
";

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
    /// Exit code.
    pub code: u8,
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
pub fn fail(code: u8, message: impl Into<String>, hint: Option<&str>) -> anyhow::Error {
    anyhow::Error::new(Classified { code, message: message.into(), hint: hint.map(str::to_string) })
}

fn classify_format(e: &FormatError) -> (u8, Option<&'static str>) {
    match e {
        FormatError::NotSealed => (3, Some("this file is not sealed by envseal; `envseal encrypt` seals it")),
        FormatError::UnsupportedVersion(_) | FormatError::UnsupportedSuite(_) => {
            (10, Some("the file was sealed by a newer envseal: upgrade envseal"))
        }
        FormatError::Truncated | FormatError::TruncatedBody { .. } => {
            (9, Some("the file is incomplete (cut short while copying or downloading?): restore it from a good copy"))
        }
        FormatError::LimitExceeded { .. } | FormatError::Malformed(_) => {
            (7, Some("the file is corrupt or was altered: restore it from a good copy"))
        }
        FormatError::InvalidContext(_) => {
            (2, Some("context keys must be non-empty and must not start with `envseal:`"))
        }
        FormatError::WrongContext => {
            (5, Some("pass the context the file was sealed with (`envseal inspect FILE` shows it)"))
        }
        FormatError::MacMismatch => (
            8,
            Some("values were added, removed, moved or altered outside envseal: restore the file from version control"),
        ),
        FormatError::CommitmentMismatch
        | FormatError::HeaderTampered
        | FormatError::KeyEntryTampered { .. }
        | FormatError::ChunkTampered { .. }
        | FormatError::TrailingData
        | FormatError::ValueTampered => (7, Some("the file was altered or corrupted: restore it from a good copy")),
        _ => (1, None),
    }
}

fn classify_kms(e: &KmsError) -> (u8, Option<&'static str>) {
    match e {
        KmsError::KeyNotFound { key } if key.contains("another local keystore") => {
            (6, Some("this data was sealed with another local keystore: point ENVSEAL_HOME (or --kms local:DIR) at it"))
        }
        KmsError::KeyNotFound { .. } | KmsError::KeyVersionNotFound { .. } => {
            (6, Some("check --key / --kms (`envseal keys list` shows the keys)"))
        }
        KmsError::KeyDisabled { .. } => (13, Some("enable it: `envseal keys enable KEY`")),
        KmsError::KeyPendingDeletion { .. } => (13, Some("cancel the deletion: `envseal keys cancel-deletion KEY`")),
        KmsError::KeyVersionBelowMinimum { .. } => {
            (13, Some("the data was wrapped under a retired key version: rewrap it with a key version still allowed"))
        }
        KmsError::AccessDenied { .. } => (11, Some("ask an administrator for permission on this key")),
        KmsError::WrongContext => (5, Some("pass the context the data was sealed with")),
        KmsError::InvalidCiphertext => (7, Some("the wrapped key was altered or belongs to another keystore")),
        KmsError::PlaintextTooLarge { .. } => (3, Some("use envelope encryption (`envseal encrypt`) for larger data")),
        KmsError::Throttled { .. } | KmsError::Unavailable { .. } => (12, Some("retry later; check the KMS endpoint")),
        KmsError::Unsupported { .. } => (6, Some("pass --kms with a backend that holds this file's key")),
        KmsError::InvalidRequest { .. } | KmsError::AlreadyExists { .. } => (2, None),
        _ => (1, None),
    }
}

fn classify_core(e: &Error) -> (u8, Option<&'static str>) {
    match e {
        Error::Format(f) => classify_format(f),
        Error::Kms(k) => classify_kms(k),
        Error::NoKeyOpened(attempts) => {
            // If every attempt failed the same way, use that class.
            let classes: Vec<_> = attempts.iter().map(|a| classify_core(&a.error)).collect();
            match classes.first() {
                Some(first) if classes.iter().all(|c| c.0 == first.0) => *first,
                _ => (6, Some("none of the file's keys could be used: check --kms, credentials and key states")),
            }
        }
        Error::Io(_) => (4, None),
        Error::NoBackend { .. } => (
            6,
            Some(
                "pass --kms URI for that backend (for pkcs11, or set ENVSEAL_PKCS11_URI); `envseal inspect FILE` lists the file's keys",
            ),
        ),
        _ => (1, None),
    }
}

/// Exit code and hint for an error chain.
pub fn classify(err: &anyhow::Error) -> (u8, Option<String>) {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Classified>() {
            return (c.code, c.hint.clone());
        }
        if cause.downcast_ref::<Interrupted>().is_some() {
            return (130, Some("nothing was changed".into()));
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            let (code, hint) = match e {
                StoreError::Core(c) => classify_core(c),
                StoreError::AlreadySealed => {
                    (3, Some("it is sealed already: `envseal set`/`edit` change it, `envseal rewrap` changes its keys"))
                }
                StoreError::NotSealed => (3, Some("this file is not sealed by envseal; `envseal encrypt` seals it")),
                StoreError::Parse { .. } => {
                    (3, Some("fix the syntax at the line given (values are never shown in messages)"))
                }
                StoreError::Metadata(_) | StoreError::UnsealedValue(_) => {
                    (7, Some("the file's envseal metadata was altered: restore it from version control"))
                }
                StoreError::NoSuchKey(_) | StoreError::InvalidPath(_) => (3, None),
                StoreError::BadRegex(_) => (2, None),
                _ => (1, None),
            };
            return (code, hint.map(str::to_string));
        }
        if let Some(e) = cause.downcast_ref::<Error>() {
            let (c, h) = classify_core(e);
            return (c, h.map(str::to_string));
        }
        if let Some(e) = cause.downcast_ref::<FormatError>() {
            let (c, h) = classify_format(e);
            return (c, h.map(str::to_string));
        }
        if let Some(e) = cause.downcast_ref::<KmsError>() {
            let (c, h) = classify_kms(e);
            return (c, h.map(str::to_string));
        }
        if let Some((c, h)) = crate::backend::classify(cause) {
            return (c, h);
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return (4, None);
        }
    }
    (1, None)
}

/// Prints `envseal: error: ...` and a hint to stderr; returns the exit code. A broken pipe on
/// stdout exits quietly.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let broken_pipe = |c: &(dyn std::error::Error + 'static)| {
        c.downcast_ref::<std::io::Error>().map(|e| e.kind()) == Some(std::io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<Error>(), Some(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe)
    };
    if err.chain().any(broken_pipe) {
        return ExitCode::from(0);
    }
    let (code, hint) = if interrupted() { (130, Some("nothing was changed".to_string())) } else { classify(err) };
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
                2 => "see `envseal COMMAND --help` for the arguments and examples",
                3 => "check the file and the key path; `envseal inspect FILE` describes a sealed file",
                4 => "check that the path exists, is a regular file, and is readable (and its directory writable)",
                _ => "see `envseal help-exit-codes` and docs/CLI.md",
            }
            .to_string(),
        )
    });
    if let Some(h) = hint {
        eprintln!("envseal: hint: {h}");
    }
    ExitCode::from(code)
}
