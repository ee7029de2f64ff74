//! One signed KMS call with retries: credentials, signing, the transport, error mapping.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use envseal_core::KmsError;
use reqwest::header::HeaderValue;
use serde::de::DeserializeOwned;
use zeroize::{Zeroize, Zeroizing};

use crate::config::{ResolvedEndpoint, RetryPolicy};
use crate::credentials::Provider;
use crate::errors::{ApiError, CallContext};
use crate::signer::{RpcCall, SignatureVersion, sign_rpc_call};
use crate::time::format_utc;
use crate::transport::{Request, Transport, TransportError};

/// The parameters of one call. Values are zeroized on drop: `Plaintext` is a secret.
#[derive(Default)]
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    pub(crate) fn set_opt(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.set(name, v),
            None => self,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl Drop for Params {
    fn drop(&mut self) {
        for v in self.0.values_mut() {
            v.zeroize();
        }
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Whether a call may be sent again after a failure that may have been processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and cryptographic calls: running twice is harmless.
    Idempotent,
    /// Creations (key, version, alias): retried only when the server certainly did not act.
    OnlyIfNotProcessed,
}

/// A failure before it becomes a [`KmsError`].
enum Failure {
    Api(ApiError),
    Transport(TransportError),
}

pub(crate) struct Api {
    pub transport: Box<dyn Transport>,
    pub endpoint: ResolvedEndpoint,
    pub signature_version: SignatureVersion,
    pub provider: Provider,
    pub retry: RetryPolicy,
}

impl Api {
    /// Calls `action` and decodes the JSON answer into `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        action: &'static str,
        params: &Params,
        retry: Retry,
        ctx: CallContext<'_>,
    ) -> Result<T, KmsError> {
        let body = self.call_raw(action, params, retry, ctx).await?;
        serde_json::from_slice(&body).map_err(|_| unexpected(action))
    }

    pub(crate) async fn call_raw(
        &self,
        action: &'static str,
        params: &Params,
        retry: Retry,
        ctx: CallContext<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let policy = self.retry;
        let mut attempt = 0;
        loop {
            // Credential errors are final here: the provider has its own timeouts.
            let credentials = self.provider.credentials().await?;
            let request = self.build(action, params, &credentials);
            let failure = match self.transport.send(request).await {
                Ok(r) if (200..300).contains(&r.status) => return Ok(r.body),
                Ok(r) => {
                    let mut secrets = vec![credentials.access_key_secret().expose_secret()];
                    if let Some(t) = credentials.security_token() {
                        secrets.push(t.expose_secret());
                    }
                    if let Some(p) = params.get("Plaintext") {
                        secrets.push(p);
                    }
                    Failure::Api(ApiError::parse(r.status, &r.body, &secrets))
                }
                Err(e) => Failure::Transport(e),
            };
            attempt += 1;
            let (retryable, not_processed) = match &failure {
                Failure::Api(e) => (e.retryable(), e.certainly_not_processed()),
                Failure::Transport(TransportError::Connect(_)) => (true, true),
                Failure::Transport(TransportError::Tls(_)) => (false, true),
                Failure::Transport(_) => (true, false),
            };
            let may_retry =
                retryable && (retry == Retry::Idempotent || not_processed) && attempt < policy.max_attempts.max(1);
            if !may_retry {
                return Err(match failure {
                    Failure::Api(e) => e.into_kms_error(ctx),
                    Failure::Transport(e) => self.transport_error(e),
                });
            }
            tokio::time::sleep(policy.backoff(attempt - 1)).await;
        }
    }

    /// Signs `action` with a fresh nonce and the current time.
    fn build(&self, action: &str, params: &Params, credentials: &crate::Credentials) -> Request {
        let nonce = hex::encode(envseal_core::random::array::<16>());
        let timestamp = format_utc(SystemTime::now());
        let call =
            RpcCall { host: &self.endpoint.host, action, params: &params.0, nonce: &nonce, timestamp: &timestamp };
        let mut signed = sign_rpc_call(self.signature_version, &call, credentials);
        let query = Zeroizing::new(std::mem::take(&mut signed.query));
        let mut headers = Vec::with_capacity(signed.headers.len());
        for (name, value) in &mut signed.headers {
            // Invariant: every value is built from printable ASCII (ids, dates, hex, the
            // credentials, which are checked to be printable ASCII when loaded).
            if let Ok(mut v) = HeaderValue::from_str(value) {
                if matches!(*name, "authorization" | "x-acs-security-token") {
                    v.set_sensitive(true);
                }
                headers.push((*name, v));
            }
            value.zeroize();
        }
        // The signature's parts repeat the parameters and the token.
        if let Some(v3) = signed.v3.as_mut() {
            v3.canonical_request.zeroize();
        }
        if let Some(v2) = signed.v2.as_mut() {
            v2.canonicalized_query.zeroize();
            v2.string_to_sign.zeroize();
        }
        Request { query, headers }
    }

    fn transport_error(&self, e: TransportError) -> KmsError {
        let addr = &self.endpoint.base;
        match e {
            TransportError::Connect(m) => {
                KmsError::Unavailable { message: format!("cannot connect to {addr}: {m}"), retryable: true }
            }
            TransportError::Tls(m) => {
                KmsError::Unavailable { message: format!("TLS with {addr} failed: {m}"), retryable: false }
            }
            TransportError::Timeout(m) => {
                KmsError::Unavailable { message: format!("request to {addr} timed out: {m}"), retryable: true }
            }
            TransportError::Other(m) => {
                KmsError::Unavailable { message: format!("request to {addr} failed: {m}"), retryable: true }
            }
        }
    }
}

pub(crate) fn unexpected(what: &str) -> KmsError {
    KmsError::Unavailable { message: format!("unexpected answer to {what} from Alibaba Cloud KMS"), retryable: false }
}
