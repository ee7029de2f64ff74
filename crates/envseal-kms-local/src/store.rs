//! [`LocalKms`]: opening and creating a keystore, and the locked read / mutate cycle.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use zeroize::Zeroizing;

use envseal_core::KmsError;

use crate::crypto::{KEY_LEN, Kek, KeystoreId, VersionKeys};
use crate::error::LocalError;
use crate::files::{self, Stamp};
use crate::format::{self, KeyRecord, KeystoreFile, ProtectionRecord, StateRecord, UnlockRecord, VersionRecord};
use crate::unlock::{self, InitOptions, MASTER_KEY_FILE, SALT_LEN, Unlock, UnlockMode};

/// File name of the keystore.
pub const KEYSTORE_FILE: &str = "keystore.json";
/// File name of the lock file.
pub const LOCK_FILE: &str = "keystore.lock";
/// Alias of the key created with the keystore.
pub const DEFAULT_ALIAS: &str = "alias/default";

/// The local file keystore: envseal's embedded, offline KMS (`local:`).
///
/// Cheap to clone (an `Arc` inside); clones share the in-memory cache. Every operation takes
/// the keystore's file lock, so several instances and several processes may use one keystore
/// at once. File I/O is blocking: the files are small and local.
#[derive(Clone)]
pub struct LocalKms {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    dir: PathBuf,
    keystore_path: PathBuf,
    lock_path: PathBuf,
    keystore_id: KeystoreId,
    unlock: UnlockRecord,
    kek: Kek,
    cache: Mutex<Cache>,
    /// How many times the file was (re-)read, for tests of the stamp logic.
    loads: AtomicU64,
}

/// The last state loaded, and the keys derived from decrypted material.
pub(crate) struct Cache {
    stamp: Option<Stamp>,
    pub(crate) file: KeystoreFile,
    versions: HashMap<(String, u32), Arc<VersionKeys>>,
}

impl fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKms")
            .field("dir", &self.inner.dir)
            .field("keystore_id", &hex::encode(self.inner.keystore_id))
            .field("unlock", &self.inner.unlock.mode())
            .finish_non_exhaustive()
    }
}

/// What a read or mutation closure gets besides the keystore file.
pub(crate) struct Session<'a> {
    inner: &'a Inner,
    versions: &'a mut HashMap<(String, u32), Arc<VersionKeys>>,
    /// Now, unix seconds.
    pub(crate) now: u64,
}

impl Session<'_> {
    pub(crate) fn keystore_id(&self) -> &KeystoreId {
        &self.inner.keystore_id
    }

    /// The keys of `version` of `key`, decrypting its material on first use.
    pub(crate) fn version_keys(&mut self, key: &KeyRecord, version: u32) -> Result<Arc<VersionKeys>, KmsError> {
        let slot = (key.id.clone(), version);
        if let Some(k) = self.versions.get(&slot) {
            return Ok(k.clone());
        }
        let not_found = || KmsError::KeyVersionNotFound { key: key.id.clone(), version: version.to_string() };
        let index = usize::try_from(version).ok().and_then(|v| v.checked_sub(1)).ok_or_else(not_found)?;
        let record = key.versions.get(index).ok_or_else(not_found)?;
        let material = format::decode_b64(&record.material)
            .and_then(|sealed| self.inner.kek.open_material(&self.inner.keystore_id, &key.id, version, &sealed))
            .ok_or_else(|| KmsError::Unavailable {
                message: format!(
                    "key material of {} version {version} in {} does not authenticate: the keystore file was altered",
                    key.id,
                    self.inner.keystore_path.display()
                ),
                retryable: false,
            })?;
        let keys = Arc::new(VersionKeys::derive(&material));
        self.versions.insert(slot, keys.clone());
        Ok(keys)
    }

    /// A new key record with one version of fresh random material.
    pub(crate) fn new_key(&self, description: String, tags: BTreeMap<String, String>) -> KeyRecord {
        let id = format::new_key_id();
        let version = self.new_version(&id, 1);
        KeyRecord {
            id,
            description,
            state: StateRecord::Enabled,
            protection_level: ProtectionRecord::Software,
            created: self.now,
            deletion_date: None,
            aliases: Vec::new(),
            tags,
            min_decryption_version: None,
            rotation_interval_secs: None,
            next_rotation: None,
            versions: vec![version],
        }
    }

    /// Version `version` of `key_id` with fresh random material, sealed under the KEK.
    pub(crate) fn new_version(&self, key_id: &str, version: u32) -> VersionRecord {
        let material = Zeroizing::new(envseal_core::random::array::<KEY_LEN>());
        let sealed = self.inner.kek.seal_material(&self.inner.keystore_id, key_id, version, &material);
        VersionRecord { id: version.to_string(), created: self.now, material: format::encode_b64(&sealed) }
    }
}

impl LocalKms {
    /// The default keystore directory: `$ENVSEAL_HOME` if set, else `$XDG_DATA_HOME/envseal`,
    /// else `~/.local/share/envseal`. Empty variables count as unset, and a relative
    /// `XDG_DATA_HOME` is ignored, as the XDG spec says.
    ///
    /// # Errors
    /// [`LocalError::NoHome`] when none of the variables is set.
    pub fn default_dir() -> Result<PathBuf, LocalError> {
        default_dir_from(|name| std::env::var_os(name))
    }

    /// Whether `dir` holds a keystore file (nothing is checked or unlocked).
    pub fn exists(dir: &Path) -> bool {
        std::fs::symlink_metadata(dir.join(KEYSTORE_FILE)).is_ok()
    }

    /// The unlock mode of the keystore in `dir`, read without unlocking it (so a caller knows
    /// whether to ask for a passphrase).
    ///
    /// # Errors
    /// [`LocalError::NotFound`]; the permission, symlink and format errors of [`LocalKms::open`].
    pub fn unlock_mode(dir: &Path) -> Result<UnlockMode, LocalError> {
        let (file, _, _) = load(dir)?;
        Ok(file.unlock.mode())
    }

    /// Opens an existing keystore.
    ///
    /// # Errors
    /// [`LocalError::NotFound`] if there is none; [`LocalError::InsecurePermissions`] or
    /// [`LocalError::Symlink`] if the directory or a file is exposed;
    /// [`LocalError::WrongUnlockMode`], [`LocalError::WrongPassphrase`] or
    /// [`LocalError::WrongMasterKey`] if `unlock` does not open it;
    /// [`LocalError::MasterKeyFile`] if the master key file is missing or malformed;
    /// [`LocalError::Corrupt`] or [`LocalError::UnsupportedVersion`] for a bad file;
    /// [`LocalError::Io`].
    pub fn open(dir: impl AsRef<Path>, unlock: Unlock) -> Result<LocalKms, LocalError> {
        let dir = dir.as_ref();
        let (file, keystore_id, stamp) = load(dir)?;
        let kek = unlock_kek(dir, &file, keystore_id, &unlock)?;
        Ok(LocalKms::from_parts(dir, file, keystore_id, stamp, kek))
    }

    /// Opens the keystore in `dir`, creating it (with a first key aliased `alias/default`) if
    /// there is none. Default Argon2id parameters are used for a new passphrase keystore.
    ///
    /// # Errors
    /// Those of [`LocalKms::open`] and [`LocalKms::init`].
    pub fn open_or_create(dir: impl AsRef<Path>, unlock: Unlock) -> Result<LocalKms, LocalError> {
        Self::open_or_create_with(dir, InitOptions::new(unlock))
    }

    /// [`LocalKms::open_or_create`] with explicit creation options.
    ///
    /// # Errors
    /// Those of [`LocalKms::open`] and [`LocalKms::init`].
    pub fn open_or_create_with(dir: impl AsRef<Path>, options: InitOptions) -> Result<LocalKms, LocalError> {
        let dir = dir.as_ref();
        // `None`: another process created it between our check and our lock.
        if !Self::exists(dir)
            && let Some(kms) = Self::create(dir, &options)?
        {
            return Ok(kms);
        }
        Self::open(dir, options.unlock)
    }

    /// Creates a keystore in `dir` (creating the directory, mode 0700), with a first key
    /// aliased `alias/default`. In master-key-file mode the master key file is created too
    /// (mode 0600) unless it exists, in which case that key is used.
    ///
    /// # Errors
    /// [`LocalError::AlreadyExists`] if `dir` already holds a keystore;
    /// [`LocalError::InvalidOption`] for an empty passphrase or bad Argon2 parameters;
    /// permission and I/O errors.
    pub fn init(dir: impl AsRef<Path>, options: InitOptions) -> Result<LocalKms, LocalError> {
        let dir = dir.as_ref();
        Self::create(dir, &options)?.ok_or_else(|| LocalError::AlreadyExists { dir: dir.to_path_buf() })
    }

    /// Creates the keystore under the exclusive lock; `Ok(None)` if one already exists.
    fn create(dir: &Path, options: &InitOptions) -> Result<Option<LocalKms>, LocalError> {
        if let Unlock::Passphrase(p) = &options.unlock {
            if p.is_empty() {
                return Err(LocalError::InvalidOption("the passphrase is empty"));
            }
            options.argon2.validate()?;
        }
        files::ensure_dir(dir)?;
        files::check_dir(dir)?;
        let keystore_path = dir.join(KEYSTORE_FILE);
        let _lock = files::lock_exclusive(&dir.join(LOCK_FILE))?;
        if files::check_file(&keystore_path)? {
            return Ok(None);
        }
        let keystore_id: KeystoreId = envseal_core::random::array();
        let (unlock, kek) = match &options.unlock {
            Unlock::MasterKeyFile(path) => {
                let explicit = path.is_some();
                let path = path.clone().unwrap_or_else(|| dir.join(MASTER_KEY_FILE));
                let exists = if explicit { path.exists() } else { files::check_file(&path)? };
                let master =
                    if exists { unlock::read_master_key(&path, explicit)? } else { unlock::create_master_key(&path)? };
                (UnlockRecord::MasterKeyFile, Kek::from_master_key(&master, &keystore_id))
            }
            Unlock::Passphrase(p) => {
                let salt: [u8; SALT_LEN] = envseal_core::random::array();
                let kek = unlock::passphrase_kek(p.expose_secret(), &salt, &options.argon2)?;
                (UnlockRecord::passphrase(&salt, &options.argon2), kek)
            }
        };
        let check = kek.make_check(&keystore_id, unlock.mode().as_str());
        let file = KeystoreFile {
            format: format::FORMAT_VERSION,
            keystore_id: hex::encode(keystore_id),
            unlock,
            check: format::encode_b64(&check),
            keys: Vec::new(),
        };
        let kms = LocalKms::from_parts(dir, file, keystore_id, None, kek);
        {
            let mut cache = kms.inner.lock_cache();
            let cache = &mut *cache;
            let session = Session { inner: &kms.inner, versions: &mut cache.versions, now: format::now_secs() };
            let mut key = session.new_key("Default key, created with the keystore".into(), BTreeMap::new());
            key.aliases.push(DEFAULT_ALIAS.into());
            cache.file.keys.push(key);
            cache.stamp = Some(files::write_atomic(&keystore_path, &format::to_bytes(&cache.file))?);
        }
        Ok(Some(kms))
    }

    fn from_parts(dir: &Path, file: KeystoreFile, keystore_id: KeystoreId, stamp: Option<Stamp>, kek: Kek) -> Self {
        LocalKms {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                keystore_path: dir.join(KEYSTORE_FILE),
                lock_path: dir.join(LOCK_FILE),
                keystore_id,
                unlock: file.unlock.clone(),
                kek,
                cache: Mutex::new(Cache { stamp, file, versions: HashMap::new() }),
                loads: AtomicU64::new(0),
            }),
        }
    }

    /// The keystore directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The keystore id (32 lowercase hex digits), which every blob of this keystore carries.
    pub fn keystore_id(&self) -> String {
        hex::encode(self.inner.keystore_id)
    }

    /// How this keystore is unlocked.
    pub fn mode(&self) -> UnlockMode {
        self.inner.unlock.mode()
    }

    /// Runs `f` on the current state, under a shared file lock held only while the file is
    /// re-read (when its stamp changed since the last load).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&KeystoreFile, &mut Session<'_>) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let inner = &*self.inner;
        let mut cache = inner.lock_cache();
        {
            let _lock = files::lock_shared(&inner.lock_path)?;
            let current = files::stamp(&inner.keystore_path)?;
            if current.is_none() || current != cache.stamp {
                inner.reload(&mut cache)?;
            }
        }
        let cache = &mut *cache;
        let mut session = Session { inner, versions: &mut cache.versions, now: format::now_secs() };
        f(&cache.file, &mut session)
    }

    /// Runs `f` on a fresh copy of the state under the exclusive file lock, and writes the
    /// result atomically if `f` succeeds. Keys past their deletion date are purged first.
    /// When `f` fails, its changes are dropped (only a purge, if any, is written).
    pub(crate) fn mutate<T>(
        &self,
        f: impl FnOnce(&mut KeystoreFile, &mut Session<'_>) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let inner = &*self.inner;
        let mut cache = inner.lock_cache();
        let _lock = files::lock_exclusive(&inner.lock_path)?;
        files::check_dir(&inner.dir)?;
        inner.reload(&mut cache)?;
        let cache = &mut *cache;
        let now = format::now_secs();
        let mut file = cache.file.clone();
        let purged = file.purge(now);
        let mut session = Session { inner, versions: &mut cache.versions, now };
        let result = f(&mut file, &mut session);
        if result.is_ok() || purged {
            if result.is_err() {
                // `f` changed nothing: write only the purge.
                file = cache.file.clone();
                file.purge(now);
            }
            let stamp = files::write_atomic(&inner.keystore_path, &format::to_bytes(&file))?;
            cache.stamp = Some(stamp);
            cache.versions.retain(|(id, _), _| file.keys.iter().any(|k| &k.id == id));
            cache.file = file;
        }
        result
    }
}

impl Inner {
    fn lock_cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|poisoned| {
            // A panic mid-operation may have left the cache half-updated: force a reload.
            let mut guard = poisoned.into_inner();
            guard.stamp = None;
            guard
        })
    }

    /// Re-reads the keystore file (the caller holds a file lock) and checks it is still ours.
    fn reload(&self, cache: &mut Cache) -> Result<(), LocalError> {
        let (bytes, stamp) =
            files::read_checked(&self.keystore_path)?.ok_or_else(|| LocalError::NotFound { dir: self.dir.clone() })?;
        self.loads.fetch_add(1, Ordering::Relaxed);
        let (file, id) = format::parse(&self.keystore_path, &bytes)?;
        if id != self.keystore_id || file.unlock != self.unlock || file.check != cache.file.check {
            return Err(LocalError::Replaced { dir: self.dir.clone() });
        }
        if cache.file.keys != file.keys {
            // Material is immutable once written, but a cheap clear keeps the cache exactly the
            // file's (e.g. after a restore from backup under the same keystore id).
            cache.versions.clear();
        }
        cache.file = file;
        cache.stamp = Some(stamp);
        Ok(())
    }
}

/// [`LocalKms::default_dir`] with the environment given as a lookup function.
fn default_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, LocalError> {
    let var = |name| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(home) = var("ENVSEAL_HOME") {
        return Ok(home);
    }
    if let Some(data) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(data.join("envseal"));
    }
    var("HOME").map(|h| h.join(".local").join("share").join("envseal")).ok_or(LocalError::NoHome)
}

/// Reads and validates the keystore in `dir` under a shared lock.
fn load(dir: &Path) -> Result<(KeystoreFile, KeystoreId, Option<Stamp>), LocalError> {
    let keystore_path = dir.join(KEYSTORE_FILE);
    if !LocalKms::exists(dir) {
        return Err(LocalError::NotFound { dir: dir.to_path_buf() });
    }
    files::check_dir(dir)?;
    let _lock = files::lock_shared(&dir.join(LOCK_FILE))?;
    let (bytes, stamp) =
        files::read_checked(&keystore_path)?.ok_or_else(|| LocalError::NotFound { dir: dir.to_path_buf() })?;
    let (file, id) = format::parse(&keystore_path, &bytes)?;
    Ok((file, id, Some(stamp)))
}

/// Derives the KEK with `unlock` and checks it against the keystore's check value.
fn unlock_kek(dir: &Path, file: &KeystoreFile, keystore_id: KeystoreId, unlock: &Unlock) -> Result<Kek, LocalError> {
    let found = file.unlock.mode();
    if unlock.mode() != found {
        return Err(LocalError::WrongUnlockMode {
            dir: dir.to_path_buf(),
            found: found.describe(),
            given: unlock.mode().describe(),
        });
    }
    // Invariant: validated on load.
    let check = format::decode_b64(&file.check).ok_or_else(|| LocalError::corrupt(dir.join(KEYSTORE_FILE), "check"))?;
    match (unlock, &file.unlock) {
        (Unlock::MasterKeyFile(path), UnlockRecord::MasterKeyFile) => {
            let explicit = path.is_some();
            let path = path.clone().unwrap_or_else(|| dir.join(MASTER_KEY_FILE));
            let master = unlock::read_master_key(&path, explicit)?;
            let kek = Kek::from_master_key(&master, &keystore_id);
            if !kek.verify_check(&keystore_id, found.as_str(), &check) {
                return Err(LocalError::WrongMasterKey { dir: dir.to_path_buf(), key_file: path });
            }
            Ok(kek)
        }
        (Unlock::Passphrase(p), UnlockRecord::Passphrase { salt, m_cost_kib, t_cost, p_cost, .. }) => {
            let salt = format::decode_b64(salt).ok_or_else(|| LocalError::corrupt(dir.join(KEYSTORE_FILE), "salt"))?;
            let params = unlock::Argon2Params { m_cost_kib: *m_cost_kib, t_cost: *t_cost, p_cost: *p_cost };
            let kek = unlock::passphrase_kek(p.expose_secret(), &salt, &params)?;
            if !kek.verify_check(&keystore_id, found.as_str(), &check) {
                return Err(LocalError::WrongPassphrase { dir: dir.to_path_buf() });
            }
            Ok(kek)
        }
        // Modes compared above.
        _ => Err(LocalError::WrongUnlockMode {
            dir: dir.to_path_buf(),
            found: found.describe(),
            given: unlock.mode().describe(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(vars: &[(&str, &str)]) -> Result<PathBuf, LocalError> {
        default_dir_from(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v)))
    }

    #[test]
    fn default_dir_precedence() {
        let all = [("ENVSEAL_HOME", "/e"), ("XDG_DATA_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(dir_with(&all).unwrap(), PathBuf::from("/e"));
        assert_eq!(dir_with(&all[1..]).unwrap(), PathBuf::from("/x/envseal"));
        assert_eq!(dir_with(&all[2..]).unwrap(), PathBuf::from("/h/.local/share/envseal"));
        // Empty counts as unset; a relative XDG_DATA_HOME is ignored.
        assert_eq!(
            dir_with(&[("ENVSEAL_HOME", ""), ("XDG_DATA_HOME", "rel"), ("HOME", "/h")]).unwrap(),
            PathBuf::from("/h/.local/share/envseal")
        );
        assert!(matches!(dir_with(&[]), Err(LocalError::NoHome)));
    }

    #[test]
    fn reads_reload_only_when_the_file_changed() {
        use envseal_core::KeyManager;
        use std::os::unix::fs::PermissionsExt;

        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let a = LocalKms::open_or_create(t.path(), Unlock::master_key_file()).unwrap();
        let b = LocalKms::open(t.path(), Unlock::master_key_file()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let loads = |k: &LocalKms| k.inner.loads.load(Ordering::Relaxed);

        for _ in 0..3 {
            assert_eq!(rt.block_on(b.list_keys()).unwrap().len(), 1);
        }
        assert_eq!(loads(&b), 0, "open loaded the file; nothing changed since");
        rt.block_on(a.create_key(&Default::default())).unwrap();
        assert_eq!(loads(&a), 1, "a mutation always re-reads");
        assert_eq!(rt.block_on(b.list_keys()).unwrap().len(), 2);
        assert_eq!(loads(&b), 1);
        assert_eq!(rt.block_on(b.list_keys()).unwrap().len(), 2);
        assert_eq!(rt.block_on(a.list_keys()).unwrap().len(), 2);
        assert_eq!((loads(&a), loads(&b)), (1, 1), "a knows the stamp of what it wrote");
    }
}
