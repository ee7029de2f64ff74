//! Call counters: every `Kms` and `KeyManager` call is counted under its [`Op`].

use std::fmt;

/// A kind of call to the mock, for the counters (and, with the `faults` feature, for fault
/// injection and `MockKms::deny`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Op {
    /// [`Kms::generate_data_key`](envseal_core::Kms::generate_data_key).
    GenerateDataKey,
    /// [`Kms::decrypt`](envseal_core::Kms::decrypt).
    Decrypt,
    /// [`Kms::encrypt`](envseal_core::Kms::encrypt).
    Encrypt,
    /// [`Kms::re_encrypt`](envseal_core::Kms::re_encrypt) (counted once, not as a decrypt plus
    /// an encrypt: it happens inside the mock HSM).
    ReEncrypt,
    /// Any [`KeyManager`](envseal_core::KeyManager) method (create, describe, list, alias,
    /// rotate, enable, disable, schedule/cancel deletion, minimum decryption version).
    KeyManagement,
}

impl Op {
    /// Every operation, in declaration order.
    pub const ALL: [Op; 5] = [Op::GenerateDataKey, Op::Decrypt, Op::Encrypt, Op::ReEncrypt, Op::KeyManagement];

    /// `GenerateDataKey`, `Decrypt`, `Encrypt`, `ReEncrypt` or `KeyManagement`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::GenerateDataKey => "GenerateDataKey",
            Op::Decrypt => "Decrypt",
            Op::Encrypt => "Encrypt",
            Op::ReEncrypt => "ReEncrypt",
            Op::KeyManagement => "KeyManagement",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Op::GenerateDataKey => 0,
            Op::Decrypt => 1,
            Op::Encrypt => 2,
            Op::ReEncrypt => 3,
            Op::KeyManagement => 4,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Number of calls per operation since creation or the last
/// [`reset_counts`](crate::MockKms::reset_counts), failed calls included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallCounts {
    /// Calls to `generate_data_key`.
    pub generate_data_key: u64,
    /// Calls to `decrypt`.
    pub decrypt: u64,
    /// Calls to `encrypt`.
    pub encrypt: u64,
    /// Calls to `re_encrypt`.
    pub re_encrypt: u64,
    /// Calls to any `KeyManager` method.
    pub key_management: u64,
}

impl CallCounts {
    /// The count for `op`.
    pub fn get(&self, op: Op) -> u64 {
        match op {
            Op::GenerateDataKey => self.generate_data_key,
            Op::Decrypt => self.decrypt,
            Op::Encrypt => self.encrypt,
            Op::ReEncrypt => self.re_encrypt,
            Op::KeyManagement => self.key_management,
        }
    }

    /// Sum over all operations.
    pub fn total(&self) -> u64 {
        Op::ALL.iter().map(|&op| self.get(op)).sum()
    }
}

impl CallCounts {
    /// The counts of an array indexed by [`Op::index`].
    pub(crate) fn from_array(c: [u64; 5]) -> Self {
        CallCounts { generate_data_key: c[0], decrypt: c[1], encrypt: c[2], re_encrypt: c[3], key_management: c[4] }
    }
}
