//! The HTTP server: accept loop, graceful shutdown, body limit, timeouts, telling the two APIs
//! apart, and writing each API's success and error shapes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use envseal_support::zeroizing;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming as Body};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::error::{Class, Fault};
use crate::hook::{Api, Outcome};
use crate::request::{App, Call, Incoming};
use crate::secrets::Syntax;
use crate::wire;
use crate::{ApiSelect, ServerConfig, alibaba, aws};

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Nonces remembered at most (older ones are forgotten first).
const MAX_NONCES: usize = 100_000;

/// The request shape, decided from the headers and the query before the body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Aws,
    Alibaba,
    Unknown,
}

fn shape(headers: &HeaderMap, query: &str) -> Shape {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if header("x-amz-target").is_some() || header("authorization").is_some_and(|a| a.starts_with("AWS4-")) {
        return Shape::Aws;
    }
    let query_has_action = query.split('&').any(|p| p.starts_with("Action="));
    let form = header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if header("x-acs-action").is_some() || query_has_action || form {
        return Shape::Alibaba;
    }
    match header("authorization") {
        Some(a) if a.starts_with("AWS4-") => Shape::Aws,
        Some(a) if a.starts_with("ACS3-") => Shape::Alibaba,
        _ => Shape::Unknown,
    }
}

/// A KMS emulator bound to a loopback address.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
}

impl Server {
    /// Binds `addr`, which must be a loopback address (port 0 picks a free port).
    ///
    /// # Errors
    /// `InvalidInput` for a non-loopback address; the bind error otherwise.
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> io::Result<Server> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the KMS emulator listens on loopback addresses only (127.0.0.1, ::1)",
            ));
        }
        let state = config.state_dir.as_deref().map(crate::state::StateDir::open).transpose()?;
        let mut app = App::new(config, MAX_NONCES);
        if let Some(dir) = state {
            app = app.with_state(dir)?;
        }
        let listener = TcpListener::bind(addr).await?;
        Ok(Server { listener, app: Arc::new(app) })
    }

    /// The address actually bound.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and gives open connections
    /// up to 10 s to finish their requests.
    ///
    /// # Errors
    /// None today: accept errors (e.g. too many open files) are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        // Automatic rotation: rotate the keys that are due, every tick.
        let rotator = {
            let app = self.app.clone();
            tokio::spawn(async move {
                let tick = app.backend.rotation_tick();
                let mut warned = false;
                loop {
                    tokio::time::sleep(tick).await;
                    match app.backend.rotate_due().await {
                        Ok(ids) => {
                            for id in ids {
                                if app.cfg.access_log {
                                    eprintln!("{} rotation key={id} (automatic)", wire::iso8601(SystemTime::now()));
                                }
                            }
                        }
                        Err(e) if !warned => {
                            warned = true;
                            eprintln!("envseal kms serve: automatic rotation failed: {}", e.message);
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            eprintln!("envseal kms serve: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let app = self.app.clone();
                    let service = service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(handle(&app, req, peer.ip()).await) }
                    });
                    match &self.app.cfg.tls {
                        None => serve(&graceful, stream, service),
                        Some(tls) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
                            let watcher = graceful.watcher();
                            tokio::spawn(async move {
                                // A failed handshake (a plain-HTTP client, a bad certificate
                                // on the client's side) concerns that connection only.
                                let Ok(Ok(stream)) = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await else {
                                    return;
                                };
                                let conn = http1::Builder::new()
                                    .timer(TokioTimer::new())
                                    .header_read_timeout(HEADER_READ_TIMEOUT)
                                    .serve_connection(TokioIo::new(stream), service);
                                let _ = watcher.watch(conn).await;
                            });
                        }
                    }
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        rotator.abort();
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {}
        }
        Ok(())
    }
}

/// Serves one plain connection, watched for graceful shutdown.
fn serve<S>(graceful: &GracefulShutdown, stream: tokio::net::TcpStream, service: S)
where
    S: hyper::service::HttpService<Body, ResBody = Full<Bytes>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        // A client that goes away mid-request is not the server's problem.
        let _ = conn.await;
    });
}

/// Reads the body, refusing more than `max` bytes.
async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, Fault> {
    let too_large = || Fault::new(Class::PayloadTooLarge, format!("the request body exceeds {max} bytes"));
    if let Some(len) = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(_) => Err(Fault::new(Class::MalformedBody, "the request body could not be read")),
    }
}

/// `GET /healthz` and `GET /metrics`: plain answers, no signature (they hold no secret).
fn service_endpoint(app: &App, req: &Request<Body>, shape: Shape) -> Option<Response<Full<Bytes>>> {
    if req.method() != hyper::Method::GET || shape != Shape::Unknown {
        return None;
    }
    let (body, content_type) = match req.uri().path() {
        "/healthz" => (app.health(), "application/json"),
        "/metrics" => (app.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Some(r)
}

async fn handle(app: &App, req: Request<Body>, peer: IpAddr) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let shape = shape(req.headers(), req.uri().query().unwrap_or(""));
    if let Some(r) = service_endpoint(app, &req, shape) {
        return r;
    }
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let host = parts.headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1").to_owned();
    let mut call = Call::new(app, wire::uuid_v4(), host);
    call.api = match shape {
        Shape::Aws => Some(Api::Aws),
        Shape::Alibaba => Some(Api::Alibaba),
        Shape::Unknown => None,
    };
    call.source_ip = Some(peer);
    call.user_agent = parts.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let work = async {
        let body = read_body(body, &parts.headers, app.cfg.max_body).await?;
        let req = Incoming {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query,
            headers: parts.headers.clone(),
            body,
        };
        match call.api {
            Some(api) if !app.cfg.api.allows(api) => Err(Fault::new(
                Class::ApiDisabled,
                format!(
                    "this emulator serves only the {} API (--api)",
                    if app.cfg.api == ApiSelect::Aws { "AWS KMS" } else { "Alibaba Cloud KMS" }
                ),
            )),
            Some(Api::Aws) => aws::handle(&mut call, &req).await,
            Some(Api::Alibaba) => alibaba::handle(&mut call, &req).await,
            None => Err(Fault::new(
                Class::UnknownAction,
                "not a KMS request: expected X-Amz-Target: TrentService.<Action> (AWS) or an Action parameter / x-acs-action header (Alibaba Cloud)",
            )),
        }
    };
    let result = match tokio::time::timeout(app.cfg.request_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(Fault::new(
            Class::Timeout,
            format!("the request took longer than {} s", app.cfg.request_timeout.as_secs_f32()),
        )),
    };
    let api = call.api.or(match app.cfg.api {
        ApiSelect::Aws => Some(Api::Aws),
        ApiSelect::Alibaba => Some(Api::Alibaba),
        _ => None,
    });
    let (response, status, code) = match (api, result) {
        (Some(Api::Aws), Ok(Value::String(doc))) if call.xml => (xml_response(200, &call, doc), 200, None),
        (Some(Api::Aws), Err(f)) if call.xml => {
            let (status, code) = crate::sts::aws_code(&f);
            (
                xml_response(status, &call, crate::sts::aws_error_xml(code, &f.message, &call.request_id)),
                status,
                Some(code),
            )
        }
        (Some(Api::Aws), Ok(v)) => (aws_response(200, &call, v), 200, None),
        (Some(Api::Aws), Err(f)) => {
            let (status, code) = f.aws();
            (aws_response(status, &call, json!({"__type": code, "message": f.message})), status, Some(code))
        }
        (Some(Api::Alibaba), Ok(mut v)) => {
            if let Value::Object(m) = &mut v {
                m.insert("RequestId".into(), Value::String(call.request_id.clone()));
            }
            (alibaba_response(200, &call, v), 200, None)
        }
        (Some(Api::Alibaba), Err(f)) => {
            let (status, code) = f.alibaba();
            (alibaba_response(status, &call, alibaba_error(&call, code, &f.message)), status, Some(code))
        }
        // Neither shape: an answer both SDKs can read.
        (_, r) => {
            let f = r.err().unwrap_or_else(|| Fault::new(Class::Internal, "no API"));
            let (status, aws_code) = f.aws();
            let (_, ali_code) = f.alibaba();
            let mut body = alibaba_error(&call, ali_code, &f.message);
            if let Value::Object(m) = &mut body {
                m.insert("__type".into(), Value::String(aws_code.into()));
                m.insert("message".into(), Value::String(f.message.clone()));
            }
            (json_response(status, "application/json", &call, body), status, Some(ali_code))
        }
    };
    let mut info = call.info();
    info.api = api.unwrap_or(Api::Aws);
    let recorded = app.cfg.hook.completed(&info, &Outcome { status, error_code: code });
    // Fail closed: what could not be recorded is not answered.
    let (response, status, code) = match recorded {
        Ok(()) => (response, status, code),
        Err(d) => {
            let f = Fault::new(Class::Internal, format!("the request could not be recorded: {}", d.message));
            let (status, aws_code) = f.aws();
            let (_, ali_code) = f.alibaba();
            match api {
                Some(Api::Alibaba) => (
                    alibaba_response(status, &call, alibaba_error(&call, ali_code, &f.message)),
                    status,
                    Some(ali_code),
                ),
                _ => (
                    aws_response(status, &call, json!({"__type": aws_code, "message": f.message})),
                    status,
                    Some(aws_code),
                ),
            }
        }
    };
    app.metrics.record(api.map(Api::as_str), &call.action, !call.principal.is_empty(), code, started.elapsed());
    if app.cfg.access_log {
        eprintln!(
            "{} {} {} sig={} principal={} key={} -> {}{} ({} ms)",
            wire::iso8601(SystemTime::now()),
            api.map_or("-", Api::as_str),
            if call.action.is_empty() { "-" } else { &call.action },
            call.signature,
            if call.principal.is_empty() { "-" } else { &call.principal },
            call.resource.as_deref().unwrap_or("-"),
            status,
            code.map(|c| format!(" {c}")).unwrap_or_default(),
            started.elapsed().as_millis()
        );
    }
    response
}

fn alibaba_error(call: &Call<'_>, code: &str, message: &str) -> Value {
    json!({
        "RequestId": call.request_id,
        "HostId": call.host,
        "Code": code,
        "Message": message,
        "Recommend": format!("envseal kms serve (a local emulator): see docs/backends/emulator.md for {code}"),
    })
}

fn aws_response(status: u16, call: &Call<'_>, body: Value) -> Response<Full<Bytes>> {
    json_response(status, "application/x-amz-json-1.1", call, body)
}

fn xml_response(status: u16, call: &Call<'_>, doc: String) -> Response<Full<Bytes>> {
    let body = call.secrets.render(doc.as_bytes(), Syntax::Xml);
    let mut r = Response::new(Full::new(zeroizing::into_bytes(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(id) = HeaderValue::from_str(&call.request_id) {
        r.headers_mut().insert("x-amzn-requestid", id);
    }
    r
}

fn alibaba_response(status: u16, call: &Call<'_>, body: Value) -> Response<Full<Bytes>> {
    json_response(status, "application/json;charset=utf-8", call, body)
}

fn json_response(status: u16, content_type: &'static str, call: &Call<'_>, body: Value) -> Response<Full<Bytes>> {
    // The value holds no secret, only placeholders: the body is where they are written in.
    let public = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let bytes = zeroizing::into_bytes(call.secrets.render(&public, Syntax::Json));
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(id) = HeaderValue::from_str(&call.request_id) {
        h.insert("x-amzn-requestid", id.clone());
        h.insert("x-acs-request-id", id);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn shapes() {
        assert_eq!(shape(&headers(&[("x-amz-target", "TrentService.Decrypt")]), ""), Shape::Aws);
        assert_eq!(shape(&headers(&[("x-acs-action", "Decrypt")]), ""), Shape::Alibaba);
        assert_eq!(shape(&headers(&[]), "Format=json&Action=Decrypt"), Shape::Alibaba);
        assert_eq!(
            shape(&headers(&[("content-type", "application/x-www-form-urlencoded; charset=utf-8")]), ""),
            Shape::Alibaba
        );
        assert_eq!(shape(&headers(&[("authorization", "AWS4-HMAC-SHA256 Credential=x")]), ""), Shape::Aws);
        assert_eq!(shape(&headers(&[]), "a=b"), Shape::Unknown);
    }
}
