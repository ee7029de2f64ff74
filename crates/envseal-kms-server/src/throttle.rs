//! `--throttle`: request limits per account and per action, with the real services'
//! throttling errors (`Rejected.Throttling`, HTTP 429, for Alibaba: its documented per-account
//! QPS quotas; `ThrottlingException` for AWS), so that clients' retry logic can be tested.
//!
//! Each limit is a token bucket refilled at the limit's rate and holding at most one second's
//! worth (at least one request): a client at the limit is never refused, one above it is
//! refused for the excess.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::error::{Class, Fault};

/// Request limits, in requests per second.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ThrottleLimits {
    /// Every request of an account (each API's account counts apart).
    pub per_account: Option<f64>,
    /// Requests of one action (`GenerateDataKey`, ...) of an account.
    pub per_action: BTreeMap<String, f64>,
}

/// A `--throttle` value that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--throttle {0:?}: expected N or ACTION=N, N requests per second (a positive number)")]
pub struct ThrottleSpecError(String);

impl ThrottleLimits {
    /// No limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one limit: `N` (per account) or `ACTION=N` (per action), `N` requests per second.
    ///
    /// # Errors
    /// [`ThrottleSpecError`].
    pub fn add(&mut self, spec: &str) -> Result<(), ThrottleSpecError> {
        let bad = || ThrottleSpecError(spec.to_owned());
        let (action, n) = match spec.split_once('=') {
            Some((a, n)) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric()) => (Some(a), n),
            Some(_) => return Err(bad()),
            None => (None, spec),
        };
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        if !(n.is_finite() && n > 0.0) {
            return Err(bad());
        }
        match action {
            Some(a) => drop(self.per_action.insert(a.to_owned(), n)),
            None => self.per_account = Some(n),
        }
        Ok(())
    }

    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        self.per_account.is_none() && self.per_action.is_empty()
    }
}

impl fmt::Display for ThrottleLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.per_account {
            parts.push(format!("{n}/s per account"));
        }
        parts.extend(self.per_action.iter().map(|(a, n)| format!("{a} {n}/s")));
        f.write_str(&parts.join(", "))
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    limits: ThrottleLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Throttle {
    pub(crate) fn new(limits: ThrottleLimits) -> Self {
        Self { limits, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from `key`'s bucket (rate `rate`); false if it is empty.
    fn take(buckets: &mut HashMap<String, Bucket>, key: String, rate: f64, now: Instant) -> bool {
        let cap = rate.max(1.0);
        let b = buckets.entry(key).or_insert(Bucket { tokens: cap, last: now });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Admits or refuses one request of `action` by `account` (of API `api`).
    ///
    /// # Errors
    /// The API's throttling error.
    pub(crate) fn check(&self, api: &str, account: &str, action: &str) -> Result<(), Fault> {
        if self.limits.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let per_action = self.limits.per_action.get(action).copied();
        // Check both before taking from either, so a refused request costs nothing.
        let ok_action =
            per_action.is_none_or(|rate| Self::take(&mut buckets, format!("{api}:{account}:{action}"), rate, now));
        if !ok_action {
            return Err(refused());
        }
        if let Some(rate) = self.limits.per_account
            && !Self::take(&mut buckets, format!("{api}:{account}"), rate, now)
        {
            // Give the action's token back: this request does not happen.
            if per_action.is_some()
                && let Some(b) = buckets.get_mut(&format!("{api}:{account}:{action}"))
            {
                b.tokens += 1.0;
            }
            return Err(refused());
        }
        Ok(())
    }
}

fn refused() -> Fault {
    Fault::new(Class::RateLimited, "QPS Limit Exceeded (Rate exceeded): --throttle")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let mut l = ThrottleLimits::new();
        l.add("100").unwrap();
        l.add("GenerateDataKey=2.5").unwrap();
        assert_eq!(l.per_account, Some(100.0));
        assert_eq!(l.per_action["GenerateDataKey"], 2.5);
        for bad in ["", "x", "0", "-1", "=5", "Gen Data=1", "A=inf", "A=NaN"] {
            assert!(ThrottleLimits::new().add(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn buckets_hold_one_second_and_refill() {
        let mut l = ThrottleLimits::new();
        l.add("Decrypt=5").unwrap();
        l.add("8").unwrap();
        let t = Throttle::new(l);
        let admitted = (0..20).filter(|_| t.check("aws", "1", "Decrypt").is_ok()).count();
        assert_eq!(admitted, 5, "one second's worth of Decrypt");
        let more = (0..20).filter(|_| t.check("aws", "1", "Encrypt").is_ok()).count();
        assert_eq!(more, 3, "the account's 8, minus the 5 Decrypts");
        assert!(t.check("alibaba", "2", "Encrypt").is_ok(), "another account has its own bucket");
        let e = t.check("aws", "1", "Decrypt").unwrap_err();
        assert_eq!((e.aws().1, e.alibaba()), ("ThrottlingException", (429, "Rejected.Throttling")));
        std::thread::sleep(std::time::Duration::from_millis(450));
        assert!(t.check("aws", "1", "Decrypt").is_ok(), "refilled at 5/s");
    }
}
