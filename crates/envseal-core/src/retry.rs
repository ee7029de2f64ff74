//! The retry policy of the workspace: bounded exponential backoff with full jitter, shared by
//! every retry loop (rewrap, and the HTTP backends through `envseal-http`).
//!
//! The delay before retry `n` (from 0) is uniform in `[0, min(max_delay, base_delay × 2^n))`,
//! drawn from the OS CSPRNG, so that many clients retrying together spread out instead of
//! hammering a KMS in step. A server that says how long to wait (HTTP `Retry-After`) is heeded,
//! up to `max_delay`: see [`Verdict::RetryAfter`].
//!
//! [`RetryPolicy::run`] is the retry loop: the caller supplies the attempt and a judge that
//! classifies each failure ([`Verdict`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A sleep function: returns a future that completes after the duration.
pub type SleepFn = Arc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What to do after a failed attempt (see [`RetryPolicy::run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Return the error.
    Stop,
    /// Back off (full jitter) and try again.
    Retry,
    /// Try again after at least this long, as the server asked (`Retry-After`), but never more
    /// than `max_delay`: a server cannot stall the client beyond its own policy. The jittered
    /// backoff still applies when it is longer.
    RetryAfter(Duration),
}

/// Retries of retryable KMS errors ([`KmsError::is_retryable`](crate::KmsError::is_retryable):
/// throttling, transient outages), with exponential backoff and full jitter: before retry `n`
/// (from 0), sleep a uniformly random time in `[0, min(max_delay, base_delay × 2^n)]`.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Most attempts per KMS call, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff cap of the first retry.
    pub base_delay: Duration,
    /// Largest backoff cap.
    pub max_delay: Duration,
    pub(crate) sleep: SleepFn,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("base_delay", &self.base_delay)
            .field("max_delay", &self.max_delay)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    /// 6 attempts, 50 ms first cap, 5 s largest cap (about 8 s of backoff at most per call).
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            sleep: Arc::new(thread_sleep),
        }
    }
}

/// Sleeps on a short-lived thread and wakes the task through a oneshot channel: works under any
/// executor. Retries are rare, so a thread per backoff is cheap enough.
fn thread_sleep(d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new().name("envseal-backoff".into()).spawn(move || {
        std::thread::sleep(d);
        let _ = tx.send(());
    });
    Box::pin(async move {
        if spawned.is_ok() {
            let _ = rx.await;
        }
    })
}

impl RetryPolicy {
    /// No retry: every error is returned at once.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// `max_attempts` attempts with the given delays.
    pub fn new(max_attempts: u32, base_delay: Duration, max_delay: Duration) -> Self {
        Self { max_attempts: max_attempts.max(1), base_delay, max_delay, ..Self::default() }
    }

    /// Uses `sleep` for backoff delays (e.g. `tokio::time::sleep` boxed, to avoid a thread per
    /// retry under Tokio).
    pub fn with_sleep(mut self, sleep: SleepFn) -> Self {
        self.sleep = sleep;
        self
    }

    /// The backoff cap before retry `retry` (from 0): `min(max_delay, base_delay × 2^retry)`.
    pub fn cap(&self, retry: u32) -> Duration {
        backoff_cap(self.base_delay, self.max_delay, retry)
    }

    /// A full-jitter delay before retry `retry`: uniform in `[0, cap(retry)]`, from the OS CSPRNG.
    pub fn delay(&self, retry: u32) -> Duration {
        full_jitter(self.cap(retry))
    }

    /// The delay before retry `retry` when the server asked for `at_least`: the longer of
    /// [`RetryPolicy::delay`] and the server's wish, the latter capped at `max_delay`.
    pub fn delay_at_least(&self, retry: u32, at_least: Duration) -> Duration {
        self.delay(retry).max(at_least.min(self.max_delay))
    }

    /// Runs `attempt` until it succeeds, `judge` says [`Verdict::Stop`], or `max_attempts`
    /// attempts were made; returns the last result. `judge` is asked only when another attempt
    /// is allowed, so each [`Verdict::Retry`] is followed by a backoff (with this policy's
    /// sleep function) and an attempt.
    ///
    /// # Errors
    /// The last attempt's error.
    pub async fn run<T, E, F, Fut>(&self, mut attempt: F, mut judge: impl FnMut(&E) -> Verdict) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut retry = 0u32;
        loop {
            let e = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if retry.saturating_add(1) >= self.max_attempts {
                return Err(e);
            }
            let delay = match judge(&e) {
                Verdict::Stop => return Err(e),
                Verdict::Retry => self.delay(retry),
                Verdict::RetryAfter(d) => self.delay_at_least(retry, d),
            };
            (self.sleep)(delay).await;
            retry += 1;
        }
    }
}

/// The backoff cap before retry `retry` (from 0): `min(max, base × 2^retry)`.
fn backoff_cap(base: Duration, max: Duration, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// A full-jitter delay: uniform in `[0, cap)`, from the OS CSPRNG.
fn full_jitter(cap: Duration) -> Duration {
    jitter(cap, u64::from_le_bytes(crate::random::array()))
}

/// `cap × r / 2^64`, i.e. uniform in `[0, cap)` for a uniform `r`.
fn jitter(cap: Duration, r: u64) -> Duration {
    let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(((nanos as u128 * r as u128) >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_jitter() {
        let (b, m) = (Duration::from_millis(10), Duration::from_millis(100));
        assert_eq!(backoff_cap(b, m, 0), Duration::from_millis(10));
        assert_eq!(backoff_cap(b, m, 3), Duration::from_millis(80));
        assert_eq!(backoff_cap(b, m, 200), Duration::from_millis(100));
        assert_eq!(jitter(m, 0), Duration::ZERO);
        assert!(jitter(m, u64::MAX) < m);
        assert_eq!(jitter(m, 1 << 63), Duration::from_millis(50));
        assert!((0..50).all(|_| full_jitter(m) < m));
    }

    #[test]
    fn backoff_caps_and_jitter() {
        let p = RetryPolicy::new(5, Duration::from_millis(10), Duration::from_millis(100));
        assert_eq!(p.cap(0), Duration::from_millis(10));
        assert_eq!(p.cap(1), Duration::from_millis(20));
        assert_eq!(p.cap(3), Duration::from_millis(80));
        assert_eq!(p.cap(4), Duration::from_millis(100));
        assert_eq!(p.cap(200), Duration::from_millis(100));
        for r in 0..50 {
            assert!(p.delay(r % 6) <= p.cap(r % 6));
        }
        assert_eq!(RetryPolicy::none().max_attempts, 1);
    }

    #[test]
    fn server_hints_are_heeded_up_to_max_delay() {
        let p = RetryPolicy::new(5, Duration::from_millis(10), Duration::from_millis(100));
        assert!(p.delay_at_least(0, Duration::from_millis(60)) >= Duration::from_millis(60));
        assert_eq!(p.delay_at_least(0, Duration::from_secs(3600)), Duration::from_millis(100));
        assert!(p.delay_at_least(0, Duration::ZERO) <= p.cap(0));
    }

    /// A policy whose sleeps are recorded instead of slept.
    fn recording() -> (RetryPolicy, Arc<std::sync::Mutex<Vec<Duration>>>) {
        let slept = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = slept.clone();
        let sleep: SleepFn = Arc::new(move |d| {
            log.lock().unwrap().push(d);
            Box::pin(async {})
        });
        (RetryPolicy::new(4, Duration::from_millis(10), Duration::from_millis(40)).with_sleep(sleep), slept)
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn run_retries_until_success_stop_or_exhaustion() {
        // Succeeds on the third attempt: two backoffs.
        let (p, slept) = recording();
        let mut n = 0;
        let r: Result<u32, &str> = block_on(p.run(
            || {
                n += 1;
                let now = n;
                async move { if now < 3 { Err("busy") } else { Ok(now) } }
            },
            |_| Verdict::Retry,
        ));
        assert_eq!(r, Ok(3));
        assert_eq!(slept.lock().unwrap().len(), 2);
        assert!(slept.lock().unwrap().iter().zip([10, 20]).all(|(d, cap)| *d <= Duration::from_millis(cap)));

        // Always failing: max_attempts attempts, the judge asked one time fewer.
        let (p, slept) = recording();
        let (mut attempts, mut judged) = (0, 0);
        let r: Result<(), &str> = block_on(p.run(
            || {
                attempts += 1;
                async { Err("down") }
            },
            |_| {
                judged += 1;
                Verdict::RetryAfter(Duration::from_millis(30))
            },
        ));
        assert_eq!((r, attempts, judged), (Err("down"), 4, 3));
        assert!(slept.lock().unwrap().iter().all(|d| *d >= Duration::from_millis(30)));

        // Stop: one attempt, no sleep.
        let (p, slept) = recording();
        let mut attempts = 0;
        let r: Result<(), &str> = block_on(p.run(
            || {
                attempts += 1;
                async { Err("denied") }
            },
            |_| Verdict::Stop,
        ));
        assert_eq!((r, attempts), (Err("denied"), 1));
        assert!(slept.lock().unwrap().is_empty());

        // No retries at all: the judge is never asked.
        let r: Result<(), &str> =
            block_on(RetryPolicy::none().run(|| async { Err("x") }, |_| unreachable!("no retry is allowed")));
        assert_eq!(r, Err("x"));
    }
}
