//! The generator: every vector, built from fixed data keys, salts, wrapped-key entries and nonce
//! counters, so the output is the same on every run and every machine.
//!
//! The known answers are frozen: once a case is on disk its bytes must never change (a change
//! means the format changed). Add cases with new names instead.
//!
//! Sealing always uses the default engine; the bytes do not depend on it (both engines produce
//! identical AES-256-GCM output), and the loader checks every case on every engine.

use std::collections::BTreeMap;
use std::path::Path;
use std::{fmt, fs, io};

use envseal_core::container::{PendingContainer, Preamble};
use envseal_core::envelope::Envelope;
use envseal_core::{DataKey, Engine, WrappedKey};

use crate::json_files;

mod fixtures;
mod values;

pub use fixtures::Case;
use fixtures::*;

/// Every vector, in a fixed order (containers first).
///
/// # Panics
/// If two cases share a name, or the core API rejects a fixed input: both are bugs in this
/// generator.
pub fn cases() -> Vec<Case> {
    let mut b = Builder::default();
    container_cases(&mut b);
    field_cases(&mut b);
    values::text_cases(&mut b);
    values::value_cases(&mut b);
    b.cases
}

/// Checks every case against its expected outcome on every engine (the generator refuses to
/// write a vector it cannot verify).
///
/// # Errors
/// One line per failing case and engine.
pub fn verify(cases: &[Case]) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for case in cases {
        for &engine in Engine::ALL {
            if let Err(e) = case.vector.check(engine) {
                errors.push(format!("{} on {}: {e}", case.path, engine.name()));
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

// ---------------------------------------------------------------------------------------------
// Containers (FORMAT.md §4).

/// A sealed container and where its parts are.
struct Container {
    bytes: Vec<u8>,
    preamble: Preamble,
    /// Preamble length: the body starts here.
    body: usize,
    chunk_size: usize,
    data_key: [u8; 32],
    context: Ctx,
    plaintext: Vec<u8>,
}

fn seal_container(chunk_size: u32, salt: u8, context: &Ctx, entries: Vec<WrappedKey>, len: usize) -> Container {
    let data_key = seq::<32>(CONTAINER_DK);
    let pt = plaintext(len);
    // Invariant: the fixed chunk sizes, salts and entries are within every bound.
    let pending = PendingContainer::with_salt(encryption_context(context), chunk_size, container_salt(salt))
        .expect("valid header");
    let (preamble, enc) =
        pending.finish(Engine::default(), &DataKey::from_bytes(data_key), entries).expect("valid entries");
    let mut bytes = preamble.encode().expect("valid preamble");
    let body = bytes.len();
    // Invariant: writing to a Vec cannot fail.
    enc.encrypt_stream(pt.as_slice(), &mut bytes).expect("in-memory encryption");
    Container {
        bytes,
        preamble,
        body,
        chunk_size: chunk_size as usize,
        data_key,
        context: context.clone(),
        plaintext: pt,
    }
}

impl Container {
    /// The file as is, with its data key and its header context as the expected context.
    fn input(&self) -> Input {
        self.input_with(|_| {})
    }

    /// The file changed by `f`.
    fn input_with(&self, f: impl FnOnce(&mut Vec<u8>)) -> Input {
        let mut sealed = self.bytes.clone();
        f(&mut sealed);
        Input { data_key: self.data_key, context: self.context.clone(), sealed }
    }

    fn ok(&self) -> Outcome {
        Outcome::Ok(self.plaintext.clone())
    }

    /// Offset of the context (after the 47-byte fixed header).
    fn context_at(&self) -> usize {
        47
    }

    /// Offset of the entry count byte.
    fn entries_at(&self) -> usize {
        self.preamble.header.encode().len()
    }

    /// Offset of the first entry.
    fn entry0_at(&self) -> usize {
        self.entries_at() + 1
    }

    fn commitment_at(&self) -> usize {
        self.body - 64
    }

    fn header_mac_at(&self) -> usize {
        self.body - 32
    }

    fn chunk_at(&self, i: usize) -> usize {
        self.body + i * (self.chunk_size + 16)
    }

    fn chunk_end(&self, i: usize) -> usize {
        (self.chunk_at(i) + self.chunk_size + 16).min(self.bytes.len())
    }

    fn chunks(&self) -> usize {
        (self.bytes.len() - self.body).div_ceil(self.chunk_size + 16)
    }
}

/// Offsets inside an encoded entry starting at `at` (FORMAT.md §2.4).
struct EntryLayout {
    backend_len: usize,
    backend: usize,
    key_id_len: usize,
    key_version_len: usize,
    blob_len: usize,
    blob: usize,
}

fn entry_layout(at: usize, e: &WrappedKey) -> EntryLayout {
    let backend = at + 1;
    let key_id_len = backend + e.backend.len();
    let key_version_len = key_id_len + 2 + e.key_id.len();
    let blob_len = key_version_len + 2 + e.key_version.len();
    EntryLayout { backend_len: at, backend, key_id_len, key_version_len, blob_len, blob: blob_len + 2 }
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn container_cases(b: &mut Builder) {
    let none = Ctx::new();

    // Known answers: chunk-size boundaries with chunk size 64.
    let mut by_len = BTreeMap::new();
    for (salt, len) in [(1u8, 0usize), (2, 1), (3, 63), (4, 64), (5, 65), (6, 128), (7, 200)] {
        let c = seal_container(64, salt, &none, vec![entry()], len);
        let n = c.chunks();
        let last = len - (n - 1) * 64;
        let description = format!(
            "Chunk size 64, {len}-byte plaintext, empty context, one entry: {n} chunk(s), the final one \
             holding {last} byte(s) ({}).",
            match len {
                0 => "an empty plaintext is one empty final chunk",
                _ if len % 64 == 0 =>
                    "a plaintext that fills its last chunk ends with a full final chunk, not an empty one",
                _ => "every chunk but the final one is full",
            }
        );
        b.container(&format!("ok_chunk64_len{len}"), &description, c.input(), c.ok());
        by_len.insert(len, c);
    }
    let c = seal_container(16, 8, &none, vec![entry()], 33);
    b.container(
        "ok_chunk16_len33",
        "The smallest chunk size, 16, with a 33-byte plaintext: chunks of 16, 16 and 1 bytes.",
        c.input(),
        c.ok(),
    );
    let big = seal_container(65536, 9, &none, vec![entry()], 70000);
    b.container(
        "ok_chunk65536_len70000",
        "The default chunk size, 65536, with a 70000-byte plaintext: one full chunk and a final chunk of \
         4464 bytes.",
        big.input(),
        big.ok(),
    );

    // Contexts.
    let uni = seal_container(64, 10, &unicode_context(), vec![entry()], 20);
    b.container(
        "ok_context_unicode",
        "A header context of five entries with non-ASCII keys and values and an empty value, opened with \
         the same expected context. Keys are sorted by their UTF-8 bytes: Zone, app, empty, région, tenant.",
        uni.input(),
        uni.ok(),
    );
    let subset = Input { context: ctx(&[("app", "billing"), ("tenant", "Zürich ☃")]), ..uni.input() };
    b.container(
        "ok_context_expected_subset",
        "The caller expects two of the header's five context entries: a subset opens (FORMAT.md §4.5 step 2).",
        subset,
        uni.ok(),
    );
    let empty = Input { context: Ctx::new(), ..uni.input() };
    b.container(
        "ok_context_expected_empty",
        "The caller expects no context: the empty context is contained in every header context.",
        empty,
        uni.ok(),
    );
    let two = seal_container(64, 11, &ctx(&[("app", "billing")]), vec![entry(), entry2()], 70);
    b.container(
        "ok_two_entries",
        "Two wrapped-key entries (backends \"test\" and \"test-2\"); either would open the file through its \
         KMS. Context {\"app\": \"billing\"}, 70-byte plaintext.",
        two.input(),
        two.ok(),
    );

    let base = &by_len[&200];
    let l0 = entry_layout(base.entry0_at(), &entry());
    b.container(
        "ok_entry_blob_bit_flipped",
        &format!(
            "Bit 0 of the first byte of the wrapped-key blob (offset {}) flipped. Entries are outside everything \
             the data key authenticates (so that a rewrap can replace them), so opening with the data key \
             succeeds. With a KMS the altered blob fails to unwrap (KeyEntryTampered); this case pins that \
             readers do not MAC the entries.",
            l0.blob
        ),
        base.input_with(|s| s[l0.blob] ^= 1),
        base.ok(),
    );

    container_parse_cases(b, base, &uni);
    container_key_cases(b, base, &uni);
    container_body_cases(b, base, &by_len[&128]);
}

/// Parser failures: magic, version, suite, bounds, canonical context, entries, truncation.
fn container_parse_cases(b: &mut Builder, base: &Container, uni: &Container) {
    let c = base;
    b.container(
        "not_sealed_magic_bit_flipped",
        "Bit 0 of byte 1 of the magic flipped ('E' becomes 'D').",
        c.input_with(|s| s[1] ^= 1),
        Outcome::Err("NotSealed"),
    );
    b.container(
        "not_sealed_line_endings_converted",
        "The magic's CR LF converted to LF (byte 4 removed), as a text-mode transfer would do: the magic \
         detects it.",
        c.input_with(|s| {
            s.remove(4);
        }),
        Outcome::Err("NotSealed"),
    );
    b.container(
        "not_sealed_short_input",
        "Only the first 4 bytes of the magic: shorter than the magic is \"not sealed\", not \"truncated\".",
        c.input_with(|s| s.truncate(4)),
        Outcome::Err("NotSealed"),
    );
    b.container(
        "not_sealed_text",
        "A plain text file.",
        Input { sealed: b"API_URL=https://example.invalid\n".to_vec(), ..c.input() },
        Outcome::Err("NotSealed"),
    );
    b.container(
        "unsupported_version_2",
        "Version byte (offset 8) set to 2.",
        c.input_with(|s| s[8] = 2),
        Outcome::Err("UnsupportedVersion"),
    );
    b.container(
        "unsupported_version_0",
        "Version byte (offset 8) set to 0.",
        c.input_with(|s| s[8] = 0),
        Outcome::Err("UnsupportedVersion"),
    );
    b.container(
        "unsupported_suite",
        "Suite (offsets 9-10) set to 0x0002.",
        c.input_with(|s| put_u16(s, 9, 2)),
        Outcome::Err("UnsupportedSuite"),
    );
    for (name, value, why) in [
        ("limit_chunk_size_huge", u32::MAX, "0xffffffff, far above the 16 MiB maximum"),
        ("limit_chunk_size_above_max", 16 * 1024 * 1024 + 1, "16 MiB + 1, just above the maximum"),
        ("limit_chunk_size_15", 15, "15, just below the minimum of 16"),
        ("limit_chunk_size_0", 0, "0"),
    ] {
        b.container(
            name,
            &format!("Chunk size (offsets 11-14) set to {why}: rejected before any allocation."),
            c.input_with(|s| put_u32(s, 11, value)),
            Outcome::Err("LimitExceeded"),
        );
    }
    let ctx_at = c.context_at();
    b.container(
        "limit_context_count_huge",
        &format!("Context entry count (offset {ctx_at}) set to 0xffff, above the maximum of 64."),
        c.input_with(|s| put_u16(s, ctx_at, 0xffff)),
        Outcome::Err("LimitExceeded"),
    );
    b.container(
        "limit_context_count_65",
        &format!("Context entry count (offset {ctx_at}) set to 65, one above the maximum."),
        c.input_with(|s| put_u16(s, ctx_at, 65)),
        Outcome::Err("LimitExceeded"),
    );
    b.container(
        "limit_context_key_length",
        &format!(
            "Length of the first context key (offset {}) set to 1025, one above the maximum string length: \
             rejected before the string is read.",
            ctx_at + 2
        ),
        uni.input_with(|s| put_u16(s, ctx_at + 2, 1025)),
        Outcome::Err("LimitExceeded"),
    );
    // Non-canonical contexts: the empty context (00 00) of the base file is replaced.
    for (name, encoding, why) in [
        (
            "malformed_context_unsorted",
            &[0, 2, 0, 1, b'b', 0, 0, 0, 1, b'a', 0, 0][..],
            "keys \"b\" then \"a\": not sorted",
        ),
        ("malformed_context_duplicate_key", &[0, 2, 0, 1, b'a', 0, 0, 0, 1, b'a', 0, 0][..], "key \"a\" twice"),
        ("malformed_context_empty_key", &[0, 1, 0, 0, 0, 1, b'x'][..], "an empty key"),
        ("malformed_context_not_utf8", &[0, 1, 0, 1, 0xff, 0, 0][..], "key 0xff, not UTF-8"),
    ] {
        b.container(
            name,
            &format!(
                "The context encoding (offset {ctx_at}) replaced by {} ({why}); the rest of the file is unchanged.",
                hex::encode(encoding)
            ),
            c.input_with(|s| {
                s.splice(ctx_at..ctx_at + 2, encoding.iter().copied());
            }),
            Outcome::Err("Malformed"),
        );
    }

    let n_at = c.entries_at();
    b.container(
        "malformed_entry_count_0",
        &format!("Entry count (offset {n_at}) set to 0: a container has at least one entry."),
        c.input_with(|s| s[n_at] = 0),
        Outcome::Err("Malformed"),
    );
    for count in [17u8, 200] {
        b.container(
            &format!("limit_entry_count_{count}"),
            &format!("Entry count (offset {n_at}) set to {count}, above the maximum of 16."),
            c.input_with(|s| s[n_at] = count),
            Outcome::Err("LimitExceeded"),
        );
    }
    let l = entry_layout(c.entry0_at(), &entry());
    b.container(
        "limit_backend_name_length",
        &format!("Backend name length (offset {}) set to 33, above the maximum of 32.", l.backend_len),
        c.input_with(|s| s[l.backend_len] = 33),
        Outcome::Err("LimitExceeded"),
    );
    b.container(
        "limit_backend_name_empty",
        &format!(
            "Backend name length (offset {}) set to 0, below the minimum of 1 (FORMAT.md §2.4: a length outside 1..=32 \
             is LimitExceeded, checked before anything else of the entry is read).",
            l.backend_len
        ),
        c.input_with(|s| s[l.backend_len] = 0),
        Outcome::Err("LimitExceeded"),
    );
    b.container(
        "malformed_backend_name",
        &format!("Backend name \"test\" changed to \"Test\" (offset {}): only [a-z0-9-] is allowed.", l.backend),
        c.input_with(|s| s[l.backend] = b'T'),
        Outcome::Err("Malformed"),
    );
    b.container(
        "limit_key_id_length",
        &format!("Key id length (offset {}) set to 2049, above the maximum of 2048.", l.key_id_len),
        c.input_with(|s| put_u16(s, l.key_id_len, 2049)),
        Outcome::Err("LimitExceeded"),
    );
    b.container(
        "limit_key_version_length",
        &format!("Key version length (offset {}) set to 257, above the maximum of 256.", l.key_version_len),
        c.input_with(|s| put_u16(s, l.key_version_len, 257)),
        Outcome::Err("LimitExceeded"),
    );
    b.container(
        "limit_blob_length_huge",
        &format!(
            "Wrapped-key blob length (offset {}) set to 0xffff, above the maximum of 8192: rejected before \
             reading or allocating.",
            l.blob_len
        ),
        c.input_with(|s| put_u16(s, l.blob_len, 0xffff)),
        Outcome::Err("LimitExceeded"),
    );
    b.container(
        "malformed_blob_empty",
        &format!("Wrapped-key blob length (offset {}) set to 0: a blob is never empty.", l.blob_len),
        c.input_with(|s| put_u16(s, l.blob_len, 0)),
        Outcome::Err("Malformed"),
    );

    // Truncation inside the preamble.
    let cuts = [
        ("truncated_in_fixed_header", 20, "inside the salt"),
        ("truncated_in_entry", l.blob + 10, "inside the wrapped-key blob"),
        ("truncated_in_commitment", c.commitment_at() + 16, "inside the commitment"),
        ("truncated_in_header_mac", c.header_mac_at() + 31, "one byte before the end of the header MAC"),
        ("truncated_at_entry_count", c.entries_at(), "right after the header, before the entry count"),
    ];
    for (name, at, why) in cuts {
        b.container(
            name,
            &format!("The input cut after {at} bytes, {why}."),
            c.input_with(|s| s.truncate(at)),
            Outcome::Err("Truncated"),
        );
    }
    let mid = ctx_at + 9;
    b.container(
        "truncated_in_context",
        &format!("A file with a five-entry context cut after {mid} bytes, inside the context."),
        uni.input_with(|s| s.truncate(mid)),
        Outcome::Err("Truncated"),
    );
}

/// Key commitment, header MAC and expected-context failures.
fn container_key_cases(b: &mut Builder, base: &Container, uni: &Container) {
    let c = base;
    b.container(
        "commitment_mismatch_salt_bit_flipped",
        "Bit 0 of byte 20 (in the salt) flipped. The salt is the HKDF salt, so every derived key changes \
         and the recomputed commitment no longer matches the stored one: the commitment check, which comes \
         first, fails (not the header MAC).",
        c.input_with(|s| s[20] ^= 1),
        Outcome::Err("CommitmentMismatch"),
    );
    let at = c.commitment_at();
    b.container(
        "commitment_mismatch_commitment_bit_flipped",
        &format!("Bit 0 of the first commitment byte (offset {at}) flipped."),
        c.input_with(|s| s[at] ^= 1),
        Outcome::Err("CommitmentMismatch"),
    );
    b.container(
        "commitment_mismatch_wrong_data_key",
        "An intact file opened with another data key (80 81 ... 9f).",
        Input { data_key: seq(WRONG_DK), ..c.input() },
        Outcome::Err("CommitmentMismatch"),
    );
    let at = c.header_mac_at();
    b.container(
        "header_tampered_mac_bit_flipped",
        &format!("Bit 0 of the first header-MAC byte (offset {at}) flipped."),
        c.input_with(|s| s[at] ^= 1),
        Outcome::Err("HeaderTampered"),
    );
    b.container(
        "header_tampered_chunk_size",
        "Chunk size (offsets 11-14) changed from 64 to 65: still within bounds, the commitment still \
         matches (it depends on the data key and salt only), the header MAC does not.",
        c.input_with(|s| put_u32(s, 11, 65)),
        Outcome::Err("HeaderTampered"),
    );
    // The value of the context entry "app" = "billing": flip 'b' to 'c'.
    let header = uni.preamble.header.encode();
    let at = header.windows(7).position(|w| w == b"billing").expect("value present in header");
    b.container(
        "header_tampered_context_bit_flipped",
        &format!(
            "Bit 0 of byte {at} flipped: the context value \"billing\" becomes \"cilling\". The encoding stays \
             canonical, so parsing succeeds, and the expected context is empty so the context check passes; \
             the header MAC fails. (With a KMS the header hash in the KMS context changes too, and the \
             unwrap fails first.)"
        ),
        Input { context: Ctx::new(), ..uni.input_with(|s| s[at] ^= 1) },
        Outcome::Err("HeaderTampered"),
    );
    b.container(
        "wrong_context_value",
        "The caller expects {\"app\": \"payroll\"}; the header says \"billing\". Detected before any key is \
         used.",
        Input { context: ctx(&[("app", "payroll")]), ..uni.input() },
        Outcome::Err("WrongContext"),
    );
    b.container(
        "wrong_context_missing_key",
        "The caller expects {\"app\": \"billing\", \"stage\": \"prod\"}; the header has no \"stage\".",
        Input { context: ctx(&[("app", "billing"), ("stage", "prod")]), ..uni.input() },
        Outcome::Err("WrongContext"),
    );
    b.container(
        "wrong_context_on_empty_header_context",
        "The caller expects {\"app\": \"billing\"}; the header context is empty.",
        Input { context: ctx(&[("app", "billing")]), ..c.input() },
        Outcome::Err("WrongContext"),
    );
}

/// Body failures: tampered, truncated, extended, reordered, moved chunks.
fn container_body_cases(b: &mut Builder, base: &Container, full_final: &Container) {
    let c = base; // 200 bytes in chunks of 64: 64, 64, 64, 8.
    let n = c.chunks();
    for i in 0..n {
        let (start, end) = (c.chunk_at(i), c.chunk_end(i));
        b.container(
            &format!("chunk_tampered_chunk{i}_ciphertext"),
            &format!("Bit 0 of the first ciphertext byte of chunk {i} (offset {start}) flipped."),
            c.input_with(|s| s[start] ^= 1),
            Outcome::ErrAt("ChunkTampered", i as u64),
        );
        b.container(
            &format!("chunk_tampered_chunk{i}_tag"),
            &format!("Bit 7 of the last tag byte of chunk {i} (offset {}) flipped.", end - 1),
            c.input_with(|s| s[end - 1] ^= 0x80),
            Outcome::ErrAt("ChunkTampered", i as u64),
        );
    }
    for k in 0..n {
        let at = c.chunk_at(k);
        b.container(
            &format!("truncated_body_after_{k}_chunks"),
            &format!(
                "The {n}-chunk file cut after {k} complete chunk(s) (at offset {at}), a chunk boundary: the \
                 last chunk present is not marked final."
            ),
            c.input_with(|s| s.truncate(at)),
            Outcome::ErrAt("TruncatedBody", k as u64),
        );
    }
    let at = c.chunk_at(1) + 40;
    b.container(
        "chunk_tampered_cut_inside_chunk1",
        &format!("The file cut at offset {at}, 40 bytes into chunk 1: the partial chunk fails authentication."),
        c.input_with(|s| s.truncate(at)),
        Outcome::ErrAt("ChunkTampered", 1),
    );
    let at = c.bytes.len() - 1;
    b.container(
        "chunk_tampered_cut_inside_final_chunk",
        "The file's last byte removed (inside the final chunk's tag).",
        c.input_with(|s| s.truncate(at)),
        Outcome::ErrAt("ChunkTampered", (n - 1) as u64),
    );
    let (c0, c1, len) = (c.chunk_at(0), c.chunk_at(1), c.chunk_size + 16);
    b.container(
        "chunk_tampered_chunks_swapped",
        "Chunks 0 and 1 swapped: chunk 1's ciphertext does not open with chunk 0's nonce.",
        c.input_with(|s| {
            let first = s[c0..c0 + len].to_vec();
            s.copy_within(c1..c1 + len, c0);
            s[c1..c1 + len].copy_from_slice(&first);
        }),
        Outcome::ErrAt("ChunkTampered", 0),
    );
    b.container(
        "chunk_tampered_chunk_removed",
        "Chunk 1 removed: chunk 2 now sits at index 1.",
        c.input_with(|s| {
            s.drain(c1..c1 + len);
        }),
        Outcome::ErrAt("ChunkTampered", 1),
    );
    // Same data key, chunk size and length, another salt: another payload key.
    let other = seal_container(64, 12, &Ctx::new(), vec![entry()], 200);
    b.container(
        "chunk_tampered_chunk_from_other_file",
        "Chunk 1 replaced by chunk 1 of another file sealed under the same data key with another salt: the \
         payload key differs, so the chunk fails authentication.",
        c.input_with(|s| s[c1..c1 + len].copy_from_slice(&other.bytes[other.chunk_at(1)..other.chunk_at(1) + len])),
        Outcome::ErrAt("ChunkTampered", 1),
    );
    let f = full_final; // 128 bytes: two full chunks, the second final.
    let last = f.chunk_at(1);
    b.container(
        "trailing_data_chunk_appended",
        "A 128-byte file (two full chunks, the second final) followed by a copy of its final chunk: the \
         final chunk is followed by data.",
        f.input_with(|s| {
            let copy = s[last..].to_vec();
            s.extend_from_slice(&copy);
        }),
        Outcome::Err("TrailingData"),
    );
    b.container(
        "trailing_data_one_byte",
        "A 128-byte file (two full chunks, the second final) followed by one zero byte.",
        f.input_with(|s| s.push(0)),
        Outcome::Err("TrailingData"),
    );
    b.container(
        "chunk_tampered_byte_after_short_final_chunk",
        "A zero byte appended after a short final chunk (8 plaintext bytes). The reader cannot tell where a \
         short chunk would end, so it reads the final chunk with the extra byte, which fails \
         authentication: extension after a short final chunk shows as ChunkTampered, not TrailingData.",
        c.input_with(|s| s.push(0)),
        Outcome::ErrAt("ChunkTampered", (n - 1) as u64),
    );
}

fn field_cases(b: &mut Builder) {
    let none = Ctx::new();
    let table = ctx(&[("table", "users"), ("column", "card_number")]);
    let uni = ctx(&[("table", "users"), ("tenant", "Zürich ☃")]);
    let mut counter = 0u64;
    let mut base = None;
    for (context, label) in [(&none, "no_context"), (&table, "with_context"), (&uni, "unicode_context")] {
        for (len, len_label) in [(0usize, "empty"), (1, "1_byte"), (64, "64_bytes")] {
            let f = seal_field(counter, len, context);
            b.field(
                &format!("ok_{len_label}_{label}"),
                &format!(
                    "A {len}-byte value sealed with nonce counter {counter} under context {}.",
                    serde_json::to_string(context).unwrap_or_default()
                ),
                f.input(),
                f.ok(),
            );
            counter += 1;
            if context == &uni && len == 64 {
                base = Some(f);
            }
        }
    }
    let f = seal_field(0x0102_0304_0506_0708, 5, &none);
    b.field(
        "ok_counter_large",
        "Nonce counter 0x0102030405060708: the nonce is 00000000 0102030405060708 (4 zero bytes, then the \
         counter as a big-endian u64).",
        f.input(),
        f.ok(),
    );
    // Invariant: the loop above sealed the unicode 64-byte case.
    let base = base.expect("base case sealed");
    let c = &base;

    // Rewrap: only the entry changes.
    let mut rewrapped_entry = entry();
    rewrapped_entry.key_version = "2".into();
    rewrapped_entry.blob = seq::<96>(0x30).to_vec();
    let rewrapped = Envelope::parse(&c.bytes).and_then(|e| e.with_entry(&rewrapped_entry)).expect("rewrap");
    b.field(
        "ok_rewrapped_entry",
        "The 64-byte unicode-context envelope with its entry replaced (key version \"2\", a 96-byte blob), as \
         a rewrap does: every other byte is unchanged and the value still opens with the same data key.",
        Input { sealed: rewrapped, ..c.input() },
        c.ok(),
    );
    let l = entry_layout(51, &entry());
    b.field(
        "ok_entry_blob_bit_flipped",
        &format!(
            "Bit 0 of the first blob byte (offset {}) flipped. The entry is not part of the AEAD input (so a \
             rewrap can replace it): opening with the data key succeeds. With a KMS the altered blob fails \
             to unwrap.",
            l.blob
        ),
        c.input_with(|s| s[l.blob] ^= 1),
        c.ok(),
    );

    b.field(
        "not_sealed_tag_bit_flipped",
        "Bit 0 of the tag byte 0xE5 flipped.",
        c.input_with(|s| s[0] ^= 1),
        Outcome::Err("NotSealed"),
    );
    b.field("not_sealed_empty_input", "An empty input.", c.input_with(|s| s.clear()), Outcome::Err("NotSealed"));
    b.field(
        "unsupported_version_2",
        "Version byte (offset 1) set to 2.",
        c.input_with(|s| s[1] = 2),
        Outcome::Err("UnsupportedVersion"),
    );
    b.field(
        "unsupported_version_bit_flipped",
        "Bit 0 of the version byte (offset 1) flipped: version 0.",
        c.input_with(|s| s[1] ^= 1),
        Outcome::Err("UnsupportedVersion"),
    );
    b.field(
        "unsupported_suite",
        "Suite byte (offset 2) set to 2.",
        c.input_with(|s| s[2] = 2),
        Outcome::Err("UnsupportedSuite"),
    );
    b.field(
        "unsupported_suite_bit_flipped",
        "Bit 0 of the suite byte (offset 2) flipped: suite 0.",
        c.input_with(|s| s[2] ^= 1),
        Outcome::Err("UnsupportedSuite"),
    );
    b.field(
        "commitment_mismatch_salt_bit_flipped",
        "Bit 0 of byte 3 (the first salt byte) flipped: the salt is the HKDF salt, so the derived commitment \
         no longer matches the stored one.",
        c.input_with(|s| s[3] ^= 1),
        Outcome::Err("CommitmentMismatch"),
    );
    b.field(
        "commitment_mismatch_commitment_bit_flipped",
        "Bit 0 of byte 19 (the first commitment byte) flipped.",
        c.input_with(|s| s[19] ^= 1),
        Outcome::Err("CommitmentMismatch"),
    );
    b.field(
        "commitment_mismatch_wrong_data_key",
        "An intact envelope opened with another data key (80 81 ... 9f).",
        Input { data_key: seq(WRONG_DK), ..c.input() },
        Outcome::Err("CommitmentMismatch"),
    );
    let (nonce, ct) = (c.nonce_at(), c.ciphertext_at());
    let last = c.bytes.len() - 1;
    for (name, at, what) in [
        ("value_tampered_nonce_bit_flipped", nonce + 11, "the last nonce byte"),
        ("value_tampered_ciphertext_bit_flipped", ct, "the first ciphertext byte"),
        ("value_tampered_tag_bit_flipped", last, "the last tag byte"),
    ] {
        b.field(
            name,
            &format!("Bit 0 of {what} (offset {at}) flipped."),
            c.input_with(|s| s[at] ^= 1),
            Outcome::Err("ValueTampered"),
        );
    }
    b.field(
        "value_tampered_last_byte_removed",
        "The last byte removed: the tag now starts one byte earlier and authentication fails.",
        c.input_with(|s| s.truncate(last)),
        Outcome::Err("ValueTampered"),
    );
    b.field(
        "value_tampered_byte_appended",
        "A zero byte appended: the envelope has no length field, so the extra byte becomes part of the tag.",
        c.input_with(|s| s.push(0)),
        Outcome::Err("ValueTampered"),
    );
    for (name, context, what) in [
        (
            "value_tampered_wrong_context",
            ctx(&[("table", "orders"), ("tenant", "Zürich ☃")]),
            "another value for \"table\"",
        ),
        ("value_tampered_context_subset", ctx(&[("table", "users")]), "a subset of the sealing context"),
        ("value_tampered_context_empty", Ctx::new(), "no context"),
    ] {
        b.field(
            name,
            &format!(
                "Opened with {what}: the context is part of the AEAD's associated data and must be supplied \
                 exactly (the field envelope does not store it)."
            ),
            Input { context, ..c.input() },
            Outcome::Err("ValueTampered"),
        );
    }
    for (name, at, why) in [
        ("truncated_after_tag_byte", 1, "after the tag byte"),
        ("truncated_in_salt", 10, "inside the salt"),
        ("truncated_in_entry", l.blob + 4, "inside the wrapped-key blob"),
        ("truncated_in_nonce", nonce + 6, "inside the nonce"),
        ("truncated_shorter_than_tag", ct + 15, "15 bytes after the nonce, shorter than a tag"),
    ] {
        b.field(
            name,
            &format!("The envelope cut after {at} bytes, {why}."),
            c.input_with(|s| s.truncate(at)),
            Outcome::Err("Truncated"),
        );
    }
    b.field(
        "limit_backend_name_length",
        &format!("Backend name length (offset {}) set to 33, above the maximum of 32.", l.backend_len),
        c.input_with(|s| s[l.backend_len] = 33),
        Outcome::Err("LimitExceeded"),
    );
    b.field(
        "limit_backend_name_empty",
        &format!("Backend name length (offset {}) set to 0, below the minimum of 1.", l.backend_len),
        c.input_with(|s| s[l.backend_len] = 0),
        Outcome::Err("LimitExceeded"),
    );
    b.field(
        "malformed_backend_name",
        &format!("Backend name \"test\" changed to \"Test\" (offset {}).", l.backend),
        c.input_with(|s| s[l.backend] = b'T'),
        Outcome::Err("Malformed"),
    );
    b.field(
        "limit_blob_length_huge",
        &format!("Wrapped-key blob length (offset {}) set to 0xffff, above the maximum of 8192.", l.blob_len),
        c.input_with(|s| put_u16(s, l.blob_len, 0xffff)),
        Outcome::Err("LimitExceeded"),
    );
    b.field(
        "malformed_blob_empty",
        &format!("Wrapped-key blob length (offset {}) set to 0.", l.blob_len),
        c.input_with(|s| put_u16(s, l.blob_len, 0)),
        Outcome::Err("Malformed"),
    );
}

/// How the files on disk compare with what the generator produces.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DirDiff {
    /// Generated cases with no file on disk (relative paths).
    pub missing: Vec<String>,
    /// Files whose bytes differ from the generated text.
    pub changed: Vec<String>,
    /// `*.json` files on disk that the generator does not produce.
    pub stale: Vec<String>,
    /// Files identical to the generated text.
    pub same: usize,
}

impl DirDiff {
    /// True when the files on disk are exactly the generated ones.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.changed.is_empty() && self.stale.is_empty()
    }
}

impl fmt::Display for DirDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} identical", self.same)?;
        for (what, list) in [("missing", &self.missing), ("changed", &self.changed), ("stale", &self.stale)] {
            if !list.is_empty() {
                write!(f, "; {what}: {}", list.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Compares the generated cases with the files under `dir` (the `--check` logic).
///
/// # Errors
/// I/O errors reading `dir`.
pub fn diff_dir(dir: &Path, cases: &[Case]) -> io::Result<DirDiff> {
    let mut diff = DirDiff::default();
    for case in cases {
        match fs::read(dir.join(&case.path)) {
            Ok(bytes) if bytes == case.vector.to_json().as_bytes() => diff.same += 1,
            Ok(_) => diff.changed.push(case.path.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => diff.missing.push(case.path.clone()),
            Err(e) => return Err(e),
        }
    }
    for path in json_files(dir)? {
        let rel = relative(dir, &path);
        if !cases.iter().any(|c| c.path == rel) {
            diff.stale.push(rel);
        }
    }
    Ok(diff)
}

fn relative(dir: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EXPECT_OK;

    #[test]
    fn generation_is_deterministic_and_verified() {
        let a = cases();
        assert_eq!(a, cases());
        verify(&a).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    }

    #[test]
    fn one_failure_per_negative_case() {
        // Every negative container case differs from some positive case, and names say the outcome.
        for c in cases() {
            let v = &c.vector;
            let name = c.path.rsplit('/').next().unwrap_or_default();
            if v.expect == EXPECT_OK {
                assert!(name.starts_with("ok_"), "{name}");
            } else {
                assert!(!name.starts_with("ok_"), "{name}");
            }
        }
    }
}
