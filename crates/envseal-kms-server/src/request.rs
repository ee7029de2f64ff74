//! One request as the handlers see it: the server state every request shares ([`App`]), the
//! request read whole ([`Incoming`]), and its progress ([`Call`]: who, what, on which key, for
//! the hook and the access log).

use std::collections::BTreeMap;
use std::net::IpAddr;

use envseal_support::percent;
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use serde_json::{Map, Value};

use crate::ServerConfig;
use crate::auth::NonceCache;
use crate::backend::Backend;
use crate::error::{Class, Fault};
use crate::hook::{Api, RequestInfo};
use crate::keys::KeyPolicies;
use crate::secrets::Secrets;

/// Server state shared by every request.
#[derive(Debug)]
pub(crate) struct App {
    pub cfg: ServerConfig,
    pub backend: Backend,
    pub nonces: NonceCache,
    /// Key policies and grants.
    pub keys: KeyPolicies,
    /// `--state`, if given.
    pub state: Option<crate::state::StateDir>,
    /// `--throttle`.
    pub throttle: crate::throttle::Throttle,
    /// `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

impl App {
    /// The shared state of a server over `cfg`, remembering at most `max_nonces` nonces, with
    /// no state directory (see [`App::with_state`]).
    pub(crate) fn new(cfg: ServerConfig, max_nonces: usize) -> App {
        let nonces = NonceCache::new(cfg.max_clock_skew * 2, max_nonces);
        let backend = Backend::new(cfg.kms.clone(), cfg.rotation_day);
        let throttle = crate::throttle::Throttle::new(cfg.throttle.clone());
        App { cfg, backend, nonces, keys: KeyPolicies::default(), state: None, throttle, metrics: Default::default() }
    }

    /// Restores the key policies and grants saved in `dir`, and saves there from now on.
    ///
    /// # Errors
    /// As [`crate::state::StateDir::load`].
    pub(crate) fn with_state(mut self, dir: crate::state::StateDir) -> std::io::Result<App> {
        self.keys.restore(dir.load()?.keys);
        self.state = Some(dir);
        Ok(self)
    }

    /// The `/healthz` answer: `ok`, the backend's name and the uptime.
    pub(crate) fn health(&self) -> String {
        serde_json::json!({
            "status": "ok",
            "backend": self.cfg.kms.backend(),
            "uptime_seconds": self.metrics.uptime().as_secs(),
        })
        .to_string()
    }

    /// Saves what changed to the state directory, if there is one. A failure is reported on
    /// stderr; the change stays in memory (the request that made it has succeeded).
    pub(crate) fn persist(&self) {
        let Some(dir) = &self.state else { return };
        let saved = crate::state::Saved { format: 1, keys: self.keys.snapshot() };
        if let Err(e) = dir.save(&saved) {
            eprintln!("envseal kms serve: cannot save the state: {e}");
        }
    }
}

/// A request, read whole.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub method: String,
    /// The path as sent (percent-encoded).
    pub path: String,
    /// The query string as sent, without `?`.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Incoming {
    /// The first value of a header, if it is valid text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The path, percent-decoded (as sent if it does not decode).
    pub(crate) fn decoded_path(&self) -> String {
        percent::decode(&self.path, false).unwrap_or_else(|| self.path.clone())
    }
}

/// One request's progress: who, what, on which key (for the hook and the access log).
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub app: &'a App,
    pub api: Option<Api>,
    pub action: String,
    pub principal: String,
    pub access_key_id: String,
    pub resource: Option<String>,
    pub request_id: String,
    pub host: String,
    /// The signature scheme verified (`sigv4`, `acs3`, `rpc-v2`), for the access log.
    pub signature: &'static str,
    /// The client's address.
    pub source_ip: Option<IpAddr>,
    /// `User-Agent`.
    pub user_agent: String,
    /// Region named by the request.
    pub region: String,
    /// Whether an STS token came with the request.
    pub security_token: bool,
    /// The encryption context sent (source context for ReEncrypt).
    pub context: BTreeMap<String, String>,
    /// Parameters safe to record (never plaintext, blobs, secrets or tokens).
    pub params: Map<String, Value>,
    /// Tags of the last resource authorized, when the hook wants them.
    pub resource_tags: Option<BTreeMap<String, String>>,
    /// Answer in XML (AWS STS Query API): the handler's value is the document.
    pub xml: bool,
    /// The answer's secrets, which its value holds placeholders of (see [`crate::secrets`]).
    pub secrets: Secrets,
}

impl<'a> Call<'a> {
    /// A request of `app`, with this id and `Host`, nothing known of it yet.
    pub(crate) fn new(app: &'a App, request_id: String, host: String) -> Self {
        Call {
            app,
            api: None,
            action: String::new(),
            principal: String::new(),
            access_key_id: String::new(),
            resource: None,
            request_id,
            host,
            signature: "-",
            source_ip: None,
            user_agent: String::new(),
            region: String::new(),
            security_token: false,
            context: BTreeMap::new(),
            params: Map::new(),
            resource_tags: None,
            xml: false,
            secrets: Secrets::default(),
        }
    }

    /// What the hook sees of this request.
    pub(crate) fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            api: self.api.unwrap_or(Api::Aws),
            principal: &self.principal,
            access_key_id: &self.access_key_id,
            action: &self.action,
            resource: self.resource.as_deref(),
            resource_tags: self.resource_tags.as_ref(),
            region: &self.region,
            source_ip: self.source_ip,
            user_agent: &self.user_agent,
            request_id: &self.request_id,
            security_token: self.security_token,
            encryption_context: &self.context,
            params: &self.params,
            operation: None,
            key_policy: None,
            grants: &[],
            secure_transport: self.app.cfg.tls.is_some(),
            account: match self.api {
                Some(Api::Alibaba) => &self.app.cfg.alibaba_account,
                _ => &self.app.cfg.aws_account,
            },
        }
    }

    /// Records the encryption context a request carries (for policies and the audit trail).
    pub(crate) fn note_context(&mut self, ctx: &envseal_core::EncryptionContext) {
        if self.context.is_empty() {
            self.context = ctx.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        }
    }

    /// Records a request parameter that is safe to log.
    pub(crate) fn param(&mut self, name: &str, value: impl Into<Value>) {
        self.params.insert(name.to_owned(), value.into());
    }

    /// Asks the hook whether the authenticated principal may apply the action to `resource`.
    pub(crate) async fn authorize(&mut self, resource: Option<&str>) -> Result<(), Fault> {
        self.authorize_as(None, resource).await
    }

    /// [`Call::authorize`] for a permission other than the action's name (`ReEncryptFrom`,
    /// ...), with the key's policy and grants.
    pub(crate) async fn authorize_as(&mut self, operation: Option<&str>, resource: Option<&str>) -> Result<(), Fault> {
        let entry = resource.map(|r| self.app.keys.get(r)).unwrap_or_default();
        if let Some(r) = resource {
            self.resource = Some(r.to_owned());
            self.resource_tags = None;
            if self.app.cfg.hook.wants_resource_tags()
                && let Ok(m) = self.app.backend.describe(r).await
            {
                self.resource_tags = Some(m.tags);
            }
        }
        let mut info = self.info();
        info.resource = resource;
        info.operation = operation;
        info.key_policy = entry.policy.as_deref();
        info.grants = &entry.grants;
        self.app.cfg.hook.authorize(&info).map_err(|d| Fault::new(Class::AccessDenied, d.message))
    }
}
