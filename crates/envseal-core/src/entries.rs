//! Wrapped-key entries (FORMAT.md §2.4) and the data-key lifecycle around them, each in one
//! place: the entry codec, the multi-recipient wrap of a fresh data key, which keys a reader
//! trusts, and the checked unwrap that every opener and rewrap job goes through.
//!
//! Entries are not authenticated by the data key (FORMAT.md §1.3): a backend name, key id,
//! key version or blob is untrusted until the KMS has unwrapped the blob under the object's own
//! context, the KMS's report of key id and version agrees with the entry, and the data key it
//! yields passes the object's key commitment. [`unwrap_verified`] does exactly that, entry by
//! entry, and moves on to the next entry whenever one fails, so a prepended bogus entry can never
//! block a valid one.

use crate::context::EncryptionContext;
use crate::datakey::DataKey;
use crate::error::{Error, FormatError, KeyAttempt, KmsError};
use crate::kms::{self, Kms, WrappedKey};
use crate::wire::{self, Take};

/// Most wrapped-key entries per sealed object.
pub const MAX_ENTRIES: usize = 16;
/// Longest backend name.
pub const MAX_BACKEND_LEN: usize = 32;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 2048;
/// Longest key version.
pub const MAX_KEY_VERSION_LEN: usize = 256;
/// Longest wrapped-key blob.
pub const MAX_BLOB_LEN: usize = 8192;

fn backend_name_ok(b: &[u8]) -> bool {
    b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Checks an entry against the bounds of FORMAT.md §2.4 (what [`encode`] would refuse).
///
/// # Errors
/// [`FormatError::LimitExceeded`] for a backend name of 0 or more than 32 bytes and for
/// oversize strings or blobs; [`FormatError::Malformed`] for other bytes in the backend name and
/// for an empty blob.
pub fn validate(e: &WrappedKey) -> Result<(), FormatError> {
    let blen = e.backend.len();
    if blen == 0 || blen > MAX_BACKEND_LEN {
        return Err(FormatError::LimitExceeded {
            what: "backend name length (1 to 32)",
            value: blen as u64,
            max: MAX_BACKEND_LEN as u64,
        });
    }
    if !backend_name_ok(e.backend.as_bytes()) {
        return Err(FormatError::Malformed("backend name must be [a-z0-9-]"));
    }
    for (len, max, what) in [
        (e.key_id.len(), MAX_KEY_ID_LEN, "key id length"),
        (e.key_version.len(), MAX_KEY_VERSION_LEN, "key version length"),
        (e.blob.len(), MAX_BLOB_LEN, "wrapped key length"),
    ] {
        if len > max {
            return Err(FormatError::LimitExceeded { what, value: len as u64, max: max as u64 });
        }
    }
    if e.blob.is_empty() {
        return Err(FormatError::Malformed("empty wrapped key"));
    }
    Ok(())
}

/// Appends the encoding of one entry (FORMAT.md §2.4).
///
/// # Errors
/// As [`validate`].
pub fn encode(out: &mut Vec<u8>, e: &WrappedKey) -> Result<(), FormatError> {
    validate(e)?;
    out.push(e.backend.len() as u8);
    out.extend_from_slice(e.backend.as_bytes());
    wire::put_bytes16(out, e.key_id.as_bytes());
    wire::put_bytes16(out, e.key_version.as_bytes());
    wire::put_bytes16(out, &e.blob);
    Ok(())
}

/// The backend name length, checked (FORMAT.md §2.4).
fn backend_len<T: Take>(t: &mut T) -> Result<usize, T::Error> {
    let blen = t.take(1)?[0] as usize;
    if blen == 0 || blen > MAX_BACKEND_LEN {
        return Err(FormatError::LimitExceeded {
            what: "backend name length (1 to 32)",
            value: blen as u64,
            max: MAX_BACKEND_LEN as u64,
        }
        .into());
    }
    Ok(blen)
}

/// The backend name's bytes, checked against `[a-z0-9-]`.
fn backend_bytes<T: Take>(t: &mut T, blen: usize) -> Result<&[u8], T::Error> {
    let backend = t.take(blen)?;
    if !backend_name_ok(backend) {
        return Err(FormatError::Malformed("backend name must be [a-z0-9-]").into());
    }
    Ok(backend)
}

/// Reads one entry, checking each length before its bytes are read (FORMAT.md §2.4).
pub(crate) fn decode<T: Take>(t: &mut T) -> Result<WrappedKey, T::Error> {
    let blen = backend_len(t)?;
    // Invariant: only ASCII bytes pass `backend_bytes`.
    let backend = String::from_utf8(backend_bytes(t, blen)?.to_vec()).expect("ASCII backend name");
    let key_id = wire::take_string16(t, MAX_KEY_ID_LEN, "key id length")?;
    let key_version = wire::take_string16(t, MAX_KEY_VERSION_LEN, "key version length")?;
    let blob = wire::take_bytes16(t, MAX_BLOB_LEN, "wrapped key length")?;
    if blob.is_empty() {
        return Err(FormatError::Malformed("empty wrapped key").into());
    }
    Ok(WrappedKey { backend, key_id, key_version, blob })
}

/// Checks one entry exactly as [`decode`] does (same bounds, same errors) without building it:
/// no allocation, for the field envelope's parse on the warm path.
pub(crate) fn check(r: &mut wire::Reader<'_>) -> Result<(), FormatError> {
    let blen = backend_len(r)?;
    backend_bytes(r, blen)?;
    for (max, what) in [(MAX_KEY_ID_LEN, "key id length"), (MAX_KEY_VERSION_LEN, "key version length")] {
        std::str::from_utf8(take_slice16(r, max, what)?).map_err(|_| FormatError::Malformed("string is not UTF-8"))?;
    }
    if take_slice16(r, MAX_BLOB_LEN, "wrapped key length")?.is_empty() {
        return Err(FormatError::Malformed("empty wrapped key"));
    }
    Ok(())
}

/// A u16-length-prefixed byte string of at most `max` bytes, borrowed (as
/// [`wire::take_bytes16`], without the copy).
fn take_slice16<'a>(r: &mut wire::Reader<'a>, max: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
    let len = u16::from_be_bytes(r.take(2)?.try_into().map_err(|_| FormatError::Truncated)?) as usize;
    if len > max {
        return Err(FormatError::LimitExceeded { what, value: len as u64, max: max as u64 });
    }
    r.take(len)
}

/// A KMS key to wrap a new object's data key under.
#[derive(Clone, Copy, Debug)]
pub struct Recipient<'a> {
    /// The backend.
    pub kms: &'a dyn Kms,
    /// Key id or alias.
    pub key: &'a str,
}

/// Makes a fresh data key for a new object: generated under the first recipient, encrypted
/// under each other one (any entry opens the object), all bound to `kms_context`.
///
/// # Errors
/// [`FormatError::LimitExceeded`] for no recipient or more than [`MAX_ENTRIES`]; the
/// [`KmsError`]s of the KMS calls; [`FormatError`] if a KMS returns an entry outside the bounds.
pub async fn wrap_new(
    recipients: &[Recipient<'_>],
    kms_context: &EncryptionContext,
) -> Result<(DataKey, Vec<WrappedKey>), Error> {
    if recipients.is_empty() || recipients.len() > MAX_ENTRIES {
        return Err(FormatError::LimitExceeded {
            what: "recipients",
            value: recipients.len() as u64,
            max: MAX_ENTRIES as u64,
        }
        .into());
    }
    let first = recipients[0].kms.generate_data_key(recipients[0].key, kms_context).await?;
    let mut entries = vec![first.wrapped];
    for r in &recipients[1..] {
        entries.push(r.kms.encrypt(r.key, first.data_key.expose_secret(), kms_context).await?);
    }
    for e in &entries {
        validate(e)?;
    }
    Ok((first.data_key, entries))
}

/// A key a reader accepts: a backend name and a canonical key id (`*` for every key of the
/// backend).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AllowedKey {
    /// Backend name, as recorded in entries (`local`, `aws-kms`, ...).
    pub backend: String,
    /// Canonical key id as the backend records it in entries, or `*`.
    pub key_id: String,
}

impl AllowedKey {
    /// A key of a backend.
    pub fn new(backend: impl Into<String>, key_id: impl Into<String>) -> Self {
        Self { backend: backend.into(), key_id: key_id.into() }
    }

    fn permits(&self, e: &WrappedKey) -> bool {
        self.backend == e.backend && (self.key_id == "*" || self.key_id == e.key_id)
    }
}

/// Which wrapped-key entries a reader may send to a KMS (the AWS Encryption SDK's "strict" and
/// "discovery" modes).
///
/// With [`Trust::Discovery`] every entry is tried, with whatever backend it names: anyone who
/// can write the file and holds *any* key the reader can decrypt with can then replace the whole
/// object. With [`Trust::Allow`] only entries naming an allowed key are tried; the others are
/// refused before any KMS call ([`Error::KeyNotAllowed`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trust {
    /// Try every entry (the explicit choice when no key is named).
    #[default]
    Discovery,
    /// Try only entries whose backend and key id are in the list.
    Allow(Vec<AllowedKey>),
}

impl Trust {
    /// Whether `entry` may be sent to a KMS. The entry's fields are unauthenticated, so this is
    /// only a filter: an allowed entry still has to unwrap and pass the commitment.
    pub fn permits(&self, entry: &WrappedKey) -> bool {
        match self {
            Trust::Discovery => true,
            Trust::Allow(keys) => keys.iter().any(|k| k.permits(entry)),
        }
    }

    /// Whether this is the strict mode.
    pub fn is_strict(&self) -> bool {
        matches!(self, Trust::Allow(_))
    }
}

/// A check that a data key is the one the object committed to (container commitment and header
/// MAC, value-level or field-envelope commitment).
pub type Check<'a> = dyn Fn(&DataKey) -> Result<(), Error> + Send + Sync + 'a;

/// Unwraps one entry with `kms` and checks that the KMS read the entry's key id and version from
/// the authenticated blob (FORMAT.md §4.5 step 3): an invalid blob or a disagreeing label is
/// [`FormatError::KeyEntryTampered`] with `index`. A wrong context stays
/// [`KmsError::WrongContext`] (what it means depends on the format).
///
/// # Errors
/// As above, and the other [`KmsError`]s of [`Kms::decrypt`].
pub async fn unwrap_one(
    kms: &dyn Kms,
    entry: &WrappedKey,
    kms_context: &EncryptionContext,
    index: usize,
) -> Result<DataKey, Error> {
    let k = kms::decrypt_data_key(kms, entry, kms_context).await.map_err(|e| match e {
        KmsError::InvalidCiphertext => Error::Format(FormatError::KeyEntryTampered { index }),
        e => Error::Kms(e),
    })?;
    if k.key_id != entry.key_id || k.key_version != entry.key_version {
        return Err(FormatError::KeyEntryTampered { index }.into());
    }
    Ok(k.data_key)
}

/// [`unwrap_one`] for objects whose KMS context identifies them from stored bytes (a container
/// header hash, a value-level file id): there a wrong context means the stored header or
/// metadata was altered, or the entry comes from another object ([`FormatError::HeaderTampered`]).
async fn unwrap_bound(
    kms: &dyn Kms,
    entry: &WrappedKey,
    kms_context: &EncryptionContext,
    index: usize,
) -> Result<DataKey, Error> {
    unwrap_one(kms, entry, kms_context, index).await.map_err(|e| match e {
        Error::Kms(KmsError::WrongContext) => Error::Format(FormatError::HeaderTampered),
        e => e,
    })
}

/// Opens a data key from `entries`: tries each entry that `trust` permits, in order, with the
/// KMS of its backend, and returns the first data key that passes `check` (the object's key
/// commitment), with that entry's index. An entry that fails at any step (unwrap, label check,
/// commitment) is recorded and the next one is tried; entries outside `trust` are refused
/// before any KMS call.
///
/// # Errors
/// The single failure when only one entry was considered, else [`Error::NoKeyOpened`] listing
/// each entry's failure ([`Error::KeyNotAllowed`], [`Error::NoBackend`],
/// [`FormatError::KeyEntryTampered`], [`FormatError::HeaderTampered`],
/// [`FormatError::CommitmentMismatch`], KMS errors).
pub async fn unwrap_verified(
    kmses: &[&dyn Kms],
    entries: &[WrappedKey],
    kms_context: &EncryptionContext,
    trust: &Trust,
    check: &Check<'_>,
) -> Result<(DataKey, usize), Error> {
    let mut attempts = Vec::new();
    let attempt = |index: usize, e: &WrappedKey, error: Error| KeyAttempt {
        index,
        backend: e.backend.clone(),
        key_id: e.key_id.clone(),
        error,
    };
    // Refused entries are listed first and never reach a KMS.
    for (index, e) in entries.iter().enumerate().filter(|(_, e)| !trust.permits(e)) {
        attempts.push(attempt(index, e, Error::KeyNotAllowed { backend: e.backend.clone(), key_id: e.key_id.clone() }));
    }
    for (index, entry) in entries.iter().enumerate().filter(|(_, e)| trust.permits(e)) {
        match try_entry(kmses, entry, index, kms_context, check).await {
            Ok(dk) => return Ok((dk, index)),
            Err(e) => attempts.push(attempt(index, entry, e)),
        }
    }
    if attempts.len() == 1 {
        return Err(attempts.pop().map(|a| a.error).unwrap_or(Error::NoKeyOpened(Vec::new())));
    }
    Err(Error::NoKeyOpened(attempts))
}

/// Verifies every entry `trust` permits (unwrap through the KMS of its backend, label check,
/// `check`), for jobs that must know which entries are good: re-keying carries only verified
/// recipients over, since an entry's label alone could name anybody's key. Returns one result
/// per permitted entry, by index; entries outside `trust` are not listed.
pub async fn verify_each(
    kmses: &[&dyn Kms],
    entries: &[WrappedKey],
    kms_context: &EncryptionContext,
    trust: &Trust,
    check: &Check<'_>,
) -> Vec<(usize, Result<(), Error>)> {
    let mut out = Vec::new();
    for (index, entry) in entries.iter().enumerate().filter(|(_, e)| trust.permits(e)) {
        out.push((index, try_entry(kmses, entry, index, kms_context, check).await.map(drop)));
    }
    out
}

/// One entry through the KMS of its backend, the label check and `check`.
async fn try_entry(
    kmses: &[&dyn Kms],
    entry: &WrappedKey,
    index: usize,
    kms_context: &EncryptionContext,
    check: &Check<'_>,
) -> Result<DataKey, Error> {
    let kms = kmses
        .iter()
        .find(|k| k.backend() == entry.backend)
        .ok_or_else(|| Error::NoBackend { backend: entry.backend.clone() })?;
    let dk = unwrap_bound(*kms, entry, kms_context, index).await?;
    check(&dk)?;
    Ok(dk)
}

/// Whether an error says something about the entry itself (it is not a valid wrap of the
/// object's data key under the key it names), rather than about the KMS or the caller's rights:
/// such an entry is *unverifiable*, and a job may go on with the object's other entries.
pub fn is_entry_fault(e: &Error) -> bool {
    match e {
        Error::Format(
            FormatError::KeyEntryTampered { .. }
            | FormatError::HeaderTampered
            | FormatError::CommitmentMismatch
            | FormatError::Malformed(_)
            | FormatError::LimitExceeded { .. },
        ) => true,
        Error::Kms(
            KmsError::InvalidCiphertext
            | KmsError::WrongContext
            | KmsError::KeyNotFound { .. }
            | KmsError::KeyVersionNotFound { .. },
        ) => true,
        Error::NoKeyOpened(a) => !a.is_empty() && a.iter().all(|a| is_entry_fault(&a.error)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(backend: &str, key_id: &str) -> WrappedKey {
        WrappedKey { backend: backend.into(), key_id: key_id.into(), key_version: "1".into(), blob: vec![1; 40] }
    }

    #[test]
    fn codec_round_trip_and_bounds() {
        let e = entry("aws-kms", "arn:aws:kms:eu-west-1:111122223333:key/1");
        let mut out = Vec::new();
        encode(&mut out, &e).unwrap();
        let mut r = wire::Reader::new(&out);
        assert_eq!(decode(&mut r).unwrap(), e);
        assert!(r.remaining().is_empty());
        for (bad, limit) in [
            (WrappedKey { backend: String::new(), ..e.clone() }, true),
            (WrappedKey { backend: "x".repeat(33), ..e.clone() }, true),
            (WrappedKey { backend: "Bad".into(), ..e.clone() }, false),
            (WrappedKey { blob: Vec::new(), ..e.clone() }, false),
            (WrappedKey { blob: vec![0; MAX_BLOB_LEN + 1], ..e.clone() }, true),
        ] {
            let err = encode(&mut Vec::new(), &bad).unwrap_err();
            assert_eq!(matches!(err, FormatError::LimitExceeded { .. }), limit, "{bad:?}: {err}");
        }
        // A zero-length backend name is a limit violation when read, as when written.
        assert!(matches!(decode(&mut wire::Reader::new(&[0])), Err(FormatError::LimitExceeded { .. })));
    }

    #[test]
    fn check_agrees_with_decode() {
        let mut good = Vec::new();
        encode(&mut good, &entry("aws-kms", "k")).unwrap();
        let mut cases = vec![good.clone(), Vec::new(), vec![0], vec![33], vec![1, b'A', 0, 0, 0, 0, 0, 1, 9]];
        for i in 0..good.len() {
            cases.push(good[..i].to_vec());
            let mut b = good.clone();
            b[i] ^= 0x80;
            cases.push(b);
        }
        // Invalid UTF-8 in the key id, and an empty blob.
        // Layout: 7, "aws-kms", u16 1, "k", u16 1, "1", u16 40, blob.
        cases.push([&good[..10], &[0xff][..], &good[11..]].concat());
        cases.push([&good[..14], &[0, 0][..]].concat());
        for c in cases {
            let mut a = wire::Reader::new(&c);
            let mut b = wire::Reader::new(&c);
            let da = decode(&mut a).map(drop).map_err(|e| e.to_string());
            let db = check(&mut b).map_err(|e| e.to_string());
            assert_eq!(da, db, "{c:?}");
            if da.is_ok() {
                assert_eq!(a.position(), b.position());
            }
        }
    }

    #[test]
    fn trust_filters_by_backend_and_key() {
        let strict = Trust::Allow(vec![AllowedKey::new("local", "k1"), AllowedKey::new("vault-transit", "*")]);
        assert!(strict.permits(&entry("local", "k1")));
        assert!(!strict.permits(&entry("local", "k2")));
        assert!(!strict.permits(&entry("aws-kms", "k1")));
        assert!(strict.permits(&entry("vault-transit", "anything")));
        assert!(Trust::Discovery.permits(&entry("local", "k2")));
        assert!(strict.is_strict() && !Trust::Discovery.is_strict());
    }
}
