//! Encrypting and decrypting whole messages, streaming with constant memory (one frame at a
//! time), per data-format/message-body.md and message-footer.md:
//!
//! ```text
//! frame       = sequence number (4) || IV (12) || ciphertext (frame length) || tag (16)
//! final frame = 0xFFFFFFFF || sequence number (4) || IV (12) || length (4) || ciphertext || tag
//! IV          = 8 zero bytes || sequence number (4)          (sequence numbers start at 1)
//! frame AAD   = message id || "AWSKMSEncryptionClient Frame" (or "... Final Frame")
//!               || sequence number (4) || plaintext length (8)
//! footer      = signature length (2) || DER ECDSA P-384 signature of SHA-384(header || body)
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};

use aws_lc_rs::digest::{self, SHA384};
use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use envseal_core::aead::{NONCE_LEN, TAG_LEN};

use crate::context::{self, PUBLIC_KEY_FIELD};
use crate::error::{EdkAttempt, EsdkError};
use crate::header::{self, Edk, Header, MESSAGE_ID_LEN, MessageKeys, read_exact};
use crate::keyring::Keyring;
use crate::suite::Suite;

const FRAME_AAD: &[u8] = b"AWSKMSEncryptionClient Frame";
const FINAL_FRAME_AAD: &[u8] = b"AWSKMSEncryptionClient Final Frame";
const SEQ_END: u32 = u32::MAX;
/// Length of the DER signatures written: the ESDKs write P-384 signatures of exactly this
/// length (Python re-signs until it gets it), so envseal does too.
const SIGNATURE_LEN: usize = 103;

/// How to encrypt.
#[derive(Clone, Debug)]
pub struct EncryptOptions {
    /// The suite (default: the signed one, as in the ESDK).
    pub suite: Suite,
    /// Frame length in bytes (default 4096, as in the ESDK).
    pub frame_length: u32,
    /// The encryption context (no `aws-crypto-` keys).
    pub context: BTreeMap<String, String>,
}

impl Default for EncryptOptions {
    fn default() -> Self {
        EncryptOptions {
            suite: Suite::CommitKeyEcdsaP384,
            frame_length: header::DEFAULT_FRAME_LENGTH,
            context: BTreeMap::new(),
        }
    }
}

/// A message ready to be written: header done (data key wrapped, keys derived).
pub struct Encryptor {
    header: Header,
    keys: MessageKeys,
    signer: Option<EcdsaKeyPair>,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor").field("header", &self.header).finish_non_exhaustive()
    }
}

/// Starts a message: generates the data key with the first keyring, wraps it with the others,
/// derives the content key and commitment, and builds the header.
///
/// # Errors
/// [`EsdkError::InvalidOptions`] (no keyring, bad frame length), [`EsdkError::InvalidContext`],
/// keyring and KMS errors.
pub async fn begin_encrypt(keyrings: &[&dyn Keyring], opts: &EncryptOptions) -> Result<Encryptor, EsdkError> {
    let Some((first, rest)) = keyrings.split_first() else {
        return Err(EsdkError::InvalidOptions("at least one key is needed".into()));
    };
    if opts.frame_length == 0 || opts.frame_length > header::MAX_FRAME_LENGTH {
        return Err(EsdkError::InvalidOptions(format!("frame length {} outside 1..=2^31-1", opts.frame_length)));
    }
    context::check_user_context(&opts.context)?;
    let mut ctx = opts.context.clone();
    let signer = if opts.suite.is_signed() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng)
            .map_err(|_| EsdkError::InvalidOptions("cannot generate a signing key".into()))?;
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8.as_ref())
            .map_err(|_| EsdkError::InvalidOptions("cannot load the signing key".into()))?;
        let compressed: EcPublicKeyCompressedBin<'_> = kp
            .public_key()
            .as_be_bytes()
            .map_err(|_| EsdkError::InvalidOptions("cannot encode the public key".into()))?;
        ctx.insert(PUBLIC_KEY_FIELD.to_string(), B64.encode(compressed.as_ref()));
        Some(kp)
    } else {
        None
    };
    let (data_key, first_edk) = first.generate(&ctx).await?;
    let mut edks = vec![first_edk];
    for k in rest {
        edks.push(k.wrap(&data_key, &ctx).await?);
    }
    let message_id: [u8; MESSAGE_ID_LEN] = envseal_core::random::array();
    let keys = MessageKeys::derive(opts.suite, &data_key, &message_id);
    drop(data_key);
    let commitment = *keys.commitment;
    let body = Header::encode_body(opts.suite, &message_id, &ctx, &edks, opts.frame_length, &commitment)?;
    let auth_tag = keys.header_tag(&body);
    let header = Header {
        suite: opts.suite,
        message_id,
        context: ctx,
        edks,
        frame_length: opts.frame_length,
        commitment,
        auth_tag,
        body,
    };
    Ok(Encryptor { header, keys, signer })
}

/// What was processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Plaintext bytes.
    pub plaintext_bytes: u64,
    /// Frames.
    pub frames: u32,
}

impl Encryptor {
    /// The header (its encrypted data keys, context, suite).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Writes the whole message: header, frames of `input`, and for signed suites the footer.
    ///
    /// # Errors
    /// I/O errors; [`EsdkError::InvalidOptions`] past 2^32 - 1 frames.
    pub fn encrypt(self, input: impl Read, mut out: impl Write) -> Result<Summary, EsdkError> {
        let mut digest = self.signer.as_ref().map(|_| digest::Context::new(&SHA384));
        let mut emit = |b: &[u8], out: &mut dyn Write| -> Result<(), EsdkError> {
            if let Some(d) = digest.as_mut() {
                d.update(b);
            }
            out.write_all(b)?;
            Ok(())
        };
        emit(&self.header.bytes(), &mut out)?;
        let flen = self.header.frame_length as usize;
        let mut input = BufReader::with_capacity(flen.clamp(64 * 1024, 1 << 20), input);
        let mut buf = vec![0u8; flen];
        let mut seq: u32 = 1;
        let mut total = 0u64;
        loop {
            let n = read_up_to(&mut input, &mut buf)?;
            // The final frame is always shorter than a full frame (empty when the input is a
            // multiple of the frame length), as the ESDKs write it: some readers (the Python
            // ESDK 3.x) refuse a final frame of the full frame length.
            let last = n < flen;
            let iv = frame_iv(seq);
            let aad = frame_aad(&self.header.message_id, last, seq, n as u64);
            let tag = self.keys.content.seal_in_place(&iv, &aad, &mut buf[..n]);
            let mut head = Vec::with_capacity(24);
            if last {
                head.extend_from_slice(&SEQ_END.to_be_bytes());
                head.extend_from_slice(&seq.to_be_bytes());
                head.extend_from_slice(&iv);
                head.extend_from_slice(&(n as u32).to_be_bytes());
            } else {
                head.extend_from_slice(&seq.to_be_bytes());
                head.extend_from_slice(&iv);
            }
            emit(&head, &mut out)?;
            emit(&buf[..n], &mut out)?;
            emit(&tag, &mut out)?;
            total += n as u64;
            if last {
                break;
            }
            seq = seq.checked_add(1).filter(|s| *s != SEQ_END).ok_or_else(|| {
                EsdkError::InvalidOptions("more than 2^32 - 1 frames: use a larger frame length".into())
            })?;
        }
        if let (Some(kp), Some(d)) = (&self.signer, digest) {
            let sig = sign(kp, d.finish())?;
            out.write_all(&(sig.len() as u16).to_be_bytes())?;
            out.write_all(&sig)?;
        }
        out.flush()?;
        Ok(Summary { plaintext_bytes: total, frames: seq })
    }
}

/// Signs `digest`, retrying until the DER encoding is the ESDK's fixed 103 bytes (each try has
/// a fresh random nonce, so about half succeed).
fn sign(kp: &EcdsaKeyPair, digest: digest::Digest) -> Result<Vec<u8>, EsdkError> {
    for _ in 0..128 {
        let sig = kp.sign_digest(&digest).map_err(|_| EsdkError::InvalidOptions("signing failed".into()))?;
        if sig.as_ref().len() == SIGNATURE_LEN {
            return Ok(sig.as_ref().to_vec());
        }
    }
    Err(EsdkError::InvalidOptions("no signature of the expected length after 128 tries".into()))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, EsdkError> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

fn frame_iv(seq: u32) -> [u8; NONCE_LEN] {
    let mut iv = [0u8; NONCE_LEN];
    iv[NONCE_LEN - 4..].copy_from_slice(&seq.to_be_bytes());
    iv
}

fn frame_aad(message_id: &[u8; MESSAGE_ID_LEN], last: bool, seq: u32, len: u64) -> Vec<u8> {
    let label = if last { FINAL_FRAME_AAD } else { FRAME_AAD };
    let mut aad = Vec::with_capacity(MESSAGE_ID_LEN + label.len() + 12);
    aad.extend_from_slice(message_id);
    aad.extend_from_slice(label);
    aad.extend_from_slice(&seq.to_be_bytes());
    aad.extend_from_slice(&len.to_be_bytes());
    aad
}

/// Limits applied when reading a message.
#[derive(Clone, Debug)]
pub struct DecryptOptions {
    /// Most encrypted data keys accepted in a header (the ESDK's `max_encrypted_data_keys`).
    pub max_encrypted_data_keys: usize,
    /// Entries the message's encryption context must contain, with these values.
    pub required_context: BTreeMap<String, String>,
}

impl Default for DecryptOptions {
    fn default() -> Self {
        DecryptOptions { max_encrypted_data_keys: header::DEFAULT_MAX_EDKS, required_context: BTreeMap::new() }
    }
}

/// Reads the header of a message.
///
/// # Errors
/// As [`Header::read_from`].
pub fn read_header(input: &mut impl Read, opts: &DecryptOptions) -> Result<Header, EsdkError> {
    Header::read_from(input, opts.max_encrypted_data_keys)
}

/// An authenticated header with its keys: ready to decrypt the body.
pub struct Decryptor {
    header: Header,
    keys: MessageKeys,
    verifier: Option<Vec<u8>>,
    opened_by: usize,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor").field("header", &self.header).field("opened_by", &self.opened_by).finish()
    }
}

/// Unwraps the data key of `header` with the first keyring that opens one of its entries (in
/// header order), then checks, before anything is decrypted: the key commitment, the header
/// tag, the required context entries, and for signed suites that the context carries a valid
/// public key (and for unsigned ones that it does not).
///
/// # Errors
/// [`EsdkError::WrongContext`], [`EsdkError::InvalidContext`], [`EsdkError::NoKeyOpened`],
/// [`EsdkError::CommitmentMismatch`], [`EsdkError::HeaderTampered`].
pub async fn open(header: Header, keyrings: &[&dyn Keyring], opts: &DecryptOptions) -> Result<Decryptor, EsdkError> {
    for (k, v) in &opts.required_context {
        if header.context.get(k) != Some(v) {
            return Err(EsdkError::WrongContext(k.clone()));
        }
    }
    let verifier = match (header.suite.is_signed(), header.context.get(PUBLIC_KEY_FIELD)) {
        (true, Some(pk)) => {
            Some(B64.decode(pk).map_err(|_| EsdkError::InvalidContext(format!("{PUBLIC_KEY_FIELD} is not base64")))?)
        }
        (true, None) => return Err(EsdkError::InvalidContext(format!("a signed message needs {PUBLIC_KEY_FIELD}"))),
        (false, Some(_)) => {
            return Err(EsdkError::InvalidContext(format!("an unsigned message must not carry {PUBLIC_KEY_FIELD}")));
        }
        (false, None) => None,
    };
    let mut attempts = Vec::new();
    let mut opened = None;
    'edks: for (index, edk) in header.edks.iter().enumerate() {
        for k in keyrings {
            match k.unwrap(edk, &header.context).await {
                Ok(dk) => {
                    opened = Some((dk, index));
                    break 'edks;
                }
                Err(EsdkError::NotMine) => {}
                Err(error) => attempts.push(attempt(index, edk, error)),
            }
        }
    }
    let Some((data_key, opened_by)) = opened else {
        return Err(EsdkError::NoKeyOpened(attempts));
    };
    let keys = MessageKeys::derive(header.suite, &data_key, &header.message_id);
    drop(data_key);
    if !keys.commitment_matches(&header.commitment) {
        return Err(EsdkError::CommitmentMismatch);
    }
    if !keys.header_tag_matches(&header.body, &header.auth_tag) {
        return Err(EsdkError::HeaderTampered);
    }
    Ok(Decryptor { header, keys, verifier, opened_by })
}

fn attempt(index: usize, edk: &Edk, error: EsdkError) -> EdkAttempt {
    EdkAttempt { index, provider_id: edk.provider_id.clone(), key_name: edk.key_name(), error }
}

impl Decryptor {
    /// The authenticated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Index of the encrypted data key that opened the message.
    pub fn opened_by(&self) -> usize {
        self.opened_by
    }

    /// Decrypts the body (what follows the header in `input`) into `staging`, which receives
    /// each frame's plaintext once that frame's tag verifies, but before the message is known
    /// to be complete and, for signed suites, before the signature is checked. The caller must
    /// release `staging` only on `Ok` (a temp file renamed into place, for instance) and
    /// discard it otherwise.
    ///
    /// # Errors
    /// [`EsdkError::FrameTampered`], [`EsdkError::Truncated`], [`EsdkError::BadSignature`],
    /// [`EsdkError::TrailingData`], I/O errors.
    pub fn decrypt_to_staging(&self, input: impl Read, staging: &mut impl Write) -> Result<Summary, EsdkError> {
        self.body(input, &mut |p| staging.write_all(p), None)
    }

    /// Decrypts an unsigned message frame by frame straight to `out`: each frame's plaintext
    /// is released once its own tag verifies (the ESDK's streaming behaviour). A truncated
    /// message still ends in an error after the frames before the cut.
    ///
    /// # Errors
    /// [`EsdkError::SignedNeedsStaging`] for a signed suite (use [`Decryptor::decrypt_spooled`]
    /// or [`Decryptor::decrypt_to_staging`]); otherwise as [`Decryptor::decrypt_to_staging`].
    pub fn decrypt_streaming(&self, input: impl Read, out: &mut impl Write) -> Result<Summary, EsdkError> {
        if self.header.suite.is_signed() {
            return Err(EsdkError::SignedNeedsStaging);
        }
        self.body(input, &mut |p| out.write_all(p), None)
    }

    /// Decrypts with no plaintext released before the whole message verified: a first pass
    /// checks every frame and the signature while copying the ciphertext into `spool` (no
    /// plaintext touches it), a second pass decrypts the spool into `out`. Constant memory;
    /// the spool takes the size of the ciphertext.
    ///
    /// # Errors
    /// As [`Decryptor::decrypt_to_staging`]; nothing reached `out` if the first pass failed.
    pub fn decrypt_spooled<S: Read + Write + Seek>(
        &self,
        input: impl Read,
        spool: &mut S,
        out: &mut impl Write,
    ) -> Result<Summary, EsdkError> {
        self.body(input, &mut |_| Ok(()), Some(&mut *spool))?;
        spool.flush()?;
        spool.seek(SeekFrom::Start(0))?;
        self.body(&mut *spool, &mut |p| out.write_all(p), None)
    }

    /// Checks the whole body (every frame, the signature) without releasing anything.
    ///
    /// # Errors
    /// As [`Decryptor::decrypt_to_staging`].
    pub fn verify(&self, input: impl Read) -> Result<Summary, EsdkError> {
        self.body(input, &mut |_| Ok(()), None)
    }

    fn body(
        &self,
        input: impl Read,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        tee: Option<&mut dyn Write>,
    ) -> Result<Summary, EsdkError> {
        let mut r = BodyReader {
            input: BufReader::with_capacity(256 * 1024, input),
            digest: self.verifier.as_ref().map(|_| {
                let mut d = digest::Context::new(&SHA384);
                d.update(&self.header.bytes());
                d
            }),
            tee,
        };
        let flen = self.header.frame_length;
        // Grown as frames arrive: a forged header's frame length allocates nothing by itself.
        let mut buf: Vec<u8> = Vec::new();
        let mut expected: u32 = 1;
        let mut total = 0u64;
        loop {
            let first = r.u32()?;
            let last = first == SEQ_END;
            let seq = if last { r.u32()? } else { first };
            if seq != expected {
                return Err(EsdkError::FrameTampered { sequence: expected });
            }
            // Writers use `frame_iv(seq)`, but readers take the IV as stored (the ESDK's own
            // vectors include other IVs); order and finality are bound by the frame AAD.
            let mut iv = [0u8; NONCE_LEN];
            r.fill(&mut iv)?;
            let len = if last {
                let n = r.u32()?;
                if n > flen {
                    return Err(EsdkError::FrameTampered { sequence: seq });
                }
                n
            } else {
                flen
            } as usize;
            r.fill_vec(&mut buf, len)?;
            let mut tag = [0u8; TAG_LEN];
            r.fill(&mut tag)?;
            let aad = frame_aad(&self.header.message_id, last, seq, len as u64);
            if self.keys.content.open_in_place(&iv, &aad, &mut buf[..len], &tag).is_err() {
                buf.iter_mut().for_each(|b| *b = 0);
                return Err(EsdkError::FrameTampered { sequence: seq });
            }
            sink(&buf[..len])?;
            total += len as u64;
            if last {
                break;
            }
            expected =
                seq.checked_add(1).filter(|s| *s != SEQ_END).ok_or(EsdkError::FrameTampered { sequence: seq })?;
        }
        buf.iter_mut().for_each(|b| *b = 0);
        if let (Some(pk), Some(d)) = (&self.verifier, r.digest.take()) {
            let n = r.u16()? as usize;
            let mut sig = vec![0u8; n];
            r.fill(&mut sig)?;
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, pk)
                .verify_digest(&d.finish(), &sig)
                .map_err(|_| EsdkError::BadSignature)?;
        }
        if !r.input.fill_buf()?.is_empty() {
            return Err(EsdkError::TrailingData);
        }
        Ok(Summary { plaintext_bytes: total, frames: expected })
    }
}

/// Reads body fields, feeding the signature digest and the spool.
struct BodyReader<'t, R: Read> {
    input: BufReader<R>,
    digest: Option<digest::Context>,
    tee: Option<&'t mut dyn Write>,
}

impl<R: Read> BodyReader<'_, R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EsdkError> {
        read_exact(&mut self.input, buf)?;
        if let Some(d) = self.digest.as_mut() {
            d.update(buf);
        }
        if let Some(t) = self.tee.as_mut() {
            t.write_all(buf)?;
        }
        Ok(())
    }

    /// Reads `len` bytes into `buf`, growing it in steps so that a length field alone never
    /// allocates more than the input actually holds (plus one step).
    fn fill_vec(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<(), EsdkError> {
        const STEP: usize = 1 << 20;
        let mut done = 0;
        while done < len {
            let want = (len - done).min(STEP);
            if buf.len() < done + want {
                buf.resize(done + want, 0);
            }
            let (start, end) = (done, done + want);
            read_exact(&mut self.input, &mut buf[start..end])?;
            done = end;
        }
        if let Some(d) = self.digest.as_mut() {
            d.update(&buf[..len]);
        }
        if let Some(t) = self.tee.as_mut() {
            t.write_all(&buf[..len])?;
        }
        Ok(())
    }

    fn u16(&mut self) -> Result<u16, EsdkError> {
        let mut b = [0u8; 2];
        // The footer is outside the signed bytes: read it without the digest.
        read_exact(&mut self.input, &mut b)?;
        if let Some(t) = self.tee.as_mut() {
            t.write_all(&b)?;
        }
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, EsdkError> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }
}
