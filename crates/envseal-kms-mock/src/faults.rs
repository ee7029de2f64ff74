//! Fault injection, permission switches, latency and call counters.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use envseal_core::KmsError;

/// A kind of call to the mock, for fault injection, [`deny`](crate::MockKms::deny) and counters.
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

    fn index(self) -> usize {
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

/// A failure to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// [`KmsError::Throttled`] (retryable).
    Throttled,
    /// [`KmsError::Unavailable`] with `retryable: true`.
    Unavailable,
}

impl Fault {
    /// The error this fault produces for a call to `op`.
    pub fn to_error(self, op: Op) -> KmsError {
        match self {
            Fault::Throttled => KmsError::Throttled { message: format!("mock: injected throttling on {op}") },
            Fault::Unavailable => {
                KmsError::Unavailable { message: format!("mock: injected outage on {op}"), retryable: true }
            }
        }
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

/// Faults queued by `fail_next` / `fail_next_op`.
#[derive(Debug)]
struct Pending {
    /// `None` matches any operation.
    op: Option<Op>,
    remaining: u64,
    fault: Fault,
}

/// Everything the test author controls, behind one lock.
#[derive(Debug, Default)]
pub(crate) struct Control {
    counts: [u64; 5],
    pending: Vec<Pending>,
    outage: Option<Fault>,
    latency: Duration,
    denied: BTreeSet<Op>,
}

impl Control {
    pub(crate) fn counts(&self) -> CallCounts {
        let c = &self.counts;
        CallCounts { generate_data_key: c[0], decrypt: c[1], encrypt: c[2], re_encrypt: c[3], key_management: c[4] }
    }

    pub(crate) fn reset_counts(&mut self) {
        self.counts = [0; 5];
    }

    pub(crate) fn latency(&self) -> Duration {
        self.latency
    }

    pub(crate) fn set_latency(&mut self, latency: Duration) {
        self.latency = latency;
    }

    pub(crate) fn set_outage(&mut self, fault: Option<Fault>) {
        self.outage = fault;
    }

    pub(crate) fn fail_next(&mut self, op: Option<Op>, n: u64, fault: Fault) {
        if n > 0 {
            self.pending.push(Pending { op, remaining: n, fault });
        }
    }

    pub(crate) fn set_denied(&mut self, op: Op, denied: bool) {
        if denied {
            self.denied.insert(op);
        } else {
            self.denied.remove(&op);
        }
    }

    /// Counts a call to `op`.
    pub(crate) fn count(&mut self, op: Op) {
        self.counts[op.index()] += 1;
    }

    /// The error an injected fault or a denial makes this call fail with, if any. Precedence:
    /// outage, then queued faults (oldest first; consuming one), then denial.
    pub(crate) fn check(&mut self, op: Op) -> Result<(), KmsError> {
        if let Some(fault) = self.outage {
            return Err(fault.to_error(op));
        }
        if let Some(i) = self.pending.iter().position(|p| p.op.is_none_or(|o| o == op)) {
            let fault = self.pending[i].fault;
            self.pending[i].remaining -= 1;
            if self.pending[i].remaining == 0 {
                self.pending.remove(i);
            }
            return Err(fault.to_error(op));
        }
        if self.denied.contains(&op) {
            return Err(KmsError::AccessDenied { message: format!("mock: {op} is denied (MockKms::deny)") });
        }
        Ok(())
    }
}
