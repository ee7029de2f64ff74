//! The message header, version 2 (data-format/message-header.md), its authentication tag, and
//! the key schedule of the committing suites (framework/algorithm-suites.md).
//!
//! ```text
//! header body = 0x02 || suite id (2) || message id (32)
//!            || context length (2) || serialized context
//!            || EDK count (2) || EDK*   (each: u16 len || provider id || u16 len || provider info
//!                                              || u16 len || ciphertext)
//!            || content type (1, 0x02 framed) || frame length (4) || commitment (32)
//! header auth = tag of AES-256-GCM(content key, IV = 12 zero bytes, AAD = header body, "")
//! ```
//! All integers are big-endian.

use std::collections::BTreeMap;
use std::io::Read;

use envseal_core::DataKey;
use envseal_core::Engine;
use envseal_core::aead::{AeadKey, NONCE_LEN, TAG_LEN};
use hkdf::Hkdf;
use sha2::Sha512;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::context;
use crate::error::EsdkError;
use crate::suite::{self, Suite};

/// Message format version written and read.
pub const VERSION: u8 = 0x02;
/// Length of the message id.
pub const MESSAGE_ID_LEN: usize = 32;
/// Length of the key commitment (the suite data of committing suites).
pub const COMMITMENT_LEN: usize = 32;
/// Content type of framed bodies.
pub const CONTENT_FRAMED: u8 = 0x02;
/// Content type of non-framed bodies (read only to refuse them).
pub const CONTENT_NON_FRAMED: u8 = 0x01;
/// Largest frame length accepted or written: 2^31 - 1, the ESDK implementations' limit.
pub const MAX_FRAME_LENGTH: u32 = i32::MAX as u32;
/// The ESDK's default frame length, and envseal's.
pub const DEFAULT_FRAME_LENGTH: u32 = 4096;
/// Default limit on encrypted data keys when reading (the ESDK has none unless configured;
/// envseal bounds the header by default, as its own container does).
pub const DEFAULT_MAX_EDKS: usize = 16;

const KEY_LABEL: &[u8] = b"DERIVEKEY";
const COMMIT_LABEL: &[u8] = b"COMMITKEY";

/// One encrypted data key entry of the header.
#[derive(Clone, PartialEq, Eq)]
pub struct Edk {
    /// Key provider id (`aws-kms`, a raw AES key namespace, ...).
    pub provider_id: String,
    /// Key provider info (the KMS key ARN; the raw key's name, tag and IV lengths and IV).
    pub provider_info: Vec<u8>,
    /// The wrapped data key.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Edk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edk")
            .field("provider_id", &self.provider_id)
            .field("key_name", &self.key_name())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

impl Edk {
    /// The provider info up to its first non-text byte (the ARN, or a raw key's name).
    pub fn key_name(&self) -> String {
        let end = self.provider_info.iter().position(|b| *b < 0x20 || *b >= 0x7f).unwrap_or(self.provider_info.len());
        String::from_utf8_lossy(&self.provider_info[..end]).into_owned()
    }
}

/// A parsed header (its authentication not yet checked: nothing here is trusted until
/// [`crate::open`] verifies the commitment and the tag).
#[derive(Clone, Debug)]
pub struct Header {
    /// The suite.
    pub suite: Suite,
    /// The message id (HKDF salt).
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// The encryption context, including `aws-crypto-public-key` for signed suites.
    pub context: BTreeMap<String, String>,
    /// The encrypted data keys, in header order.
    pub edks: Vec<Edk>,
    /// Frame length.
    pub frame_length: u32,
    /// The key commitment.
    pub commitment: [u8; COMMITMENT_LEN],
    /// The header authentication tag.
    pub auth_tag: [u8; TAG_LEN],
    /// The exact header body bytes as read or written (AAD of the tag, first bytes signed).
    pub(crate) body: Vec<u8>,
}

impl Header {
    /// The header bytes as they appear in the message: body, then the tag.
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = self.body.clone();
        v.extend_from_slice(&self.auth_tag);
        v
    }

    /// Serializes the header body from its fields.
    pub(crate) fn encode_body(
        suite: Suite,
        message_id: &[u8; MESSAGE_ID_LEN],
        context: &BTreeMap<String, String>,
        edks: &[Edk],
        frame_length: u32,
        commitment: &[u8; COMMITMENT_LEN],
    ) -> Result<Vec<u8>, EsdkError> {
        let ctx = context::serialize(context)?;
        let mut b = Vec::with_capacity(128 + ctx.len());
        b.push(VERSION);
        b.extend_from_slice(&suite.id().to_be_bytes());
        b.extend_from_slice(message_id);
        b.extend_from_slice(&(ctx.len() as u16).to_be_bytes());
        b.extend_from_slice(&ctx);
        let count = u16::try_from(edks.len())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| EsdkError::InvalidOptions("between 1 and 65,535 encrypted data keys are needed".into()))?;
        b.extend_from_slice(&count.to_be_bytes());
        for e in edks {
            for part in [e.provider_id.as_bytes(), &e.provider_info, &e.ciphertext] {
                let n = u16::try_from(part.len()).map_err(|_| {
                    EsdkError::InvalidOptions("an encrypted data key field exceeds 65,535 bytes".into())
                })?;
                b.extend_from_slice(&n.to_be_bytes());
                b.extend_from_slice(part);
            }
        }
        b.push(CONTENT_FRAMED);
        b.extend_from_slice(&frame_length.to_be_bytes());
        b.extend_from_slice(commitment);
        Ok(b)
    }

    /// Reads a header (body and tag) from `input`, bounding every length before allocating:
    /// at most `max_edks` encrypted data keys (each field at most 64 KiB, as its 16-bit length
    /// allows).
    ///
    /// # Errors
    /// [`EsdkError::NotEsdk`], [`EsdkError::CommitmentPolicy`] (version 1),
    /// [`EsdkError::UnsupportedSuite`], [`EsdkError::NonFramed`], [`EsdkError::TooManyDataKeys`],
    /// [`EsdkError::Malformed`], [`EsdkError::Truncated`], I/O errors.
    pub fn read_from(input: &mut impl Read, max_edks: usize) -> Result<Header, EsdkError> {
        let mut r = Recorder { input, body: Vec::with_capacity(256) };
        let version = r.u8()?;
        match version {
            VERSION => {}
            0x01 => return Err(EsdkError::CommitmentPolicy),
            _ => return Err(EsdkError::NotEsdk),
        }
        let id = r.u16()?;
        let suite =
            Suite::from_id(id).ok_or(EsdkError::UnsupportedSuite { id, name: suite::non_committing_name(id) })?;
        let mut message_id = [0u8; MESSAGE_ID_LEN];
        r.fill(&mut message_id)?;
        let ctx_len = r.u16()? as usize;
        let ctx_bytes = r.vec(ctx_len)?;
        let context = context::deserialize(&ctx_bytes)?;
        let count = r.u16()? as usize;
        if count == 0 {
            return Err(EsdkError::malformed("no encrypted data keys"));
        }
        if count > max_edks {
            return Err(EsdkError::TooManyDataKeys { count, max: max_edks });
        }
        let mut edks = Vec::with_capacity(count);
        for _ in 0..count {
            let n = r.u16()? as usize;
            let provider_id =
                String::from_utf8(r.vec(n)?).map_err(|_| EsdkError::malformed("key provider id is not UTF-8"))?;
            let n = r.u16()? as usize;
            let provider_info = r.vec(n)?;
            let n = r.u16()? as usize;
            let ciphertext = r.vec(n)?;
            edks.push(Edk { provider_id, provider_info, ciphertext });
        }
        match r.u8()? {
            CONTENT_FRAMED => {}
            CONTENT_NON_FRAMED => return Err(EsdkError::NonFramed),
            t => return Err(EsdkError::malformed(format!("unknown content type 0x{t:02X}"))),
        }
        let frame_length = r.u32()?;
        if frame_length == 0 || frame_length > MAX_FRAME_LENGTH {
            return Err(EsdkError::malformed(format!("frame length {frame_length} outside 1..=2^31-1")));
        }
        let mut commitment = [0u8; COMMITMENT_LEN];
        r.fill(&mut commitment)?;
        let body = std::mem::take(&mut r.body);
        let mut auth_tag = [0u8; TAG_LEN];
        read_exact(r.input, &mut auth_tag)?;
        Ok(Header { suite, message_id, context, edks, frame_length, commitment, auth_tag, body })
    }
}

/// Reads exactly `buf.len()` bytes; end of input is [`EsdkError::Truncated`].
pub(crate) fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), EsdkError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => EsdkError::Truncated,
        _ => EsdkError::Io(e),
    })
}

/// Reads header fields and keeps every byte read (the header body).
struct Recorder<'a, R: Read> {
    input: &'a mut R,
    body: Vec<u8>,
}

impl<R: Read> Recorder<'_, R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EsdkError> {
        read_exact(self.input, buf)?;
        self.body.extend_from_slice(buf);
        Ok(())
    }
    fn vec(&mut self, n: usize) -> Result<Vec<u8>, EsdkError> {
        // n <= 65,535 (a 16-bit length), so this allocation is bounded.
        let mut v = vec![0u8; n];
        self.fill(&mut v)?;
        Ok(v)
    }
    fn u8(&mut self) -> Result<u8, EsdkError> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }
    fn u16(&mut self) -> Result<u16, EsdkError> {
        let mut b = [0u8; 2];
        self.fill(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }
    fn u32(&mut self) -> Result<u32, EsdkError> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }
}

/// The keys of one message: the content key and the key commitment.
pub(crate) struct MessageKeys {
    pub(crate) content: AeadKey,
    pub(crate) commitment: Zeroizing<[u8; COMMITMENT_LEN]>,
}

impl MessageKeys {
    /// HKDF-SHA-512 with the message id as salt and the data key as input keying material;
    /// content key = Expand(suite id || "DERIVEKEY", 32), commitment = Expand("COMMITKEY", 32).
    pub(crate) fn derive(suite: Suite, data_key: &DataKey, message_id: &[u8; MESSAGE_ID_LEN]) -> Self {
        let hk = Hkdf::<Sha512>::new(Some(message_id), data_key.expose_secret());
        let mut info = Vec::with_capacity(2 + KEY_LABEL.len());
        info.extend_from_slice(&suite.id().to_be_bytes());
        info.extend_from_slice(KEY_LABEL);
        let mut key = Zeroizing::new([0u8; 32]);
        let mut commitment = Zeroizing::new([0u8; COMMITMENT_LEN]);
        // Invariant: 32 bytes is far below HKDF-SHA-512's 255 * 64 output limit.
        hk.expand(&info, &mut key[..]).expect("HKDF output length within limits");
        hk.expand(COMMIT_LABEL, &mut commitment[..]).expect("HKDF output length within limits");
        MessageKeys { content: AeadKey::new(Engine::default(), &key), commitment }
    }

    /// Whether `stored` is this data key's commitment (constant time).
    pub(crate) fn commitment_matches(&self, stored: &[u8; COMMITMENT_LEN]) -> bool {
        self.commitment.ct_eq(stored).into()
    }

    /// The header authentication tag over `body`.
    pub(crate) fn header_tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        self.content.seal_in_place(&[0u8; NONCE_LEN], body, &mut [])
    }

    /// Whether `tag` authenticates `body`.
    pub(crate) fn header_tag_matches(&self, body: &[u8], tag: &[u8; TAG_LEN]) -> bool {
        self.content.open_in_place(&[0u8; NONCE_LEN], body, &mut [], tag).is_ok()
    }
}
