//! The circuit breaker of a rewrap job: stop starting objects when the KMS looks down.
//!
//! A job over many objects (files, rows) would otherwise spend its whole retry budget on every
//! remaining object while the KMS is throttling or unreachable. The breaker counts objects that
//! failed with a retryable KMS error ([`Error::is_retryable`]: throttled, unavailable) *after*
//! their own retries; after [`Breaker::threshold`] of them in a row it opens and stays open for
//! the rest of the job. A success closes the count again. Failures that are not retryable (a
//! tampered object, a denied key) say nothing about the KMS and leave the count as it is.
//!
//! The breaker only counts: the caller decides what "stop" means (the CLI starts no new file
//! and exits with its "KMS unavailable" code; objects already in flight finish).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::Error;

/// Objects failing in a row with a retryable error that open a [`Breaker::default`].
pub const DEFAULT_THRESHOLD: usize = 5;

/// Counts consecutive retryable failures; opens at a threshold. Thread-safe: objects in flight
/// at once may report concurrently. See the [module documentation](self).
#[derive(Debug)]
pub struct Breaker {
    threshold: usize,
    consecutive: AtomicUsize,
    open: AtomicBool,
}

impl Default for Breaker {
    /// A closed breaker with [`DEFAULT_THRESHOLD`].
    fn default() -> Self {
        Self::new(DEFAULT_THRESHOLD)
    }
}

impl Breaker {
    /// A closed breaker that opens after `threshold` retryable failures in a row (a threshold
    /// of 0 acts as 1).
    pub fn new(threshold: usize) -> Self {
        Self { threshold: threshold.max(1), consecutive: AtomicUsize::new(0), open: AtomicBool::new(false) }
    }

    /// Retryable failures in a row that open the breaker.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Records an object that succeeded: the count of failures in a row starts again.
    pub fn success(&self) {
        self.consecutive.store(0, Ordering::SeqCst);
    }

    /// Records an object that failed: a `retryable` failure (the KMS throttled or was
    /// unreachable, after retries) counts towards the threshold; any other failure is about the
    /// object, not the KMS, and changes nothing.
    pub fn failure(&self, retryable: bool) {
        if retryable && self.consecutive.fetch_add(1, Ordering::SeqCst) + 1 >= self.threshold {
            self.open.store(true, Ordering::SeqCst);
        }
    }

    /// Records an object that failed with `error` ([`Breaker::failure`] of
    /// [`Error::is_retryable`]).
    pub fn failure_of(&self, error: &Error) {
        self.failure(error.is_retryable());
    }

    /// Whether the breaker opened (it stays open for the rest of the job).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::error::KmsError;

    #[test]
    fn opens_after_consecutive_retryable_failures_only() {
        let b = Breaker::new(3);
        b.failure(true);
        b.failure(true);
        assert!(!b.is_open());
        b.success(); // a success closes the count
        b.failure(true);
        b.failure(false); // not about the KMS: neutral
        b.failure(true);
        assert!(!b.is_open());
        b.failure(true);
        assert!(b.is_open());
        b.success();
        assert!(b.is_open(), "stays open for the rest of the job");
        let b = Breaker::new(0);
        assert_eq!(b.threshold(), 1);
        b.failure(true);
        assert!(b.is_open(), "a threshold of 0 acts as 1");
    }

    #[test]
    fn classifies_errors_by_retryability() {
        let b = Breaker::new(2);
        let down = Error::Kms(KmsError::Unavailable { message: "down".into(), retryable: true });
        let denied = Error::Kms(KmsError::AccessDenied { message: "no".into() });
        b.failure_of(&down);
        b.failure_of(&denied);
        assert!(!b.is_open(), "a denied key says nothing about the KMS");
        b.failure_of(&down);
        assert!(b.is_open());
        assert_eq!(Breaker::default().threshold(), DEFAULT_THRESHOLD);
    }

    #[test]
    fn opens_under_concurrency() {
        let b = Arc::new(Breaker::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || b.failure(true))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(b.is_open());
    }
}
