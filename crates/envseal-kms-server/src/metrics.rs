//! `GET /metrics` (Prometheus text format 0.0.4) and `GET /healthz`.
//!
//! Two metrics: `envseal_kms_requests_total{api,action,outcome}` (outcome: `ok` or the API's
//! error code) and the histogram `envseal_kms_request_duration_seconds{api}`, plus
//! `envseal_kms_uptime_seconds`. Labels come from a bounded set: an action is recorded under
//! its name only once the request was authenticated, and at most [`MAX_SERIES`] series are
//! kept (the rest count under `action="other"`), so unauthenticated clients cannot grow it.
//! The format is four line shapes; it is written here rather than through a client crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Most (api, action, outcome) series kept.
const MAX_SERIES: usize = 1000;
/// The APIs, in label order.
const APIS: [&str; 3] = ["alibaba", "aws", "none"];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// Counters of one server.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(usize, String, String), u64>>,
    latency: [Histogram; APIS.len()],
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self { requests: Mutex::default(), latency: Default::default(), started: Instant::now() }
    }
}

fn api_index(api: Option<&str>) -> usize {
    match api {
        Some("alibaba") => 0,
        Some("aws") => 1,
        _ => 2,
    }
}

/// An action as a label: its name if authenticated and well-formed, else `other`.
fn action_label(action: &str, authenticated: bool) -> &str {
    if authenticated && !action.is_empty() && action.len() <= 64 && action.bytes().all(|b| b.is_ascii_alphanumeric()) {
        action
    } else {
        "other"
    }
}

impl Metrics {
    /// Counts one request.
    pub(crate) fn record(
        &self,
        api: Option<&str>,
        action: &str,
        authenticated: bool,
        code: Option<&str>,
        took: Duration,
    ) {
        let i = api_index(api);
        let h = &self.latency[i];
        let secs = took.as_secs_f64();
        for (b, bound) in h.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let outcome = code.unwrap_or("ok");
        let outcome = if outcome.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') { outcome } else { "other" };
        let mut m = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let mut key = (i, action_label(action, authenticated).to_owned(), outcome.to_owned());
        if !m.contains_key(&key) && m.len() >= MAX_SERIES {
            key.1 = "other".to_owned();
        }
        *m.entry(key).or_insert(0) += 1;
    }

    /// Time since the server started.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP envseal_kms_requests_total Requests answered, by API, action and outcome (ok or the error code).\n",
        );
        out.push_str("# TYPE envseal_kms_requests_total counter\n");
        for ((api, action, outcome), n) in self.requests.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = writeln!(
                out,
                "envseal_kms_requests_total{{api=\"{}\",action=\"{action}\",outcome=\"{outcome}\"}} {n}",
                APIS[*api]
            );
        }
        out.push_str("# HELP envseal_kms_request_duration_seconds Time from a request's first byte to its answer.\n");
        out.push_str("# TYPE envseal_kms_request_duration_seconds histogram\n");
        for (api, h) in APIS.iter().zip(&self.latency) {
            let count = h.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            for (b, bound) in h.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "envseal_kms_request_duration_seconds_bucket{{api=\"{api}\",le=\"{bound}\"}} {}",
                    b.load(Ordering::Relaxed)
                );
            }
            let _ = writeln!(out, "envseal_kms_request_duration_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {count}");
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "envseal_kms_request_duration_seconds_sum{{api=\"{api}\"}} {sum}");
            let _ = writeln!(out, "envseal_kms_request_duration_seconds_count{{api=\"{api}\"}} {count}");
        }
        out.push_str("# HELP envseal_kms_uptime_seconds Seconds since the server started.\n");
        out.push_str("# TYPE envseal_kms_uptime_seconds gauge\n");
        let _ = writeln!(out, "envseal_kms_uptime_seconds {}", self.started.elapsed().as_secs_f64());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let m = Metrics::default();
        m.record(Some("aws"), "GenerateDataKey", true, None, Duration::from_micros(700));
        m.record(Some("aws"), "GenerateDataKey", true, Some("ThrottlingException"), Duration::from_millis(3));
        m.record(Some("alibaba"), "Evil\"}x", true, None, Duration::from_millis(1));
        m.record(None, "Decrypt", false, Some("MissingAuthenticationTokenException"), Duration::from_millis(1));
        let t = m.render();
        assert!(
            t.contains("envseal_kms_requests_total{api=\"aws\",action=\"GenerateDataKey\",outcome=\"ok\"} 1"),
            "{t}"
        );
        assert!(t.contains("outcome=\"ThrottlingException\"} 1"), "{t}");
        assert!(t.contains("api=\"alibaba\",action=\"other\""), "{t}");
        assert!(t.contains("api=\"none\",action=\"other\""), "unauthenticated: {t}");
        assert!(t.contains("envseal_kms_request_duration_seconds_bucket{api=\"aws\",le=\"0.001\"} 1"), "{t}");
        assert!(t.contains("envseal_kms_request_duration_seconds_count{api=\"aws\"} 2"), "{t}");
    }
}
