//! Fault injection, permission switches and latency (the `faults` feature: for tests, never
//! in a release build of the binary).

use std::collections::BTreeSet;
use std::time::Duration;

use envseal_core::KmsError;

use crate::calls::Op;

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

/// Faults queued by `fail_next` / `fail_next_op`.
#[derive(Debug)]
struct Pending {
    /// `None` matches any operation.
    op: Option<Op>,
    remaining: u64,
    fault: Fault,
}

/// What the test author injects.
#[derive(Debug, Default)]
pub(crate) struct Injector {
    pending: Vec<Pending>,
    outage: Option<Fault>,
    latency: Duration,
    denied: BTreeSet<Op>,
}

impl Injector {
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
