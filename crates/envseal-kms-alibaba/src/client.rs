//! One signed KMS call with retries: credentials, signing, the transport, error mapping.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use envseal_core::KmsError;
use envseal_core::retry::RetryPolicy;
use envseal_http::{Failure, Idempotence, Method, Request, Transport, send_with_retries};
use reqwest::header::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use zeroize::{Zeroize, Zeroizing};

use crate::config::ResolvedEndpoint;
use crate::credentials::Provider;
use crate::error::{ApiError, CallContext};
use crate::signer::{RpcCall, SignatureVersion, sign_rpc_call};
use crate::time::format_utc;

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
        idempotence: Idempotence,
        ctx: CallContext<'_>,
    ) -> Result<T, KmsError> {
        let body = self.call_raw(action, params, idempotence, ctx).await?;
        serde_json::from_slice(&body).map_err(|_| unexpected(action))
    }

    /// Calls `action` with retries; every attempt is signed anew (fresh nonce and timestamp),
    /// with the credentials of the moment.
    pub(crate) async fn call_raw(
        &self,
        action: &'static str,
        params: &Params,
        idempotence: Idempotence,
        ctx: CallContext<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        send_with_retries(&self.retry, idempotence, || async {
            // Credential errors are final here: the provider has its own timeouts.
            let credentials = self.provider.credentials().await.map_err(Failure::Final)?;
            let r = self.transport.send(self.build(action, params, &credentials)).await?;
            if r.is_success() {
                return Ok(r.body);
            }
            let mut secrets = vec![credentials.access_key_secret().expose_secret()];
            if let Some(t) = credentials.security_token() {
                secrets.push(t.expose_secret());
            }
            if let Some(p) = params.get("Plaintext") {
                secrets.push(p);
            }
            Err(Failure::api(ApiError::parse(r.status, &r.body, &secrets), &r))
        })
        .await
        .map_err(|f| f.into_kms_error(&self.endpoint.base, "", |e| e.into_kms_error(ctx)))
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
            // credentials, which are checked to be printable ASCII when loaded), and every
            // name is a lower-case header name.
            if let Ok(mut v) = HeaderValue::from_str(value) {
                if matches!(*name, "authorization" | "x-acs-security-token") {
                    v.set_sensitive(true);
                }
                headers.push((HeaderName::from_static(name), v));
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
        // Always `POST /?QUERY` with an empty body, as the official SDK sends KMS calls.
        let mut target = Zeroizing::new(String::with_capacity(query.len() + 1));
        target.push('?');
        target.push_str(&query);
        Request { method: Method::POST, target, headers, body: None }
    }
}

pub(crate) fn unexpected(what: &str) -> KmsError {
    KmsError::Unavailable { message: format!("unexpected answer to {what} from Alibaba Cloud KMS"), retryable: false }
}
