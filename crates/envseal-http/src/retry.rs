//! The retry loop of the HTTP backends, over the workspace's one policy
//! ([`envseal_core::retry::RetryPolicy`]).
//!
//! Throttling, 5xx answers and lost connections are retried with full-jitter backoff, waiting
//! at least what a `Retry-After` header asks (capped by the policy's largest delay). A call that
//! must not run twice (creating a key or an alias, rotating) is resent only when the server
//! certainly did not act on it: no connection, 429, or an answer that says so.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use envseal_core::KmsError;
use envseal_core::retry::{RetryPolicy, SleepFn, Verdict};

use crate::transport::{Response, TransportError};

/// Whether a call may be sent again after a failure that may have been processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Idempotence {
    /// Reads and cryptographic calls: running twice is harmless.
    Idempotent,
    /// Creations and rotations: resent only when the server certainly did not act.
    NotIdempotent,
}

/// What a backend knows about one of its API's error answers.
pub trait ApiFailure {
    /// Whether another attempt may succeed (throttling, a transient server error).
    fn retryable(&self) -> bool;
    /// Whether the server certainly did not act on the request (e.g. 429, 503 from a sealed
    /// Vault), so even a call that must not run twice may be resent.
    fn certainly_not_processed(&self) -> bool;
}

/// A failed attempt.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure<E> {
    /// The server answered with an error, as the backend reads it.
    Api {
        /// The backend's reading of the answer.
        error: E,
        /// The answer's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// No answer came back.
    Transport(TransportError),
    /// Nothing was sent (e.g. credentials could not be had): returned as is, never retried.
    Final(KmsError),
}

impl<E: ApiFailure> Failure<E> {
    /// An error answer.
    pub fn api(error: E, response: &Response) -> Self {
        Failure::Api { error, retry_after: response.retry_after }
    }

    /// What the retry loop does with this failure of a call with `idempotence`.
    fn verdict(&self, idempotence: Idempotence) -> Verdict {
        let (retryable, not_processed, after) = match self {
            Failure::Api { error, retry_after } => (error.retryable(), error.certainly_not_processed(), *retry_after),
            Failure::Transport(e) => (e.retryable(), e.certainly_not_processed(), None),
            Failure::Final(_) => return Verdict::Stop,
        };
        if !retryable || (idempotence == Idempotence::NotIdempotent && !not_processed) {
            return Verdict::Stop;
        }
        after.map_or(Verdict::Retry, Verdict::RetryAfter)
    }

    /// The [`KmsError`]: API errors through `api`, transport errors as
    /// [`TransportError::into_kms_error`] with `addr` and `tls_hint`.
    pub fn into_kms_error(self, addr: &str, tls_hint: &str, api: impl FnOnce(E) -> KmsError) -> KmsError {
        match self {
            Failure::Api { error, .. } => api(error),
            Failure::Transport(e) => e.into_kms_error(addr, tls_hint),
            Failure::Final(e) => e,
        }
    }
}

impl<E> From<TransportError> for Failure<E> {
    fn from(e: TransportError) -> Self {
        Failure::Transport(e)
    }
}

/// Runs `attempt` (one signed or built request, sent, its answer checked) under `policy`,
/// resending as the [module documentation](self) says.
///
/// # Errors
/// The last attempt's failure.
pub async fn send_with_retries<T, E, F, Fut>(
    policy: &RetryPolicy,
    idempotence: Idempotence,
    attempt: F,
) -> Result<T, Failure<E>>
where
    E: ApiFailure,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    policy.run(attempt, |f: &Failure<E>| f.verdict(idempotence)).await
}

/// `tokio::time::sleep`, as a [`SleepFn`]: the HTTP clients run on Tokio anyway, so backoffs
/// need no thread.
pub fn tokio_sleep() -> SleepFn {
    Arc::new(|d| Box::pin(tokio::time::sleep(d)))
}

/// A policy of `max_attempts` attempts with these delays, sleeping with [`tokio_sleep`]: the
/// form the HTTP backends' defaults take.
pub fn policy(max_attempts: u32, base_delay: Duration, max_delay: Duration) -> RetryPolicy {
    RetryPolicy::new(max_attempts, base_delay, max_delay).with_sleep(tokio_sleep())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Answer {
        retryable: bool,
        not_processed: bool,
    }

    impl ApiFailure for Answer {
        fn retryable(&self) -> bool {
            self.retryable
        }
        fn certainly_not_processed(&self) -> bool {
            self.not_processed
        }
    }

    fn api(retryable: bool, not_processed: bool, retry_after: Option<u64>) -> Failure<Answer> {
        Failure::Api { error: Answer { retryable, not_processed }, retry_after: retry_after.map(Duration::from_secs) }
    }

    #[test]
    fn verdicts() {
        use Idempotence::*;
        let cases = [
            (api(true, false, None), Idempotent, Verdict::Retry),
            (api(true, false, None), NotIdempotent, Verdict::Stop),
            (api(true, true, None), NotIdempotent, Verdict::Retry),
            (api(true, true, Some(3)), NotIdempotent, Verdict::RetryAfter(Duration::from_secs(3))),
            (api(false, true, Some(3)), Idempotent, Verdict::Stop),
            (Failure::Transport(TransportError::Connect("refused".into())), NotIdempotent, Verdict::Retry),
            (Failure::Transport(TransportError::Timeout("slow".into())), NotIdempotent, Verdict::Stop),
            (Failure::Transport(TransportError::Timeout("slow".into())), Idempotent, Verdict::Retry),
            (Failure::Transport(TransportError::Tls("cert".into())), Idempotent, Verdict::Stop),
            (Failure::Final(KmsError::InvalidCiphertext), Idempotent, Verdict::Stop),
        ];
        for (failure, idempotence, want) in cases {
            assert_eq!(failure.verdict(idempotence), want, "{failure:?} {idempotence:?}");
        }
    }

    #[tokio::test]
    async fn resends_until_an_answer() {
        let slept = Arc::new(Mutex::new(Vec::new()));
        let log = slept.clone();
        let p =
            RetryPolicy::new(4, Duration::from_millis(1), Duration::from_millis(50)).with_sleep(Arc::new(move |d| {
                log.lock().unwrap().push(d);
                Box::pin(async {})
            }));
        let answers = Mutex::new(vec![api(true, true, Some(1)), api(true, false, None)]);
        let r: Result<&str, _> = send_with_retries(&p, Idempotence::Idempotent, || {
            let next = answers.lock().unwrap().pop();
            async move { next.map_or(Ok("done"), Err) }
        })
        .await;
        assert_eq!(r.unwrap(), "done");
        let slept = slept.lock().unwrap();
        assert_eq!(slept.len(), 2);
        // Retry-After: 1 s asked, 50 ms granted (the policy's largest delay).
        assert_eq!(slept[1], Duration::from_millis(50));
        let e = Failure::<Answer>::Transport(TransportError::Other("reset".into())).into_kms_error(
            "http://a",
            "",
            |_| unreachable!(),
        );
        assert!(e.to_string().contains("request to http://a failed: reset"), "{e}");
    }
}
