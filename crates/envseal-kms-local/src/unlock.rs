//! How a keystore is unlocked: a master key file or a passphrase (Argon2id).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use envseal_core::SecretBytes;

use crate::crypto::{KEY_LEN, Kek};
use crate::error::LocalError;
use crate::files;

/// File name of the master key inside the keystore directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// How to unlock (or, on creation, protect) a keystore.
#[non_exhaustive]
pub enum Unlock {
    /// A 32-byte random master key in a file: `master.key` in the keystore directory when
    /// `None`, else the given path (the CLI passes `ENVSEAL_MASTER_KEY_FILE`). The file holds
    /// the 32 raw bytes, or 64 hex digits optionally followed by a newline. It is created (mode
    /// 0600) with the keystore if it does not exist.
    MasterKeyFile(Option<PathBuf>),
    /// A passphrase, stretched with Argon2id into the key-encryption key. Its UTF-8 bytes are
    /// used as they are (no Unicode normalization).
    Passphrase(SecretBytes),
}

impl fmt::Debug for Unlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unlock::MasterKeyFile(path) => f.debug_tuple("MasterKeyFile").field(path).finish(),
            // Not even the length.
            Unlock::Passphrase(_) => f.write_str("Passphrase([REDACTED])"),
        }
    }
}

impl Unlock {
    /// The default: `master.key` in the keystore directory.
    pub fn master_key_file() -> Self {
        Unlock::MasterKeyFile(None)
    }

    /// A passphrase unlock; the string is moved into a zeroizing buffer.
    pub fn passphrase(passphrase: impl Into<String>) -> Self {
        Unlock::Passphrase(SecretBytes::new(passphrase.into().into_bytes()))
    }

    pub(crate) fn mode(&self) -> UnlockMode {
        match self {
            Unlock::MasterKeyFile(_) => UnlockMode::MasterKeyFile,
            Unlock::Passphrase(_) => UnlockMode::Passphrase,
        }
    }
}

/// Which unlock mode a keystore uses (readable without unlocking it, see
/// [`LocalKms::unlock_mode`](crate::LocalKms::unlock_mode)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnlockMode {
    /// Unlocked by a master key file.
    MasterKeyFile,
    /// Unlocked by a passphrase.
    Passphrase,
}

impl UnlockMode {
    /// `master-key-file` or `passphrase`, as recorded in `keystore.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            UnlockMode::MasterKeyFile => "master-key-file",
            UnlockMode::Passphrase => "passphrase",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            UnlockMode::MasterKeyFile => "master key file",
            UnlockMode::Passphrase => "passphrase",
        }
    }
}

/// Argon2id cost parameters for a passphrase keystore (stored in `keystore.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Argon2Params {
    /// The defaults: 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: Self = Self { m_cost_kib: 64 * 1024, t_cost: 3, p_cost: 1 };

    /// Most memory accepted from a keystore file (4 GiB), so a crafted file cannot exhaust memory.
    pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
    /// Most passes accepted from a keystore file.
    pub const MAX_T_COST: u32 = 64;
    /// Most lanes accepted from a keystore file.
    pub const MAX_P_COST: u32 = 64;

    /// Checks the parameters: Argon2's own minimums (t ≥ 1, p ≥ 1, m ≥ 8·p KiB) and this
    /// crate's maximums.
    ///
    /// # Errors
    /// [`LocalError::InvalidOption`] naming the parameter.
    pub fn validate(&self) -> Result<(), LocalError> {
        if self.t_cost == 0 || self.t_cost > Self::MAX_T_COST {
            return Err(LocalError::InvalidOption("Argon2 t_cost must be in 1..=64"));
        }
        if self.p_cost == 0 || self.p_cost > Self::MAX_P_COST {
            return Err(LocalError::InvalidOption("Argon2 p_cost must be in 1..=64"));
        }
        if self.m_cost_kib < 8 * self.p_cost || self.m_cost_kib > Self::MAX_M_COST_KIB {
            return Err(LocalError::InvalidOption("Argon2 m_cost_kib must be in 8*p_cost..=4194304"));
        }
        Ok(())
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Options for creating a keystore.
#[derive(Debug)]
#[non_exhaustive]
pub struct InitOptions {
    /// How the keystore is protected.
    pub unlock: Unlock,
    /// Argon2id parameters (passphrase mode only). Lower them only in tests.
    pub argon2: Argon2Params,
}

impl InitOptions {
    /// Options with the default Argon2id parameters.
    pub fn new(unlock: Unlock) -> Self {
        Self { unlock, argon2: Argon2Params::DEFAULT }
    }

    /// Sets the Argon2id parameters.
    pub fn with_argon2(mut self, params: Argon2Params) -> Self {
        self.argon2 = params;
        self
    }
}

/// Argon2id salt length.
pub(crate) const SALT_LEN: usize = 16;
/// Argon2 version 0x13, the one recorded in the keystore.
pub(crate) const ARGON2_VERSION: u32 = 0x13;

/// KEK = Argon2id(passphrase, salt, params), 32 bytes.
pub(crate) fn passphrase_kek(passphrase: &[u8], salt: &[u8], params: &Argon2Params) -> Result<Kek, LocalError> {
    params.validate()?;
    let p = argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(KEY_LEN))
        .map_err(|_| LocalError::InvalidOption("Argon2 parameters rejected"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    a.hash_password_into(passphrase, salt, &mut out[..])
        .map_err(|_| LocalError::InvalidOption("Argon2 could not derive the key (salt, length or memory)"))?;
    Ok(Kek::from_bytes(out))
}

/// Reads a master key file: 32 raw bytes, or 64 hex digits and an optional newline.
///
/// The default file (in the keystore directory) must not be a symlink; an explicit path may be
/// one (secret mounts often are), but its target must still be a regular file without group or
/// other access.
pub(crate) fn read_master_key(path: &Path, explicit: bool) -> Result<Zeroizing<[u8; KEY_LEN]>, LocalError> {
    let bad = |reason| LocalError::MasterKeyFile { path: path.to_path_buf(), reason };
    let meta = if explicit { fs::metadata(path) } else { fs::symlink_metadata(path) };
    let meta = match meta {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(bad("not found")),
        Err(e) => return Err(LocalError::io(path, e)),
    };
    files::check_file_meta(path, &meta)?;
    if meta.len() > 128 {
        return Err(bad("too large: expected 32 bytes or 64 hex digits"));
    }
    let raw = Zeroizing::new(fs::read(path).map_err(|e| LocalError::io(path, e))?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if raw.len() == KEY_LEN {
        key.copy_from_slice(&raw);
        return Ok(key);
    }
    let text = raw.strip_suffix(b"\n").unwrap_or(&raw);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.len() == 2 * KEY_LEN && hex::decode_to_slice(text, &mut key[..]).is_ok() {
        return Ok(key);
    }
    Err(bad("expected 32 bytes or 64 hex digits"))
}

/// Creates a master key file with 32 random bytes (mode 0600), never replacing an existing one.
pub(crate) fn create_master_key(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, LocalError> {
    let key = Zeroizing::new(envseal_core::random::array::<KEY_LEN>());
    files::write_new(path, &key[..])?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_bounds() {
        assert!(Argon2Params::DEFAULT.validate().is_ok());
        assert!(Argon2Params { m_cost_kib: 8, t_cost: 1, p_cost: 1 }.validate().is_ok());
        assert!(Argon2Params { m_cost_kib: 7, t_cost: 1, p_cost: 1 }.validate().is_err());
        assert!(Argon2Params { m_cost_kib: 64, t_cost: 0, p_cost: 1 }.validate().is_err());
        assert!(Argon2Params { m_cost_kib: 64, t_cost: 1, p_cost: 0 }.validate().is_err());
        assert!(Argon2Params { m_cost_kib: u32::MAX, t_cost: 1, p_cost: 1 }.validate().is_err());
    }

    /// Pins our use of the argon2 crate against an independent implementation (argon2-cffi,
    /// i.e. the reference C code): `hash_secret_raw(b"password", b"somesalt", time_cost=2,
    /// memory_cost=64, parallelism=1, hash_len=32, type=ID, version=19)`.
    #[test]
    fn argon2id_known_answer() {
        let params = Argon2Params { m_cost_kib: 64, t_cost: 2, p_cost: 1 };
        let kek = passphrase_kek(b"password", b"somesalt", &params).unwrap();
        assert_eq!(hex::encode(kek.test_bytes()), "16a1a498734609dd01456da406de9f3d9da93e6c86c300a12fc1465214ce4922");
        let other = passphrase_kek(b"passwore", b"somesalt", &params).unwrap();
        assert_ne!(kek.test_bytes(), other.test_bytes());
    }
}
