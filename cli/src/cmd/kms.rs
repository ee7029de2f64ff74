//! `envseal kms serve`: a local KMS emulator answering the Alibaba Cloud KMS RPC API and the AWS
//! KMS JSON 1.1 API, over the in-memory HSM mock or a local keystore (docs/backends/emulator.md).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use envseal_audit::{AlertRules, AlertSink, Alerter};
use envseal_core::Kms;
use envseal_governance::{Governance, ServerGovernance};
use envseal_kms_server::{AccessKey, ApiSelect, Credentials, DEFAULT_MAX_BODY, Server, ServerConfig, TlsIdentity};

use crate::backend;
use crate::exit;

/// `envseal kms ...`.
#[derive(Subcommand, Debug)]
pub enum KmsCmd {
    /// Run a local KMS emulator speaking the Alibaba Cloud KMS and AWS KMS APIs (for
    /// development and tests; it listens on 127.0.0.1 only).
    #[command(after_help = "\
Examples:
  envseal kms serve                              in-memory keys, a fresh dev principal, a free port
  envseal kms serve --port 8300 --api aws        AWS KMS only, on a fixed port
  envseal kms serve --backend local:./kms-data   keys persisted in a local keystore directory
  envseal kms serve --access-key AK:SECRET       accept this access key instead of a generated one
  envseal kms serve --iam iam.toml               users, roles and policies enforced; STS AssumeRole
  envseal kms serve --iam iam.toml --audit-log audit.log --alert-hook 'logger -t envseal'

The endpoint and the environment a client needs are printed at startup. See docs/backends/emulator.md.")]
    Serve(ServeArgs),
}

/// Which APIs to answer.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiArg {
    /// Both, told apart by the request's shape.
    Both,
    /// Alibaba Cloud KMS RPC API (2016-01-20) only.
    Alibaba,
    /// AWS KMS JSON 1.1 API only.
    Aws,
}

/// Options of `envseal kms serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TCP port on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Backend: `mem` (in-memory HSM mock; keys are lost on exit) or `local:DIR` (a local
    /// keystore directory, created if missing; `local:` for the default one).
    #[arg(long, default_value = envseal_kms_mock::SCHEME, value_name = "mem|local:DIR")]
    backend: String,
    /// Answer only this API.
    #[arg(long, value_enum, default_value_t = ApiArg::Both)]
    api: ApiArg,
    /// Accept this access key (repeatable); the first is printed as the dev principal's.
    #[arg(long = "access-key", value_name = "ID:SECRET", env = "ENVSEAL_KMS_SERVE_ACCESS_KEY", value_delimiter = ',')]
    access_keys: Vec<String>,
    /// IAM file (docs/IAM.md): users and their access keys, groups, roles and policies, all
    /// enforced; STS AssumeRole issues temporary credentials; the file is reloaded when it
    /// changes. A file with only `access_keys` (id, secret, optional security_token and expires)
    /// is a credentials list: every key may do everything. No dev principal is created.
    #[arg(long, value_name = "FILE")]
    iam: Option<PathBuf>,
    /// Append one audit record per request (and per IAM change) to this log (docs/AUDIT.md).
    #[arg(long, value_name = "FILE", env = "ENVSEAL_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Key that MACs the log's checkpoints; created if missing; keep it away from the log
    /// (default $XDG_DATA_HOME/envseal/audit.key).
    #[arg(long, value_name = "FILE", env = "ENVSEAL_AUDIT_KEY")]
    audit_key: Option<PathBuf>,
    /// When records reach the disk: `always` (before the response), `never` (the OS decides), or
    /// an interval such as `1s`.
    #[arg(long, value_name = "POLICY", default_value = "always")]
    audit_fsync: String,
    /// If a record cannot be written: `closed` fails the request (the default), `open` answers
    /// anyway and warns.
    #[arg(long, value_name = "MODE", default_value = "closed")]
    audit_on_failure: String,
    /// Run this shell command for each alert (high-risk events, root/admin use, repeated
    /// denials), with the alert as JSON on stdin; alerts also go to stderr.
    #[arg(long, value_name = "CMD")]
    alert_hook: Option<String>,
    /// Treat this user as an administrator whose every request raises an alert (repeatable).
    #[arg(long = "alert-admin", value_name = "USER")]
    alert_admins: Vec<String>,
    /// Largest request body in bytes (larger gets 413 in the API's error shape).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY, value_name = "BYTES")]
    max_body: usize,
    /// Time limit per request.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    request_timeout: humantime::Duration,
    /// Do not log one line per request on stderr.
    #[arg(long)]
    quiet: bool,
    /// Keep everything across restarts in this directory: the keys (a local keystore in
    /// DIR/keys, unless --backend names another), key policies, grants and the dev
    /// principal's access key (DIR/dev-credentials), so clients keep working after a restart.
    #[arg(long, value_name = "DIR", env = "ENVSEAL_KMS_SERVE_STATE")]
    state: Option<PathBuf>,
    /// How long one day of a rotation period lasts (default 1d). For tests: with `--rotation-day
    /// 20ms` a 90-day AWS rotation period (EnableKeyRotation) rotates every 1.8 s.
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    rotation_day: humantime::Duration,
    /// Limit requests, N per second: `N` for every request of an account (each API's account
    /// apart), `ACTION=N` for one action (repeatable). Over the limit: `Rejected.Throttling`
    /// (HTTP 429, Alibaba) or `ThrottlingException` (AWS).
    #[arg(long, value_name = "N|ACTION=N")]
    throttle: Vec<String>,
    /// Serve HTTPS with a fresh local CA and server certificate (for 127.0.0.1, ::1 and
    /// localhost), written to DIR/tls with --state (and reused), else to a temporary directory
    /// removed at exit; the CA bundle's path is printed for clients.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Runs `envseal kms ...`.
pub async fn run(cmd: KmsCmd) -> Result<ExitCode> {
    match cmd {
        KmsCmd::Serve(args) => serve(args).await,
    }
}

fn parse_access_key(s: &str) -> Result<AccessKey> {
    match s.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => Ok(AccessKey::new(id, secret, "dev")),
        // Never echo the value: it holds a secret.
        _ => Err(exit::fail(
            exit::Exit::Usage,
            "--access-key must be ID:SECRET",
            Some("e.g. --access-key AKDEV:dev-secret"),
        )),
    }
}

/// The backend, its description for the banner, and the default key. The emulator serves
/// backends that manage their own keys in this process: the in-memory mock and the local
/// keystore (opened without its governance: the server applies its own).
async fn open_backend(spec: &str) -> Result<(Arc<dyn Kms>, String, Option<String>)> {
    let what = match backend::name_of(spec).ok() {
        Some(envseal_kms_mock::BACKEND) => "in-memory HSM mock; keys are lost on exit",
        Some(envseal_kms_local::BACKEND) => "local keystore",
        known => {
            let why = if known.is_some() { "kms serve cannot serve backend" } else { "unknown backend" };
            return Err(exit::fail(
                exit::Exit::Usage,
                format!("{why} {spec:?}"),
                Some("use --backend mem or --backend local:DIR"),
            ));
        }
    };
    let opened = backend::open_ungoverned(spec)?;
    let key = match (opened.key, opened.kms.key_manager()) {
        (Some(k), _) => Some(k),
        (None, Some(km)) => km.describe_key(backend::DEFAULT_KEY).await.ok().map(|m| m.key_id),
        (None, None) => None,
    };
    Ok((opened.kms, format!("{spec} ({what})"), key))
}

/// Whether an `--iam` file is the old credentials-only list (`{"access_keys": [...]}`).
fn credentials_only(path: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let text = zeroize::Zeroizing::new(text);
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(m)) => m.contains_key("access_keys"),
        _ => false,
    }
}

/// The dev principal kept in a state directory (`ID:SECRET`, mode 0600), created on first use.
fn stable_dev_key(dir: &std::path::Path) -> Result<AccessKey> {
    let path = dir.join("dev-credentials");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = zeroize::Zeroizing::new(text);
        return parse_access_key(text.trim())
            .with_context(|| format!("{} is not ID:SECRET (delete it to get a new key)", path.display()));
    }
    let k = AccessKey::generate("dev");
    let line = zeroize::Zeroizing::new(format!("{}:{}\n", k.id(), k.dangerous_secret()));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    envseal_support::atomic::write(&path, line.as_bytes(), envseal_support::atomic::Mode::Fixed(0o600))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(k)
}

async fn serve(mut args: ServeArgs) -> Result<ExitCode> {
    // --state keeps the keys too: in a local keystore under it, unless --backend names one.
    if let Some(dir) = &args.state
        && args.backend == envseal_kms_mock::SCHEME
    {
        args.backend = format!("local:{}", dir.join("keys").display());
    }
    let (kms, backend_desc, default_key) = open_backend(&args.backend).await?;
    let governed = args.iam.as_ref().is_some_and(|p| !credentials_only(p));
    let mut credentials = match &args.iam {
        Some(path) if !governed => {
            Credentials::from_iam_file(path).with_context(|| format!("reading {}", path.display()))?
        }
        _ => Credentials::new(),
    };
    let explicit: Vec<AccessKey> = args.access_keys.iter().map(|s| parse_access_key(s)).collect::<Result<_>>()?;
    // The dev principal: the first --access-key, else a generated one when no IAM file is given.
    let dev = match (explicit.first(), &args.iam) {
        (Some(k), _) => Some((k.id().to_owned(), k.dangerous_secret().to_owned())),
        (None, None) => {
            let k = match &args.state {
                Some(dir) => stable_dev_key(dir)?,
                None => AccessKey::generate("dev"),
            };
            let pair = (k.id().to_owned(), k.dangerous_secret().to_owned());
            credentials.insert(k);
            Some(pair)
        }
        (None, Some(_)) => None,
    };
    let explicit_ids: Vec<String> = explicit.iter().map(|k| k.id().to_owned()).collect();
    for k in explicit {
        credentials.insert(k);
    }
    let root_keys: Vec<String> = explicit_ids;
    let mut account = None;
    // Always a governance hook: it evaluates key policies and grants even without an IAM file.
    let governance = {
        let mut gov = match (&args.iam, governed) {
            (Some(path), true) => Governance::from_file(path).map_err(|e| {
                exit::fail(exit::Exit::BadInput, e.to_string(), Some("check it with `envseal iam validate`"))
            })?,
            _ => Governance::new(envseal_iam::Iam::default()),
        };
        if governed {
            account = Some(gov.iam().account().to_owned());
        }
        if let Some(log) = &args.audit_log {
            let opts = crate::governance::audit_options(Some(&args.audit_fsync), Some(&args.audit_on_failure))?;
            let mut sinks = vec![AlertSink::Stderr];
            if let Some(cmd) = &args.alert_hook {
                sinks.push(AlertSink::Command(cmd.clone()));
            }
            let rules = AlertRules { admin_principals: args.alert_admins.clone(), ..AlertRules::default() };
            let audit = crate::governance::open_audit(log, args.audit_key.as_deref(), opts)?
                .with_alerter(Alerter::new(rules, sinks));
            gov = gov.with_audit(audit);
        }
        Arc::new(gov)
    };
    // With an IAM file, --access-key keys are the account root's; without one every key may do
    // everything and is recorded under its principal name.
    let hook = if governed {
        Arc::new(ServerGovernance::new(governance, root_keys.clone()))
    } else {
        Arc::new(ServerGovernance::new(governance, Vec::new()).with_unmanaged(credentials.principals()))
    };
    if governed {
        credentials.set_source(hook.clone());
    }
    if credentials.is_empty() {
        return Err(exit::fail(
            exit::Exit::Usage,
            "no access key to accept",
            Some("add access_keys to the IAM file, or pass --access-key"),
        ));
    }
    let mut config = ServerConfig::new(kms, credentials);
    config.hook = hook;
    if let Some(a) = account {
        config.aws_account = a.clone();
        config.alibaba_account = a;
    }
    config.api = match args.api {
        ApiArg::Both => ApiSelect::Both,
        ApiArg::Alibaba => ApiSelect::Alibaba,
        ApiArg::Aws => ApiSelect::Aws,
    };
    config.max_body = args.max_body;
    config.request_timeout = args.request_timeout.into();
    config.access_log = !args.quiet;
    config.state_dir = args.state.clone();
    for spec in &args.throttle {
        config.throttle.add(spec).map_err(|e| {
            exit::fail(exit::Exit::Usage, e.to_string(), Some("e.g. --throttle 100 --throttle GenerateDataKey=50"))
        })?;
    }
    config.rotation_day = args.rotation_day.into();
    if config.rotation_day.is_zero() {
        return Err(exit::fail(exit::Exit::Usage, "--rotation-day must be positive", None));
    }
    // TLS: the given certificate, or one made here (kept in the state directory).
    let mut tls_tmp = None;
    let ca_bundle = match (&args.tls_cert, &args.tls_key, args.tls) {
        (Some(cert), Some(key), _) => {
            config.tls = Some(
                TlsIdentity::from_files(cert, key)
                    .map_err(|e| exit::fail(exit::Exit::BadInput, e.to_string(), None))?,
            );
            None
        }
        (_, _, true) => {
            let dir = match &args.state {
                Some(d) => d.join("tls"),
                None => {
                    let t = tempfile::Builder::new().prefix("envseal-kms-tls-").tempdir()?;
                    let p = t.path().to_owned();
                    tls_tmp = Some(t);
                    p
                }
            };
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            let identity = if cert.is_file() && key.is_file() {
                TlsIdentity::from_files(&cert, &key).map_err(|e| {
                    exit::fail(exit::Exit::BadInput, e.to_string(), Some("delete the tls directory to make new ones"))
                })?
            } else {
                TlsIdentity::generate(&dir).map_err(|e| exit::fail(exit::Exit::Other, e.to_string(), None))?.0
            };
            config.tls = Some(identity);
            Some(dir.join("ca.pem"))
        }
        _ => None,
    };
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let config_throttle = config.throttle.to_string();
    let server = Server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)), config)
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let addr = server.local_addr()?;
    let endpoint = format!("{scheme}://{addr}");

    outln!("envseal kms serve: a local KMS emulator for development and tests (not for production data)");
    outln!("  endpoint: {endpoint}");
    let apis = match args.api {
        ApiArg::Both => "Alibaba Cloud KMS RPC 2016-01-20 and AWS KMS JSON 1.1",
        ApiArg::Alibaba => "Alibaba Cloud KMS RPC 2016-01-20",
        ApiArg::Aws => "AWS KMS JSON 1.1",
    };
    outln!("  APIs:     {apis}");
    outln!("  backend:  {backend_desc}");
    if let Some(k) = &default_key {
        outln!("  key:      {k} ({})", backend::DEFAULT_KEY);
    }
    if let (Some(path), true) = (&args.iam, governed) {
        outln!("  IAM:      {} (policies enforced, STS AssumeRole on; reloaded when it changes)", path.display());
    }
    if let Some(log) = &args.audit_log {
        outln!("  audit:    {} (fsync {}, fail {})", log.display(), args.audit_fsync, args.audit_on_failure);
    }
    if let Some(dir) = &args.state {
        outln!("  state:    {} (keys, policies, grants and the dev key survive a restart)", dir.display());
    }
    if !args.throttle.is_empty() {
        outln!("  throttle: {}", config_throttle);
    }
    outln!("  health:   {endpoint}/healthz, metrics: {endpoint}/metrics");
    if let Some(ca) = &ca_bundle {
        outln!("  TLS:      CA bundle {} (trust it in clients)", ca.display());
    }
    match &dev {
        Some((id, secret)) => {
            outln!();
            outln!("Dev principal \"dev\": set these in a client's environment:");
            outln!("export ALIBABA_CLOUD_ACCESS_KEY_ID={id}");
            outln!("export ALIBABA_CLOUD_ACCESS_KEY_SECRET={secret}");
            outln!("export AWS_ACCESS_KEY_ID={id}");
            outln!("export AWS_SECRET_ACCESS_KEY={secret}");
            outln!("export AWS_ENDPOINT_URL={endpoint}");
            // AWS_REGION for most SDKs, AWS_DEFAULT_REGION for botocore and the AWS CLI.
            outln!("export AWS_REGION=us-east-1");
            outln!("export AWS_DEFAULT_REGION=us-east-1");
            if let Some(ca) = &ca_bundle {
                // botocore and the AWS CLI, Python requests, Node.js.
                outln!("export AWS_CA_BUNDLE={}", ca.display());
                outln!("export REQUESTS_CA_BUNDLE={}", ca.display());
                outln!("export NODE_EXTRA_CA_CERTS={}", ca.display());
            }
            outln!("Alibaba Cloud SDKs: endpoint {addr}, protocol {scheme}.");
        }
        None => {
            outln!();
            outln!(
                "Access keys from the IAM file. Clients: AWS_ENDPOINT_URL={endpoint}; Alibaba Cloud endpoint {addr} ({scheme})."
            );
        }
    }
    outln!();
    outln!("Ready. Ctrl-C or SIGTERM stops the server.");

    server
        .run(async {
            while !exit::interrupted() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await?;
    drop(tls_tmp);
    eprintln!("envseal kms serve: stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_key_flag_never_echoes_the_secret() {
        assert!(parse_access_key("AK:secret:with:colons").is_ok());
        for bad in ["AKONLY-SECRETVALUE", ":x", "AK:"] {
            let e = parse_access_key(bad).err().unwrap().to_string();
            assert!(!e.contains("SECRETVALUE"), "{e}");
        }
    }
}
