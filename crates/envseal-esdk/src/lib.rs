#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod context;
mod error;
pub mod header;
pub mod keyring;
mod message;
pub mod suite;

pub use error::{EdkAttempt, EsdkError};
pub use header::{Edk, Header};
pub use keyring::{Keyring, KmsKeyring, RawAesKeyring};
pub use message::{DecryptOptions, Decryptor, EncryptOptions, Encryptor, Summary, begin_encrypt, open, read_header};
pub use suite::Suite;

/// Whether `head` (the first bytes of an input) starts like an ESDK message of a version
/// envseal recognises: version 2 and a committing suite id, or version 1 (refused later with
/// the reason). Needs at least 3 bytes.
pub fn looks_like_message(head: &[u8]) -> bool {
    match head {
        [0x02, a, b, ..] => Suite::from_id(u16::from_be_bytes([*a, *b])).is_some(),
        // Version 1: type 0x80 (customer authenticated encrypted data), then a suite id.
        [0x01, 0x80, a, b, ..] => suite::non_committing_name(u16::from_be_bytes([*a, *b])).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
