//! The streaming file container (FORMAT.md §4).
//!
//! ```text
//! preamble = header || entries || commitment (32) || header_mac (32)
//! header   = magic (8) || version (1) || suite (2) || chunk_size (4) || salt (32) || context
//! entries  = count (1) || entry*           (replaceable: not authenticated by the data key)
//! body     = chunk*  (AES-256-GCM, nonce = 11-byte counter || final flag)
//! ```
//!
//! Wrapped-key entries sit outside everything authenticated under the data key; each is bound
//! to this file through the KMS encryption context (`envseal:container` = SHA-256 of the header).
//! A rewrap job therefore replaces entries with ReEncrypt alone: no data key, body untouched.
//!
//! Sealing and opening are split into a synchronous codec ([`PendingContainer`], [`Preamble`],
//! [`Encryptor`], [`Decryptor`]) and thin async glue that calls the KMS ([`seal`], [`open`]).

use std::io::{self, Read, Seek, Write};

use zeroize::Zeroizing;

use crate::aead::{AeadKey, Engine, TAG_LEN};
use crate::context::EncryptionContext;
use crate::datakey::DataKey;
use crate::entries::{self, Trust};
pub use crate::entries::{MAX_BACKEND_LEN, MAX_BLOB_LEN, MAX_ENTRIES, MAX_KEY_ID_LEN, MAX_KEY_VERSION_LEN, Recipient};
use crate::error::{Error, FormatError};
use crate::kdf::{self, Kdf};
use crate::kms::{Kms, WrappedKey};
use crate::pipeline::read_full;
use crate::wire::{self, Take};

/// Magic bytes: `0x89 "ESL" CR LF 0x1A LF` (a non-text first byte; the CR LF / LF pair detects
/// line-ending conversion, as in PNG).
pub const MAGIC: [u8; 8] = [0x89, b'E', b'S', b'L', b'\r', b'\n', 0x1a, b'\n'];
/// The container format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Suite 0x0001: AES-256-GCM chunks, HKDF-SHA-512 key schedule with key commitment,
/// HMAC-SHA-256 header MAC.
pub const SUITE_AES256GCM_HKDF_SHA512: u16 = 0x0001;
/// Default plaintext chunk size (64 KiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest accepted chunk size.
pub const MIN_CHUNK_SIZE: u32 = 16;
/// Largest accepted chunk size (16 MiB): bounds a reader's memory.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Salt length.
pub const SALT_LEN: usize = 32;
/// Reserved KMS-context key binding a wrapped key to a container header.
pub const CONTEXT_KEY: &str = "envseal:container";

const FIXED_HEADER_LEN: usize = 8 + 1 + 2 + 4 + SALT_LEN;

/// The immutable header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Algorithm suite.
    pub suite: u16,
    /// Plaintext bytes per chunk (all chunks but the final one are exactly this long).
    pub chunk_size: u32,
    /// Random per-file salt (also the file id).
    pub salt: [u8; SALT_LEN],
    /// The user's encryption context.
    pub context: EncryptionContext,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_HEADER_LEN + 64);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.suite.to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.salt);
        self.context.encode_into(&mut out);
        out
    }

    /// The KMS encryption context for this file's wrapped keys: the user context plus
    /// `envseal:container` = lowercase hex SHA-256 of the header bytes.
    pub fn kms_context(&self) -> EncryptionContext {
        let hash = kdf::sha256(&self.encode());
        // Invariant: a header's user context has at most 63 entries and no reserved key (checked
        // by PendingContainer and by the parser), so one reserved entry of 64 hex characters
        // fits every bound.
        self.context.with_reserved(&[(CONTEXT_KEY, hex_lower(&hash))]).expect("reserved entry fits the context bounds")
    }
}

pub(crate) fn hex_lower(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

/// Header, wrapped-key entries and key check: everything before the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preamble {
    /// The immutable header.
    pub header: Header,
    /// Wrapped-key entries (at least one; any one opens the file).
    pub entries: Vec<WrappedKey>,
    /// Key commitment: HKDF-Expand(prk, "envseal/v1/container/commitment", 32).
    pub commitment: [u8; 32],
    /// HMAC-SHA-256 of the header bytes under the header-MAC key.
    pub header_mac: [u8; 32],
}

/// Reads the preamble from a stream, piece by piece (every length bounded first).
struct IoTake<'r, R: Read> {
    r: &'r mut R,
    buf: Vec<u8>,
}

impl<R: Read> Take for IoTake<'_, R> {
    type Error = Error;
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        self.buf.resize(n, 0);
        self.r.read_exact(&mut self.buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::Format(FormatError::Truncated),
            _ => Error::from(e),
        })?;
        Ok(&self.buf)
    }
}

fn take_u8<T: Take>(t: &mut T) -> Result<u8, T::Error> {
    Ok(t.take(1)?[0])
}

fn take_u16<T: Take>(t: &mut T) -> Result<u16, T::Error> {
    let b = t.take(2)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn take_array32<T: Take>(t: &mut T) -> Result<[u8; 32], T::Error> {
    let mut a = [0u8; 32];
    a.copy_from_slice(t.take(32)?);
    Ok(a)
}

/// Checks magic, version and suite of the first bytes (used to detect sealed files).
fn check_fixed(fixed: &[u8]) -> Result<(u16, u32, [u8; SALT_LEN]), FormatError> {
    let mut r = wire::Reader::new(fixed);
    if r.take(8)? != MAGIC {
        return Err(FormatError::NotSealed);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let suite = r.u16()?;
    if suite != SUITE_AES256GCM_HKDF_SHA512 {
        return Err(FormatError::UnsupportedSuite(suite));
    }
    let chunk_size = r.u32()?;
    check_chunk_size(chunk_size)?;
    let salt = r.array::<SALT_LEN>()?;
    Ok((suite, chunk_size, salt))
}

fn check_chunk_size(chunk_size: u32) -> Result<(), FormatError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(FormatError::LimitExceeded {
            what: "chunk size (16 B to 16 MiB)",
            value: chunk_size as u64,
            max: MAX_CHUNK_SIZE as u64,
        });
    }
    Ok(())
}

/// True when `prefix` starts with the container magic.
pub fn is_container(prefix: &[u8]) -> bool {
    prefix.starts_with(&MAGIC)
}

fn parse_preamble<T: Take>(t: &mut T) -> Result<Preamble, Error>
where
    Error: From<T::Error>,
{
    // Magic first, alone, so that a short non-envseal input says "not sealed", not "truncated".
    let magic = t.take(8).map_err(|e| match Error::from(e) {
        Error::Format(FormatError::Truncated) => Error::Format(FormatError::NotSealed),
        e => e,
    })?;
    if magic != MAGIC {
        return Err(FormatError::NotSealed.into());
    }
    let mut fixed = MAGIC.to_vec();
    fixed.extend_from_slice(t.take(FIXED_HEADER_LEN - 8)?);
    let (suite, chunk_size, salt) = check_fixed(&fixed)?;

    // Context: read it piecewise with bounds, then decode canonically.
    let mut ctx_bytes = Vec::new();
    let count = take_u16(t)?;
    if count as usize > crate::context::MAX_USER_ENTRIES {
        return Err(FormatError::LimitExceeded {
            what: "context entries",
            value: count as u64,
            max: crate::context::MAX_USER_ENTRIES as u64,
        }
        .into());
    }
    ctx_bytes.extend_from_slice(&count.to_be_bytes());
    for _ in 0..count * 2 {
        let s = wire::take_bytes16(t, crate::context::MAX_STRING_LEN, "context string length")?;
        wire::put_bytes16(&mut ctx_bytes, &s);
    }
    let (context, _) = EncryptionContext::decode_prefix(&ctx_bytes)?;
    let header = Header { suite, chunk_size, salt, context };

    let n = take_u8(t)? as usize;
    if n == 0 {
        return Err(FormatError::Malformed("no wrapped-key entry").into());
    }
    if n > MAX_ENTRIES {
        return Err(FormatError::LimitExceeded {
            what: "wrapped-key entries",
            value: n as u64,
            max: MAX_ENTRIES as u64,
        }
        .into());
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(entries::decode(t)?);
    }
    let commitment = take_array32(t)?;
    let header_mac = take_array32(t)?;
    Ok(Preamble { header, entries, commitment, header_mac })
}

impl Preamble {
    /// Parses a preamble from the front of `bytes`; returns it and its length (the body starts
    /// there).
    ///
    /// # Errors
    /// [`FormatError`]s: not sealed, unsupported version/suite, truncated, limits, malformed.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), Error> {
        let mut t = wire::Reader::new(bytes);
        let p = parse_preamble(&mut t)?;
        Ok((p, t.position()))
    }

    /// Reads a preamble from `r`, consuming exactly its bytes (the body follows in `r`). Every
    /// length is bounded before anything is allocated.
    ///
    /// # Errors
    /// As [`Preamble::parse`], plus I/O errors.
    pub fn read_from<R: Read>(r: &mut R) -> Result<Self, Error> {
        parse_preamble(&mut IoTake { r, buf: Vec::new() })
    }

    /// The preamble's bytes.
    ///
    /// # Errors
    /// [`FormatError`] if an entry violates a bound (possible only for entries set by hand).
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        if self.entries.is_empty() || self.entries.len() > MAX_ENTRIES {
            return Err(FormatError::LimitExceeded {
                what: "wrapped-key entries",
                value: self.entries.len() as u64,
                max: MAX_ENTRIES as u64,
            });
        }
        let mut out = self.header.encode();
        out.push(self.entries.len() as u8);
        for e in &self.entries {
            entries::encode(&mut out, e)?;
        }
        out.extend_from_slice(&self.commitment);
        out.extend_from_slice(&self.header_mac);
        Ok(out)
    }

    /// The KMS context of this file's wrapped keys (see [`Header::kms_context`]).
    pub fn kms_context(&self) -> EncryptionContext {
        self.header.kms_context()
    }

    /// Verifies the key commitment and the header MAC under `data_key`, and returns a body
    /// decryptor.
    ///
    /// # Errors
    /// [`FormatError::CommitmentMismatch`] if `data_key` is not the file's data key;
    /// [`FormatError::HeaderTampered`] if the header was altered.
    pub fn open(&self, engine: Engine, data_key: &DataKey) -> Result<Decryptor, FormatError> {
        let keys = FileKeys::derive(engine, data_key, &self.header);
        // Commitment first (FORMAT.md §4.5): never use a payload key that the file did not
        // commit to. Constant time.
        if !kdf::ct_eq(&keys.commitment, &self.commitment) {
            return Err(FormatError::CommitmentMismatch);
        }
        if !kdf::ct_eq(&keys.header_mac, &self.header_mac) {
            return Err(FormatError::HeaderTampered);
        }
        Ok(Decryptor { key: keys.payload, chunk_size: self.header.chunk_size as usize })
    }

    /// The check a data key must pass to be this file's (key commitment, then header MAC), for
    /// [`entries::unwrap_verified`] and rewrap jobs.
    pub fn check(&self, engine: Engine) -> impl Fn(&DataKey) -> Result<(), Error> + Send + Sync + '_ {
        move |dk: &DataKey| self.open(engine, dk).map(drop).map_err(Error::from)
    }
}

struct FileKeys {
    payload: AeadKey,
    commitment: [u8; 32],
    header_mac: [u8; 32],
}

impl FileKeys {
    fn derive(engine: Engine, data_key: &DataKey, header: &Header) -> Self {
        let kdf = Kdf::new(data_key, &header.salt);
        let payload = AeadKey::new(engine, &kdf.expand32(kdf::LABEL_CONTAINER_PAYLOAD));
        let commitment = *kdf.expand32(kdf::LABEL_CONTAINER_COMMIT);
        let mac_key = kdf.expand32(kdf::LABEL_CONTAINER_HEADER_MAC);
        let header_mac = kdf::hmac_sha256(&mac_key[..], &[&header.encode()]);
        Self { payload, commitment, header_mac }
    }
}

/// A container being created: its header is fixed (and so its KMS context) before any KMS call.
#[derive(Debug)]
pub struct PendingContainer {
    header: Header,
}

impl PendingContainer {
    /// A new container header with a random salt.
    ///
    /// # Errors
    /// [`FormatError::LimitExceeded`] for a chunk size outside
    /// [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    pub fn new(context: EncryptionContext, chunk_size: u32) -> Result<Self, FormatError> {
        Self::with_salt(context, chunk_size, crate::random::array())
    }

    /// As [`PendingContainer::new`] with a caller-chosen salt. For test vectors only: a salt
    /// must be unique per file.
    ///
    /// # Errors
    /// As [`PendingContainer::new`].
    pub fn with_salt(context: EncryptionContext, chunk_size: u32, salt: [u8; SALT_LEN]) -> Result<Self, FormatError> {
        check_chunk_size(chunk_size)?;
        if context.len() > crate::context::MAX_USER_ENTRIES
            || context.iter().any(|(k, _)| k.starts_with(crate::context::RESERVED_PREFIX))
        {
            return Err(FormatError::InvalidContext(
                "a user context has at most 63 entries and no reserved keys".into(),
            ));
        }
        Ok(Self { header: Header { suite: SUITE_AES256GCM_HKDF_SHA512, chunk_size, salt, context } })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The KMS context to generate and wrap this file's data key under.
    pub fn kms_context(&self) -> EncryptionContext {
        self.header.kms_context()
    }

    /// Derives the keys from `data_key` and returns the preamble (with `entries`) and a body
    /// encryptor.
    ///
    /// # Errors
    /// [`FormatError`] if `entries` is empty, too many, or an entry is out of bounds.
    pub fn finish(
        self,
        engine: Engine,
        data_key: &DataKey,
        entries: Vec<WrappedKey>,
    ) -> Result<(Preamble, Encryptor), FormatError> {
        let keys = FileKeys::derive(engine, data_key, &self.header);
        let preamble =
            Preamble { header: self.header, entries, commitment: keys.commitment, header_mac: keys.header_mac };
        preamble.encode()?; // validates entries
        let chunk_size = preamble.header.chunk_size as usize;
        Ok((preamble, Encryptor { key: keys.payload, chunk_size }))
    }
}

/// Chunk nonce (FORMAT.md §4.6): 11-byte big-endian counter || final flag.
fn chunk_nonce(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    n
}

/// Encrypts a body in chunks. Memory: one chunk buffer, whatever the input size.
pub struct Encryptor {
    key: AeadKey,
    chunk_size: usize,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor").field("chunk_size", &self.chunk_size).finish_non_exhaustive()
    }
}

impl Encryptor {
    /// Encrypts chunk `index` in place: `buf` holds the plaintext (at most the chunk size;
    /// exactly the chunk size unless `last`) followed by [`TAG_LEN`] spare bytes, which receive
    /// the tag.
    pub fn seal_chunk(&self, index: u64, last: bool, buf: &mut [u8]) {
        let n = buf.len() - TAG_LEN;
        debug_assert!(n <= self.chunk_size && (last || n == self.chunk_size));
        let (pt, tag_out) = buf.split_at_mut(n);
        let tag = self.key.seal_in_place(&chunk_nonce(index, last), &[], pt);
        tag_out.copy_from_slice(&tag);
    }

    /// Length of the body for `plaintext_len` bytes of plaintext.
    pub fn body_len(&self, plaintext_len: u64) -> u64 {
        let cs = self.chunk_size as u64;
        let chunks = if plaintext_len == 0 { 1 } else { plaintext_len.div_ceil(cs) };
        plaintext_len + chunks * TAG_LEN as u64
    }

    /// Encrypts an in-memory `input` into `out` (exactly [`Encryptor::body_len`] bytes) in one
    /// pass, without intermediate buffers.
    ///
    /// # Panics
    /// If `out` has the wrong length (a caller bug).
    pub fn encrypt_slice(&self, input: &[u8], out: &mut [u8]) {
        assert_eq!(out.len() as u64, self.body_len(input.len() as u64), "encrypt_slice output length");
        let cs = self.chunk_size;
        let n_chunks = if input.is_empty() { 1 } else { input.len().div_ceil(cs) };
        for i in 0..n_chunks {
            let pt = &input[(i * cs).min(input.len())..((i + 1) * cs).min(input.len())];
            let at = i * (cs + TAG_LEN);
            let last = i + 1 == n_chunks;
            self.key.seal_to(&chunk_nonce(i as u64, last), &[], pt, &mut out[at..at + pt.len() + TAG_LEN]);
        }
    }

    /// As [`Encryptor::encrypt_stream`], with reading, sealing and writing on three threads so
    /// they overlap across cores. Same output bytes; memory bounded by a small pool of chunk
    /// buffers.
    ///
    /// # Errors
    /// I/O errors of either side.
    pub fn encrypt_parallel<R: Read + Send, W: Write + Send>(&self, input: R, output: W) -> Result<u64, Error> {
        crate::pipeline::run(input, output, self.chunk_size, |index, last, pt, out| {
            out.resize(pt.len() + TAG_LEN, 0);
            self.key.seal_to(&chunk_nonce(index, last), &[], pt, out);
            Ok(pt.len() as u64)
        })
    }

    /// Encrypts all of `input` to `output` as the body; returns the plaintext length.
    ///
    /// # Errors
    /// I/O errors of either side.
    pub fn encrypt_stream<R: Read, W: Write>(&self, mut input: R, mut output: W) -> Result<u64, Error> {
        let cs = self.chunk_size;
        let mut buf = vec![0u8; cs + TAG_LEN];
        let mut carry: Option<u8> = None;
        let mut total = 0u64;
        for index in 0u64.. {
            let mut n = 0;
            if let Some(b) = carry.take() {
                buf[0] = b;
                n = 1;
            }
            n += read_full(&mut input, &mut buf[n..cs])?;
            let last = if n < cs {
                true
            } else {
                let mut one = [0u8; 1];
                if read_full(&mut input, &mut one)? == 1 {
                    carry = Some(one[0]);
                    false
                } else {
                    true
                }
            };
            self.seal_chunk(index, last, &mut buf[..n + TAG_LEN]);
            output.write_all(&buf[..n + TAG_LEN])?;
            total += n as u64;
            if last {
                break;
            }
        }
        // The buffer held plaintext before it was sealed in place; it now holds ciphertext
        // only, but wipe it anyway so no partial state lingers.
        zeroize::Zeroize::zeroize(&mut buf[..]);
        Ok(total)
    }
}

/// Decrypts a body chunk by chunk; no plaintext of a chunk is released before its tag
/// verifies. Memory: one chunk buffer.
pub struct Decryptor {
    key: AeadKey,
    chunk_size: usize,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor").field("chunk_size", &self.chunk_size).finish_non_exhaustive()
    }
}

impl Decryptor {
    /// Opens chunk `index` in place: `buf` is ciphertext || tag; on success the first
    /// `buf.len() - 16` bytes are plaintext.
    ///
    /// # Errors
    /// [`FormatError::ChunkTampered`] (also for a buffer shorter than a tag).
    pub fn open_chunk(&self, index: u64, last: bool, buf: &mut [u8]) -> Result<(), FormatError> {
        let (ct, tag) = crate::aead::split_tag(buf).map_err(|_| FormatError::ChunkTampered { index })?;
        self.key
            .open_in_place(&chunk_nonce(index, last), &[], ct, &tag)
            .map_err(|_| FormatError::ChunkTampered { index })
    }

    /// Opens chunk `index` from `ct_tag` (ciphertext || tag) into `out` (same length minus
    /// the tag), leaving `ct_tag` intact.
    ///
    /// # Errors
    /// [`FormatError::ChunkTampered`].
    pub fn open_chunk_to(&self, index: u64, last: bool, ct_tag: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
        if ct_tag.len() < TAG_LEN {
            return Err(FormatError::ChunkTampered { index });
        }
        let (ct, tag) = ct_tag.split_at(ct_tag.len() - TAG_LEN);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag);
        self.key
            .open_to(&chunk_nonce(index, last), &[], ct, &t, &mut out[..ct.len()])
            .map_err(|_| FormatError::ChunkTampered { index })
    }

    /// Decrypts an in-memory body into `out` in one pass; returns the plaintext length
    /// (`out` must hold at least the body length minus 16 bytes per chunk).
    ///
    /// # Errors
    /// As [`Decryptor::decrypt_stream`]; `out` must then be discarded.
    pub fn decrypt_slice(&self, body: &[u8], out: &mut [u8]) -> Result<usize, FormatError> {
        let ct_chunk = self.chunk_size + TAG_LEN;
        if body.is_empty() {
            return Err(FormatError::TruncatedBody { chunks: 0 });
        }
        let n_chunks = body.len().div_ceil(ct_chunk);
        let mut written = 0;
        for i in 0..n_chunks {
            let c = &body[i * ct_chunk..((i + 1) * ct_chunk).min(body.len())];
            let last = i + 1 == n_chunks;
            if c.len() < TAG_LEN {
                return Err(FormatError::ChunkTampered { index: i as u64 });
            }
            let n = c.len() - TAG_LEN;
            let dst = out.get_mut(written..written + n).ok_or(FormatError::Malformed("output buffer too small"))?;
            if self.open_chunk_to(i as u64, last, c, dst).is_err() {
                let mut scratch = zeroize::Zeroizing::new(vec![0u8; n]);
                let other = self.open_chunk_to(i as u64, !last, c, &mut scratch).is_ok();
                return Err(match (last, other) {
                    (false, true) => FormatError::TrailingData,
                    (true, true) if c.len() == ct_chunk => FormatError::TruncatedBody { chunks: i as u64 + 1 },
                    _ => FormatError::ChunkTampered { index: i as u64 },
                });
            }
            if last && n == 0 && i > 0 {
                return Err(FormatError::ChunkTampered { index: i as u64 });
            }
            written += n;
        }
        Ok(written)
    }

    /// As [`Decryptor::decrypt_stream`], with reading, opening and writing on three threads.
    /// A chunk is written only after its tag verified.
    ///
    /// # Errors
    /// As [`Decryptor::decrypt_stream`].
    pub fn decrypt_parallel<R: Read + Send, W: Write + Send>(&self, input: R, output: W) -> Result<u64, Error> {
        let ct_chunk = self.chunk_size + TAG_LEN;
        crate::pipeline::run(input, output, ct_chunk, |index, last, ct, out| {
            if ct.len() < TAG_LEN {
                return Err(if ct.is_empty() {
                    FormatError::TruncatedBody { chunks: index }
                } else {
                    FormatError::ChunkTampered { index }
                }
                .into());
            }
            out.resize(ct.len() - TAG_LEN, 0);
            if self.open_chunk_to(index, last, ct, out).is_err() {
                let other = self.open_chunk_to(index, !last, ct, out).is_ok();
                zeroize::Zeroize::zeroize(&mut out[..]);
                return Err(match (last, other) {
                    (false, true) => FormatError::TrailingData,
                    (true, true) if ct.len() == ct_chunk => FormatError::TruncatedBody { chunks: index + 1 },
                    _ => FormatError::ChunkTampered { index },
                }
                .into());
            }
            if last && out.is_empty() && index > 0 {
                return Err(FormatError::ChunkTampered { index }.into());
            }
            Ok(out.len() as u64)
        })
    }

    /// Decrypts the body from `input` to `output`; returns the plaintext length.
    ///
    /// Plaintext of earlier chunks has been written when a later chunk fails: write to a
    /// temporary file and keep it only on success.
    ///
    /// # Errors
    /// [`FormatError::ChunkTampered`], [`FormatError::TruncatedBody`],
    /// [`FormatError::TrailingData`], I/O errors.
    pub fn decrypt_stream<R: Read, W: Write>(&self, mut input: R, mut output: W) -> Result<u64, Error> {
        let ct_chunk = self.chunk_size + TAG_LEN;
        // One extra byte of look-ahead tells a full non-final chunk from a full final one.
        let mut buf = vec![0u8; ct_chunk + 1];
        // Plaintext goes to its own buffer so the ciphertext stays intact for a second attempt
        // with the other final flag (which tells truncation and extension from tampering).
        let mut pt = zeroize::Zeroizing::new(vec![0u8; self.chunk_size]);
        let mut carry: Option<u8> = None;
        let mut total = 0u64;
        for index in 0u64.. {
            let mut n = 0;
            if let Some(b) = carry.take() {
                buf[0] = b;
                n = 1;
            }
            n += read_full(&mut input, &mut buf[n..])?;
            let full_and_more = n == ct_chunk + 1;
            let chunk = &buf[..n.min(ct_chunk)];
            if !full_and_more && n < TAG_LEN {
                return Err(if n == 0 {
                    FormatError::TruncatedBody { chunks: index }
                } else {
                    FormatError::ChunkTampered { index }
                }
                .into());
            }
            let last = !full_and_more;
            if self.open_chunk_to(index, last, chunk, &mut pt).is_err() {
                let other = self.open_chunk_to(index, !last, chunk, &mut pt).is_ok();
                return Err(match (last, other) {
                    // A final chunk followed by more bytes.
                    (false, true) => FormatError::TrailingData,
                    // A full-size non-final chunk at the end: the real final chunk was cut.
                    (true, true) if n == ct_chunk => FormatError::TruncatedBody { chunks: index + 1 },
                    _ => FormatError::ChunkTampered { index },
                }
                .into());
            }
            let len = chunk.len() - TAG_LEN;
            if last && len == 0 && index > 0 {
                // FORMAT.md §4.6: no empty final chunk after a full chunk.
                return Err(FormatError::ChunkTampered { index }.into());
            }
            output.write_all(&pt[..len])?;
            total += len as u64;
            if last {
                break;
            }
            carry = Some(buf[ct_chunk]);
        }
        Ok(total)
    }
}

/// Options for [`seal`].
#[derive(Clone, Copy, Debug)]
pub struct SealOptions {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// AEAD engine.
    pub engine: Engine,
}

impl Default for SealOptions {
    fn default() -> Self {
        Self { chunk_size: DEFAULT_CHUNK_SIZE, engine: Engine::default() }
    }
}

/// Creates the preamble and encryptor of a new container: a data key is generated under the
/// first recipient and encrypted under each other one (any entry opens the file).
///
/// # Errors
/// [`KmsError`]s from the KMS calls; [`FormatError`] for bad options or oversize entries.
pub async fn begin_seal(
    recipients: &[Recipient<'_>],
    context: &EncryptionContext,
    options: &SealOptions,
) -> Result<(Preamble, Encryptor), Error> {
    let pending = PendingContainer::new(context.clone(), options.chunk_size)?;
    let (data_key, entries) = entries::wrap_new(recipients, &pending.kms_context()).await?;
    Ok(pending.finish(options.engine, &data_key, entries)?)
}

/// Seals `input` into `output` as a container; returns the plaintext length.
///
/// # Errors
/// As [`begin_seal`], plus I/O errors.
pub async fn seal<R: Read, W: Write>(
    recipients: &[Recipient<'_>],
    context: &EncryptionContext,
    options: &SealOptions,
    input: R,
    mut output: W,
) -> Result<u64, Error> {
    let (preamble, enc) = begin_seal(recipients, context, options).await?;
    output.write_all(&preamble.encode()?)?;
    enc.encrypt_stream(input, output)
}

/// Opens the container's data key: the first entry that `trust` permits, one of `kmses` unwraps,
/// and that passes the key commitment and the header MAC (FORMAT.md §4.5 steps 2 to 5). Returns
/// the decryptor and the index of the entry that opened it.
///
/// `expected` must be contained in the file's context (each pair present with the same value),
/// else [`FormatError::WrongContext`] before any KMS call.
///
/// # Errors
/// [`FormatError::WrongContext`]; the errors of [`entries::unwrap_verified`]: per entry
/// [`FormatError::HeaderTampered`] (the KMS rejected the context, which hashes the header),
/// [`FormatError::KeyEntryTampered`], [`FormatError::CommitmentMismatch`],
/// [`crate::Error::KeyNotAllowed`] or a KMS error; [`Error::NoKeyOpened`] when several entries
/// failed.
pub async fn unwrap_data_key(
    kmses: &[&dyn Kms],
    preamble: &Preamble,
    expected: &EncryptionContext,
    trust: &Trust,
    engine: Engine,
) -> Result<(Decryptor, usize), Error> {
    if !preamble.header.context.contains_all(expected) {
        return Err(FormatError::WrongContext.into());
    }
    let check = preamble.check(engine);
    let (dk, index) =
        entries::unwrap_verified(kmses, &preamble.entries, &preamble.kms_context(), trust, &check).await?;
    Ok((preamble.open(engine, &dk)?, index))
}

/// Opens a container from `input`, writing the plaintext to `output`; returns the plaintext
/// length. See [`Decryptor::decrypt_stream`] about partial output on failure.
///
/// # Errors
/// As [`Preamble::read_from`], [`unwrap_data_key`], [`Preamble::open`] and
/// [`Decryptor::decrypt_stream`].
pub async fn open<R: Read, W: Write>(
    kmses: &[&dyn Kms],
    expected: &EncryptionContext,
    trust: &Trust,
    engine: Engine,
    mut input: R,
    output: W,
) -> Result<u64, Error> {
    let preamble = Preamble::read_from(&mut input)?;
    let (dec, _) = unwrap_data_key(kmses, &preamble, expected, trust, engine).await?;
    dec.decrypt_stream(input, output)
}

/// How a reader opens containers: the backends, the context it requires, the keys it trusts
/// and the AEAD engine.
#[derive(Clone, Copy, Debug)]
pub struct Opener<'a> {
    /// Backends for the entries (matched by [`Kms::backend`]).
    pub kmses: &'a [&'a dyn Kms],
    /// Context the file must contain (FORMAT.md §4.5 step 2).
    pub expected: &'a EncryptionContext,
    /// Which entries may be sent to a KMS.
    pub trust: &'a Trust,
    /// AEAD engine.
    pub engine: Engine,
}

/// Re-keys a container (FORMAT.md §4.4): opens `input`, seals its plaintext again under a fresh
/// data key and salt wrapped for `recipients`, with the same context and chunk size, into
/// `output`, then **proves the new container opens**: it reads `output` back from its start,
/// unwraps the new data key through `opener`'s backends and authenticates every chunk. Only
/// then does it return; a caller replaces the old file with `output` on `Ok` only. Old wrapped
/// keys (and anyone who kept the old data key) open nothing of the new container. The plaintext
/// passes between the two codecs in memory (zeroized buffers), never through a file.
///
/// # Errors
/// Those of [`unwrap_data_key`] and [`begin_seal`]; the body errors of
/// [`Decryptor::decrypt_stream`] (nothing is proven then: discard `output`); I/O errors; an
/// [`Error::Io`] if the verification reads back another length than was written.
pub async fn rekey<R: Read + Send, W: Read + Write + Seek + Send>(
    opener: &Opener<'_>,
    recipients: &[Recipient<'_>],
    mut input: R,
    mut output: W,
) -> Result<u64, Error> {
    let preamble = Preamble::read_from(&mut input)?;
    let (dec, _) = unwrap_data_key(opener.kmses, &preamble, opener.expected, opener.trust, opener.engine).await?;
    let options = SealOptions { chunk_size: preamble.header.chunk_size, engine: opener.engine };
    let (new, enc) = begin_seal(recipients, &preamble.header.context, &options).await?;
    output.write_all(&new.encode()?)?;
    let written = relay(&dec, &enc, input, &mut output)?;
    output.flush()?;
    // The proof: read the new container back and authenticate all of it.
    output.seek(io::SeekFrom::Start(0))?;
    let back = Preamble::read_from(&mut output)?;
    let kmses: Vec<&dyn Kms> = recipients.iter().map(|r| r.kms).collect();
    let (check, _) = unwrap_data_key(&kmses, &back, opener.expected, &Trust::Discovery, opener.engine).await?;
    let read = check.decrypt_stream(&mut output, io::sink())?;
    if read != written {
        return Err(io::Error::other("the re-keyed container reads back to another length").into());
    }
    Ok(written)
}

/// Decrypts `input` with `dec` and encrypts the plaintext with `enc` into `output`, one thread
/// each, handing plaintext over in zeroized buffers. Fails if either side fails.
fn relay<R: Read + Send, W: Write + Send>(dec: &Decryptor, enc: &Encryptor, input: R, output: W) -> Result<u64, Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Zeroizing<Vec<u8>>>(4);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut w = ChannelWriter { tx };
            dec.decrypt_stream(input, &mut w)
        });
        let sealed = enc.encrypt_stream(ChannelReader { rx, cur: Zeroizing::new(Vec::new()), pos: 0 }, output);
        // The decrypting side decides: if it failed, what was sealed is incomplete.
        let opened = reader.join().map_err(|_| Error::from(io::Error::other("decrypting thread panicked")))?;
        let opened = opened?;
        let sealed = sealed?;
        if opened != sealed {
            return Err(io::Error::other("plaintext length changed while re-keying").into());
        }
        Ok(sealed)
    })
}

/// The writing half of [`relay`]'s hand-over.
struct ChannelWriter {
    tx: std::sync::mpsc::SyncSender<Zeroizing<Vec<u8>>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            self.tx.send(Zeroizing::new(buf.to_vec())).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading half of [`relay`]'s hand-over: end of input when the writer is gone.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Zeroizing<Vec<u8>>>,
    cur: Zeroizing<Vec<u8>>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(engine: Engine, cs: u32, pt: &[u8]) -> (DataKey, Vec<u8>) {
        let dk = DataKey::from_bytes([7; 32]);
        let entry =
            WrappedKey { backend: "test".into(), key_id: "k".into(), key_version: "1".into(), blob: vec![1, 2, 3] };
        let p = PendingContainer::with_salt(EncryptionContext::new(), cs, [9; 32]).unwrap();
        let (pre, enc) = p.finish(engine, &dk, vec![entry]).unwrap();
        let mut out = pre.encode().unwrap();
        enc.encrypt_stream(pt, &mut out).unwrap();
        (dk, out)
    }

    fn opened(engine: Engine, dk: &DataKey, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        let (pre, n) = Preamble::parse(bytes)?;
        let dec = pre.open(engine, dk)?;
        let mut out = Vec::new();
        dec.decrypt_stream(&bytes[n..], &mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trip_boundaries() {
        for &engine in Engine::ALL {
            for len in [0usize, 1, 63, 64, 65, 128, 129, 1000] {
                let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let (dk, ct) = sealed(engine, 64, &pt);
                assert_eq!(opened(engine, &dk, &ct).unwrap(), pt, "len {len}");
            }
        }
    }

    #[test]
    fn slice_codec_matches_stream_codec() {
        for &engine in Engine::ALL {
            for len in [0usize, 1, 63, 64, 65, 200] {
                let pt: Vec<u8> = (0..len).map(|i| (i * 3) as u8).collect();
                let (dk, ct) = sealed(engine, 64, &pt);
                let (pre, n) = Preamble::parse(&ct).unwrap();
                let p = PendingContainer::with_salt(EncryptionContext::new(), 64, [9; 32]).unwrap();
                let (_, enc) = p.finish(engine, &dk, pre.entries.clone()).unwrap();
                let mut body = vec![0u8; enc.body_len(len as u64) as usize];
                enc.encrypt_slice(&pt, &mut body);
                assert_eq!(body, ct[n..], "len {len}");
                let dec = pre.open(engine, &dk).unwrap();
                let mut out = vec![0u8; len];
                assert_eq!(dec.decrypt_slice(&body, &mut out).unwrap(), len);
                assert_eq!(out, pt);
                if len > 64 {
                    assert!(matches!(
                        dec.decrypt_slice(&body[..80], &mut out),
                        Err(FormatError::TruncatedBody { chunks: 1 })
                    ));
                }
            }
        }
    }

    #[test]
    fn parallel_codec_matches_stream_codec() {
        for &engine in Engine::ALL {
            for len in [0usize, 1, 63, 64, 65, 64 * 20 + 3] {
                let pt: Vec<u8> = (0..len).map(|i| (i * 5) as u8).collect();
                let (dk, ct) = sealed(engine, 64, &pt);
                let (pre, n) = Preamble::parse(&ct).unwrap();
                let p = PendingContainer::with_salt(EncryptionContext::new(), 64, [9; 32]).unwrap();
                let (_, enc) = p.finish(engine, &dk, pre.entries.clone()).unwrap();
                let mut body = Vec::new();
                assert_eq!(enc.encrypt_parallel(&pt[..], &mut body).unwrap(), len as u64);
                assert_eq!(body, ct[n..], "len {len}");
                let dec = pre.open(engine, &dk).unwrap();
                let mut out = Vec::new();
                assert_eq!(dec.decrypt_parallel(&body[..], &mut out).unwrap(), len as u64);
                assert_eq!(out, pt);
            }
        }
        let e = Engine::default();
        let (dk, ct) = sealed(e, 64, &[1u8; 64 * 3]);
        let (pre, n) = Preamble::parse(&ct).unwrap();
        let dec = pre.open(e, &dk).unwrap();
        let body = &ct[n..];
        let run = |b: &[u8]| dec.decrypt_parallel(b, Vec::new()).unwrap_err();
        assert!(matches!(run(&body[..80]), Error::Format(FormatError::TruncatedBody { chunks: 1 })));
        assert!(matches!(run(&[]), Error::Format(FormatError::TruncatedBody { chunks: 0 })));
        let mut ext = body.to_vec();
        ext.extend_from_slice(&body[..80]);
        assert!(matches!(run(&ext), Error::Format(FormatError::TrailingData)));
        let mut bad = body.to_vec();
        bad[100] ^= 1;
        assert!(matches!(run(&bad), Error::Format(FormatError::ChunkTampered { index: 1 })));
    }

    #[test]
    fn stream_preamble_reader_consumes_exactly() {
        let (_, ct) = sealed(Engine::default(), 64, b"hello");
        let mut r = &ct[..];
        let p = Preamble::read_from(&mut r).unwrap();
        let (q, n) = Preamble::parse(&ct).unwrap();
        assert_eq!(p, q);
        assert_eq!(r.len(), ct.len() - n);
        assert_eq!(p.encode().unwrap(), ct[..n]);
    }

    #[test]
    fn truncation_and_extension() {
        let e = Engine::default();
        let pt = vec![1u8; 64 * 3];
        let (dk, ct) = sealed(e, 64, &pt);
        let (_, n) = Preamble::parse(&ct).unwrap();
        let c = 64 + 16;
        // Cut at each chunk boundary.
        for k in 0..3 {
            let err = opened(e, &dk, &ct[..n + k * c]).unwrap_err();
            assert!(
                matches!(err, Error::Format(FormatError::TruncatedBody { chunks }) if chunks == k as u64),
                "{err:?}"
            );
        }
        // Extra chunk appended.
        let mut ext = ct.clone();
        ext.extend_from_slice(&ct[n..n + c]);
        assert!(matches!(opened(e, &dk, &ext), Err(Error::Format(FormatError::TrailingData))));
        // Chunks swapped.
        let mut sw = ct.clone();
        let (a, b) = (n, n + c);
        let tmp = sw[a..a + c].to_vec();
        sw.copy_within(b..b + c, a);
        sw[b..b + c].copy_from_slice(&tmp);
        assert!(matches!(opened(e, &dk, &sw), Err(Error::Format(FormatError::ChunkTampered { index: 0 }))));
    }

    #[test]
    fn commitment_and_header_checks() {
        let e = Engine::default();
        let (dk, ct) = sealed(e, 64, b"x");
        let wrong = DataKey::from_bytes([8; 32]);
        assert!(matches!(opened(e, &wrong, &ct), Err(Error::Format(FormatError::CommitmentMismatch))));
        // Flip a salt bit: the derived keys change, so the commitment no longer matches.
        let mut h = ct.clone();
        h[20] ^= 1;
        assert!(matches!(opened(e, &dk, &h), Err(Error::Format(FormatError::CommitmentMismatch))));
        // Flip the chunk size: header MAC fails.
        let mut h = ct.clone();
        h[14] ^= 1;
        assert!(matches!(opened(e, &dk, &h), Err(Error::Format(FormatError::HeaderTampered))));
    }

    #[test]
    fn bounds_before_allocation() {
        let (_, ct) = sealed(Engine::default(), 64, b"x");
        let mut v = ct.clone();
        v[8] = 2;
        assert!(matches!(Preamble::parse(&v), Err(Error::Format(FormatError::UnsupportedVersion(2)))));
        let mut v = ct.clone();
        v[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Preamble::parse(&v), Err(Error::Format(FormatError::LimitExceeded { .. }))));
        assert!(matches!(Preamble::parse(b"plain text"), Err(Error::Format(FormatError::NotSealed))));
        assert!(matches!(Preamble::parse(&MAGIC[..4]), Err(Error::Format(FormatError::NotSealed))));
        assert!(matches!(Preamble::parse(&ct[..20]), Err(Error::Format(FormatError::Truncated))));
    }
}
