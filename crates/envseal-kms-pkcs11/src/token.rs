//! The PKCS#11 module, the token, sessions and login.
//!
//! One `Pkcs11` context per module path for the whole process (a module is initialized once;
//! `C_Finalize` by one user would break every other). Each [`Token`] keeps a small pool of
//! read-write sessions; PKCS#11 login state belongs to the application, so logging one session
//! in logs them all in, and the pool keeps it alive.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use envseal_core::KmsError;

use crate::pin::{PIN_ENV, Pin, PinPrompt, PinRequest};
use crate::uri::Pkcs11Uri;

/// Environment variable naming the PKCS#11 module when the URI has no `module-path`.
pub const MODULE_ENV: &str = "ENVSEAL_PKCS11_MODULE";

/// Where the module is looked for when neither the URI nor `ENVSEAL_PKCS11_MODULE` names it
/// (SoftHSM2 on Debian/Ubuntu, Fedora, other multiarch layouts, /usr/local and Homebrew).
pub const DEFAULT_MODULES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

/// Most idle sessions kept open per token.
const MAX_IDLE_SESSIONS: usize = 8;

/// An error inside a token operation: a PKCS#11 return code (mapped by [`map_error`] unless
/// the operation maps it itself) or an already-classified error.
#[derive(Debug)]
pub(crate) enum OpError {
    P11(P11Error),
    Kms(KmsError),
}

impl From<P11Error> for OpError {
    fn from(e: P11Error) -> Self {
        OpError::P11(e)
    }
}

impl From<KmsError> for OpError {
    fn from(e: KmsError) -> Self {
        OpError::Kms(e)
    }
}

pub(crate) type OpResult<T> = Result<T, OpError>;

/// The return code of a failed call, if it is one.
pub(crate) fn rv(e: &P11Error) -> Option<RvError> {
    match e {
        P11Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Errors after which the session (or the login) is gone: drop the session, open a new one.
fn session_broken(e: &P11Error) -> bool {
    matches!(
        rv(e),
        Some(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::SlotIdInvalid
        )
    )
}

/// Maps a PKCS#11 error no operation handled itself. Messages name the function and the
/// return code, never data.
pub(crate) fn map_error(e: &P11Error) -> KmsError {
    let unavailable = |retryable: bool| KmsError::Unavailable {
        message: format!("PKCS#11 {e_short}", e_short = short(e)),
        retryable,
    };
    match rv(e) {
        Some(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange) => KmsError::AccessDenied {
            message: format!("the token rejected the user PIN ({}): check {PIN_ENV}", short(e)),
        },
        Some(RvError::PinLocked) => KmsError::AccessDenied {
            message: "the token's user PIN is locked (CKR_PIN_LOCKED): the security officer must reset it".into(),
        },
        Some(RvError::PinExpired) => {
            KmsError::AccessDenied { message: "the token's user PIN has expired (CKR_PIN_EXPIRED): change it".into() }
        }
        Some(RvError::UserPinNotInitialized) => KmsError::AccessDenied {
            message: "the token has no user PIN (CKR_USER_PIN_NOT_INITIALIZED): initialize it first".into(),
        },
        Some(RvError::UserNotLoggedIn) => {
            KmsError::AccessDenied { message: format!("not logged in to the token ({})", short(e)) }
        }
        Some(RvError::TokenWriteProtected | RvError::SessionReadOnly) => {
            KmsError::AccessDenied { message: format!("the token is write-protected ({})", short(e)) }
        }
        Some(RvError::TokenNotPresent | RvError::DeviceRemoved | RvError::SlotIdInvalid) => KmsError::Unavailable {
            message: format!("the PKCS#11 token is not present ({}): insert it or check the URI", short(e)),
            retryable: false,
        },
        Some(
            RvError::DeviceError
            | RvError::FunctionFailed
            | RvError::SessionCount
            | RvError::FunctionCanceled
            | RvError::CantLock
            | RvError::OperationActive,
        ) => unavailable(true),
        Some(RvError::DeviceMemory) => KmsError::Unavailable {
            message: format!("the token is out of memory ({}): delete unused objects", short(e)),
            retryable: false,
        },
        Some(RvError::MechanismInvalid | RvError::MechanismParamInvalid) => KmsError::Unavailable {
            message: format!(
                "the token refused CKM_AES_GCM with a caller-chosen IV ({}); tokens in a FIPS mode may require token-generated IVs, which this backend does not use",
                short(e)
            ),
            retryable: false,
        },
        _ => unavailable(false),
    }
}

/// `C_Function: ReturnCode`, short and free of data.
pub(crate) fn short(e: &P11Error) -> String {
    match e {
        P11Error::Pkcs11(rv, f) => format!("C_{f:?}: {rv:?}"),
        P11Error::LibraryLoading(_) => "module loading failed".into(),
        other => format!("{other}"),
    }
}

/// Process-wide PKCS#11 contexts, one per module (by canonical path). Never finalized: other
/// instances (and other libraries in the process) may be using the module.
fn context_for(module: &Path) -> Result<Pkcs11, KmsError> {
    static CONTEXTS: OnceLock<Mutex<Vec<(PathBuf, Pkcs11)>>> = OnceLock::new();
    let canonical = std::fs::canonicalize(module).map_err(|e| KmsError::Unavailable {
        message: format!("PKCS#11 module {} cannot be opened: {e}", module.display()),
        retryable: false,
    })?;
    let mut contexts = lock(CONTEXTS.get_or_init(Default::default));
    if let Some((_, ctx)) = contexts.iter().find(|(p, _)| *p == canonical) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&canonical).map_err(|e| KmsError::Unavailable {
        message: format!("cannot load PKCS#11 module {}: {e}", module.display()),
        retryable: false,
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        // Another user of the module in this process initialized it: that is fine.
        Err(e) if rv(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
        Err(e) => {
            return Err(KmsError::Unavailable {
                message: format!("PKCS#11 module {} failed to initialize ({})", module.display(), short(&e)),
                retryable: false,
            });
        }
    }
    contexts.push((canonical, ctx.clone()));
    Ok(ctx)
}

/// Locks a mutex, recovering from poisoning: the guarded data stays consistent because every
/// critical section here either completes or leaves the data as it found it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The module to load: the URI's `module-path`, else `explicit` (the caller's option, which
/// [`crate::Pkcs11Options::from_env`] fills from `ENVSEAL_PKCS11_MODULE`), else the first of
/// [`DEFAULT_MODULES`] that exists.
pub(crate) fn resolve_module(uri: &Pkcs11Uri, explicit: Option<&Path>) -> Result<PathBuf, KmsError> {
    if let Some(p) = uri.module_path().or(explicit) {
        return Ok(p.to_path_buf());
    }
    DEFAULT_MODULES.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| KmsError::Unavailable {
        message: format!(
            "no PKCS#11 module found: set {MODULE_ENV} or add `?module-path=/path/to/module.so` to the URI (looked in {})",
            DEFAULT_MODULES.join(", ")
        ),
        retryable: false,
    })
}

struct Login {
    pin: Option<Pin>,
    prompt: Option<PinPrompt>,
    /// Set once the token refused our PIN: we never try it again, so that a wrong PIN cannot
    /// count down the token's retry counter and lock it.
    refused: Option<String>,
}

/// One token, reached through one module.
pub(crate) struct Token {
    ctx: Pkcs11,
    module: PathBuf,
    uri: Pkcs11Uri,
    slot: Mutex<Slot>,
    label: String,
    idle: Mutex<Vec<Session>>,
    login: Mutex<Login>,
}

impl Token {
    /// Loads the module and finds the one token the URI selects. Does not log in.
    pub(crate) fn open(
        module: PathBuf,
        uri: Pkcs11Uri,
        pin: Option<Pin>,
        prompt: Option<PinPrompt>,
    ) -> Result<Self, KmsError> {
        let ctx = context_for(&module)?;
        let (slot, label) = find_slot(&ctx, &uri, &module)?;
        Ok(Self {
            ctx,
            module,
            uri,
            slot: Mutex::new(slot),
            label,
            idle: Mutex::new(Vec::new()),
            login: Mutex::new(Login { pin, prompt, refused: None }),
        })
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn module(&self) -> &Path {
        &self.module
    }

    pub(crate) fn slot_id(&self) -> u64 {
        lock(&self.slot).id()
    }

    /// Runs `op` on a logged-in session. If the session or the login was lost (token
    /// re-inserted, session closed by the module), it retries once on a fresh session.
    pub(crate) fn run<T>(&self, mut op: impl FnMut(&Session) -> OpResult<T>) -> Result<T, KmsError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let session = self.acquire()?;
            match op(&session) {
                Ok(v) => {
                    self.release(session);
                    return Ok(v);
                }
                Err(OpError::Kms(e)) => {
                    self.release(session);
                    return Err(e);
                }
                Err(OpError::P11(e)) if session_broken(&e) => {
                    drop(session);
                    lock(&self.idle).clear();
                    if attempt >= 2 {
                        return Err(map_error(&e));
                    }
                }
                Err(OpError::P11(e)) => {
                    self.release(session);
                    return Err(map_error(&e));
                }
            }
        }
    }

    fn release(&self, session: Session) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_SESSIONS {
            idle.push(session);
        }
    }

    /// An idle session, or a new one; logged in either way.
    fn acquire(&self) -> Result<Session, KmsError> {
        let pooled = lock(&self.idle).pop();
        let session = match pooled {
            Some(s) => s,
            None => self.open_session()?,
        };
        self.ensure_login(&session)?;
        Ok(session)
    }

    fn open_session(&self) -> Result<Session, KmsError> {
        let slot = *lock(&self.slot);
        let opened = match self.ctx.open_rw_session(slot) {
            // A write-protected token still decrypts and encrypts; key management then fails
            // with AccessDenied.
            Err(e) if rv(&e) == Some(RvError::TokenWriteProtected) => self.ctx.open_ro_session(slot),
            other => other,
        };
        match opened {
            Ok(s) => Ok(s),
            // The token may have been re-inserted into another slot: look for it again.
            Err(e)
                if matches!(
                    rv(&e),
                    Some(RvError::SlotIdInvalid | RvError::TokenNotPresent | RvError::DeviceRemoved)
                ) =>
            {
                let (slot, _) = find_slot(&self.ctx, &self.uri, &self.module)?;
                *lock(&self.slot) = slot;
                self.ctx.open_rw_session(slot).map_err(|e| map_error(&e))
            }
            Err(e) => Err(map_error(&e)),
        }
    }

    /// Logs in with the user PIN unless the application already is (login state is shared by
    /// every session of the application).
    pub(crate) fn ensure_login(&self, session: &Session) -> Result<(), KmsError> {
        let state = session.get_session_info().map_err(|e| map_error(&e))?.session_state();
        match state {
            SessionState::RwUser | SessionState::RoUser => return Ok(()),
            SessionState::RwSecurityOfficer => {
                return Err(KmsError::AccessDenied {
                    message: "the token is logged in as security officer by this process; envseal needs the user"
                        .into(),
                });
            }
            SessionState::RoPublic | SessionState::RwPublic => {}
        }
        let mut login = lock(&self.login);
        if let Some(message) = &login.refused {
            return Err(KmsError::AccessDenied { message: message.clone() });
        }
        if login.pin.is_none()
            && let Some(prompt) = login.prompt.take()
        {
            login.pin = prompt(&PinRequest { token_label: self.label.clone() });
        }
        let result = match &login.pin {
            Some(pin) => session.login(UserType::User, Some(&AuthPin::from(pin.expose_secret().to_owned()))),
            None if self.protected_authentication_path() => session.login(UserType::User, None),
            None => {
                return Err(KmsError::AccessDenied {
                    message: format!(
                        "the PKCS#11 token {:?} needs the user PIN: set {PIN_ENV} (or run from a terminal to be prompted)",
                        self.label
                    ),
                });
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if rv(&e) == Some(RvError::UserAlreadyLoggedIn) => Ok(()),
            Err(e) => {
                let mapped = map_error(&e);
                if matches!(
                    rv(&e),
                    Some(
                        RvError::PinIncorrect
                            | RvError::PinLocked
                            | RvError::PinInvalid
                            | RvError::PinLenRange
                            | RvError::PinExpired
                    )
                ) && let KmsError::AccessDenied { message } = &mapped
                {
                    login.refused = Some(format!(
                        "{message} (this instance does not retry a refused PIN, so as not to lock the token)"
                    ));
                    login.pin = None;
                }
                Err(mapped)
            }
        }
    }

    fn protected_authentication_path(&self) -> bool {
        let slot = *lock(&self.slot);
        self.ctx.get_token_info(slot).is_ok_and(|i| i.protected_authentication_path())
    }
}

/// The one initialized token the URI selects.
fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri, module: &Path) -> Result<(Slot, String), KmsError> {
    let slots = ctx.get_slots_with_token().map_err(|e| map_error(&e))?;
    let mut present = Vec::new();
    let mut matching = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else { continue };
        if !info.token_initialized() {
            continue;
        }
        let label = info.label().to_string();
        if uri.matches_token(slot.id(), &label, info.manufacturer_id(), info.model(), info.serial_number()) {
            matching.push((slot, label.clone()));
        }
        present.push(label);
    }
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(KmsError::Unavailable {
            message: format!(
                "no initialized PKCS#11 token matches {uri} in module {} (tokens present: {})",
                module.display(),
                if present.is_empty() { "none".to_string() } else { format!("{present:?}") }
            ),
            retryable: false,
        }),
        n => Err(KmsError::InvalidRequest {
            message: format!("{n} PKCS#11 tokens match {uri}: add `token=`, `serial=` or `slot-id=` to the URI"),
        }),
    }
}
