//! Alerts on high-risk events: root or admin use, access key creation, policy changes, key
//! disabling or deletion scheduling, repeated denials.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Outcome;
use crate::record::Record;

/// Hook commands running at once, at most; more alerts are reported on stderr only.
const MAX_HOOKS: usize = 4;

/// Which events raise an alert.
#[derive(Clone, Debug)]
pub struct AlertRules {
    /// Principals (names) whose every use is reported, like the root's.
    pub admin_principals: Vec<String>,
    /// Denials of one principal within a window that raise an alert: (count, window).
    pub repeated_denials: (usize, Duration),
    /// Events reported whenever they succeed.
    pub events: Vec<String>,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            admin_principals: Vec::new(),
            repeated_denials: (5, Duration::from_secs(60)),
            events: [
                "CreateAccessKey",
                "UpdateAccessKey",
                "CreateUser",
                "CreatePolicy",
                "PutPolicy",
                "DeletePolicy",
                "AttachPolicy",
                "DetachPolicy",
                "CreateRole",
                "UpdateRole",
                "UpdateUser",
                "DisableKey",
                "ScheduleKeyDeletion",
                "DeleteAlias",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// Where alerts go.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AlertSink {
    /// One line on stderr: `envseal: ALERT: ...`.
    Stderr,
    /// `sh -c COMMAND`, with the alert as JSON on stdin and `ENVSEAL_ALERT_*` variables.
    Command(String),
}

/// One alert.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// `root-use`, `admin-use`, `high-risk-event`, `repeated-denials`.
    pub rule: &'static str,
    /// The record's sequence number.
    pub seq: u64,
    /// The event.
    pub event: String,
    /// Who.
    pub principal: String,
    /// The key, if any.
    pub key_id: Option<String>,
    /// A sentence.
    pub message: String,
}

/// Watches records and raises alerts.
#[derive(Debug)]
pub struct Alerter {
    rules: AlertRules,
    sinks: Vec<AlertSink>,
    denials: Mutex<HashMap<String, VecDeque<Instant>>>,
    running: Arc<AtomicUsize>,
}

impl Alerter {
    /// An alerter with `rules`, reporting to `sinks`.
    pub fn new(rules: AlertRules, sinks: Vec<AlertSink>) -> Self {
        Self { rules, sinks, denials: Mutex::new(HashMap::new()), running: Arc::new(AtomicUsize::new(0)) }
    }

    /// The alerts `r` raises (updates the denial counters).
    pub fn evaluate(&self, r: &Record) -> Vec<Alert> {
        let mut out = Vec::new();
        if r.source == "log" {
            return out;
        }
        let who = r.principal.as_ref().map_or(String::new(), |p| {
            if p.name.is_empty() { p.access_key_id.clone().unwrap_or_default() } else { p.name.clone() }
        });
        let kind = r.principal.as_ref().map_or("", |p| p.kind.as_str());
        let alert = |rule, message: String| Alert {
            rule,
            seq: r.seq,
            event: r.event.clone(),
            principal: who.clone(),
            key_id: r.key_id.clone(),
            message,
        };
        if kind == "Root" {
            out.push(alert("root-use", format!("the account root ran {}", r.event)));
        } else if !who.is_empty() && self.rules.admin_principals.contains(&who) {
            out.push(alert("admin-use", format!("admin {who} ran {}", r.event)));
        }
        if r.outcome == Some(Outcome::Success) && self.rules.events.contains(&r.event) {
            out.push(alert("high-risk-event", format!("{who} ran {} (high-risk)", r.event)));
        }
        if r.outcome == Some(Outcome::Denied) && !who.is_empty() {
            let (count, window) = self.rules.repeated_denials;
            let now = Instant::now();
            let mut d = self.denials.lock().unwrap_or_else(PoisonError::into_inner);
            let q = d.entry(who.clone()).or_default();
            q.push_back(now);
            while q.front().is_some_and(|t| now.duration_since(*t) > window) {
                q.pop_front();
            }
            if q.len() >= count {
                q.clear();
                out.push(alert(
                    "repeated-denials",
                    format!("{who} was denied {count} times within {} s (last: {})", window.as_secs(), r.event),
                ));
            }
        }
        out
    }

    /// Evaluates `r` and sends its alerts to the sinks (hooks run in the background).
    pub fn observe(&self, r: &Record) {
        for a in self.evaluate(r) {
            for sink in &self.sinks {
                match sink {
                    AlertSink::Stderr => eprintln!("envseal: ALERT: [{}] seq {}: {}", a.rule, a.seq, a.message),
                    AlertSink::Command(cmd) => self.run_hook(cmd, &a),
                }
            }
        }
    }

    fn run_hook(&self, cmd: &str, a: &Alert) {
        if self.running.fetch_add(1, Ordering::SeqCst) >= MAX_HOOKS {
            self.running.fetch_sub(1, Ordering::SeqCst);
            eprintln!(
                "envseal: warning: {MAX_HOOKS} alert hooks still running; alert seq {} not sent to the hook",
                a.seq
            );
            return;
        }
        let json = serde_json::to_vec(a).unwrap_or_default();
        let child = Command::new("sh")
            .args(["-c", cmd])
            .env("ENVSEAL_ALERT_RULE", a.rule)
            .env("ENVSEAL_ALERT_EVENT", &a.event)
            .env("ENVSEAL_ALERT_PRINCIPAL", &a.principal)
            .env("ENVSEAL_ALERT_SEQ", a.seq.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn();
        let running = self.running.clone();
        match child {
            Ok(mut c) => {
                std::thread::spawn(move || {
                    if let Some(mut stdin) = c.stdin.take() {
                        let _ = stdin.write_all(&json);
                    }
                    match c.wait() {
                        Ok(s) if s.success() => {}
                        Ok(s) => eprintln!("envseal: warning: the alert hook exited with {s}"),
                        Err(e) => eprintln!("envseal: warning: the alert hook failed: {e}"),
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) => {
                running.fetch_sub(1, Ordering::SeqCst);
                eprintln!("envseal: warning: cannot start the alert hook: {e}");
            }
        }
    }
}
