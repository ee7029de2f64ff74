//! `envseal iam ...`: check and change an IAM file (users, groups, roles, policies) and simulate
//! a request against it (docs/IAM.md).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use envseal_audit::Event;
use envseal_iam::{Flavor, Iam, Policy, Principal, RequestContext};
use serde_json::json;

use crate::exit;
use crate::governance;

/// `envseal iam ...`.
#[derive(Subcommand, Debug)]
pub enum IamCmd {
    /// Check an IAM file: syntax, references, every policy document.
    #[command(after_help = "Examples:\n  envseal iam validate iam.toml\n  envseal iam validate iam.json --json")]
    Validate {
        /// The IAM file (.toml or .json).
        file: PathBuf,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Add a user.
    #[command(
        after_help = "Examples:\n  envseal iam create-user iam.toml alice --group developers\n  envseal iam create-user iam.toml ops --mfa"
    )]
    CreateUser {
        /// The IAM file.
        file: PathBuf,
        /// User name.
        name: String,
        /// Group to put the user in (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// The user authenticates with MFA.
        #[arg(long)]
        mfa: bool,
        #[command(flatten)]
        audit: AuditOpts,
    },
    /// Remove a user and its access keys.
    DeleteUser {
        /// The IAM file.
        file: PathBuf,
        /// User name.
        name: String,
        #[command(flatten)]
        audit: AuditOpts,
    },
    /// Create an access key for a user; the secret is printed once, here, and never again.
    #[command(
        after_help = "Examples:\n  envseal iam create-access-key iam.toml alice\n  envseal iam create-access-key iam.toml ci --json > ci-key.json"
    )]
    CreateAccessKey {
        /// The IAM file.
        file: PathBuf,
        /// User name.
        user: String,
        /// Print {\"AccessKeyId\", \"AccessKeySecret\"} as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        audit: AuditOpts,
    },
    /// Activate or deactivate an access key.
    UpdateAccessKey {
        /// The IAM file.
        file: PathBuf,
        /// Access key id.
        id: String,
        /// New status.
        #[arg(long, value_enum)]
        status: StatusArg,
        #[command(flatten)]
        audit: AuditOpts,
    },
    /// Delete an access key.
    DeleteAccessKey {
        /// The IAM file.
        file: PathBuf,
        /// Access key id.
        id: String,
        #[command(flatten)]
        audit: AuditOpts,
    },
    /// Add or replace a managed policy from a JSON document (`-` for stdin).
    PutPolicy {
        /// The IAM file.
        file: PathBuf,
        /// Policy name.
        name: String,
        /// The policy document (JSON).
        document: PathBuf,
        #[command(flatten)]
        audit: AuditOpts,
    },
    /// Attach a managed policy to a user, group or role.
    AttachPolicy {
        /// The IAM file.
        file: PathBuf,
        /// Policy name.
        policy: String,
        #[command(flatten)]
        target: TargetOpts,
        #[command(flatten)]
        audit: AuditOpts,
    },
    /// Detach a managed policy from a user, group or role.
    DetachPolicy {
        /// The IAM file.
        file: PathBuf,
        /// Policy name.
        policy: String,
        #[command(flatten)]
        target: TargetOpts,
        #[command(flatten)]
        audit: AuditOpts,
    },
    /// Evaluate one request against the file's policies: allow or deny, and the statement that
    /// decided.
    #[command(after_help = "\
Examples:
  envseal iam simulate iam.toml --principal user/alice --action kms:Decrypt \\
      --resource acs:kms:cn-hangzhou:1234567890123456:key/KEYID --context app=web
  envseal iam simulate iam.toml --principal role/ci --action kms:GenerateDataKey --resource '*' --json
  envseal iam simulate iam.toml --principal user/ops --action kms:Decrypt --resource '*' --mfa --source-ip 10.0.0.7

Exit status: 0 when allowed, 11 when denied.")]
    Simulate(SimulateArgs),
}

/// Access key status.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum StatusArg {
    /// Usable.
    Active,
    /// Refused until activated again.
    Inactive,
}

/// What a policy is attached to.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct TargetOpts {
    /// A user.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// A group.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// A role.
    #[arg(long, value_name = "NAME")]
    role: Option<String>,
}

/// Where IAM changes are recorded.
#[derive(Args, Debug)]
pub struct AuditOpts {
    /// Append a record of the change to this audit log.
    #[arg(long, value_name = "FILE", env = "ENVSEAL_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// The audit key for checkpoints (created if missing; default $XDG_DATA_HOME/envseal/audit.key).
    #[arg(long, value_name = "FILE", env = "ENVSEAL_AUDIT_KEY")]
    audit_key: Option<PathBuf>,
}

/// Options of `envseal iam simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// The IAM file.
    file: PathBuf,
    /// `user/NAME`, `role/NAME[/SESSION]`, `root`, or an access key id.
    #[arg(long, value_name = "P")]
    principal: String,
    /// The action, e.g. `kms:Decrypt`.
    #[arg(long)]
    action: String,
    /// The resource ARN, or `*`.
    #[arg(long, default_value = "*")]
    resource: String,
    /// Encryption context entry (repeatable).
    #[arg(long = "context", value_name = "K=V", value_parser = crate::opts::parse_kv)]
    context: Vec<(String, String)>,
    /// Tag of the resource (repeatable), for attribute-based policies.
    #[arg(long = "resource-tag", value_name = "K=V", value_parser = crate::opts::parse_kv)]
    resource_tags: Vec<(String, String)>,
    /// The request was authenticated with MFA.
    #[arg(long)]
    mfa: bool,
    /// The client's address.
    #[arg(long, value_name = "IP")]
    source_ip: Option<IpAddr>,
    /// The time of the request (RFC 3339; default now).
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// A session policy (JSON file) narrowing a role session.
    #[arg(long, value_name = "FILE")]
    session_policy: Option<PathBuf>,
    /// Which cloud's ARNs principals get (`acs:ram::` or `arn:aws:iam::`).
    #[arg(long, value_enum, default_value_t = FlavorArg::Alibaba)]
    flavor: FlavorArg,
    /// Print the decision as JSON.
    #[arg(long)]
    json: bool,
}

/// ARN spelling.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FlavorArg {
    /// `acs:` ARNs and keys.
    Alibaba,
    /// `arn:aws:` ARNs and keys.
    Aws,
}

impl From<FlavorArg> for Flavor {
    fn from(f: FlavorArg) -> Self {
        match f {
            FlavorArg::Alibaba => Flavor::Alibaba,
            FlavorArg::Aws => Flavor::Aws,
        }
    }
}

fn load(file: &Path) -> Result<Iam> {
    Iam::load(file).map_err(|e| {
        exit::fail(
            exit::Exit::BadInput,
            format!("{}: {e}", file.display()),
            Some("see docs/IAM.md for the file format"),
        )
    })
}

fn save(iam: &Iam, file: &Path) -> Result<()> {
    iam.save(file).with_context(|| format!("cannot write {}", file.display()))
}

/// Records an IAM change when an audit log is configured.
fn record(opts: &AuditOpts, event: &str, target: &str) -> Result<()> {
    let Some(path) = &opts.audit_log else { return Ok(()) };
    let log = governance::open_audit_log(path, opts.audit_key.as_deref())?;
    let ev = Event::new(event, "iam").principal_local(&governance::os_user()).param("target", target).succeeded();
    log.append(ev)
        .map_err(|e| exit::fail(exit::Exit::Io, format!("cannot write the audit log {}: {e}", path.display()), None))?;
    Ok(())
}

/// Runs `envseal iam ...`.
pub fn run(cmd: IamCmd) -> Result<ExitCode> {
    match cmd {
        IamCmd::Validate { file, json } => {
            let iam = load(&file)?;
            let s = iam.summary();
            if json {
                outln!("{}", serde_json::to_string_pretty(&json!({"valid": true, "summary": s}))?);
            } else {
                outln!("{}: valid ({s})", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        IamCmd::CreateUser { file, name, groups, mfa, audit } => {
            let mut iam = load(&file)?;
            iam.create_user(&name, &groups).map_err(|e| exit::fail(exit::Exit::BadInput, e.to_string(), None))?;
            if mfa {
                iam.set_user_mfa(&name, true).map_err(|e| exit::fail(exit::Exit::BadInput, e.to_string(), None))?;
            }
            save(&iam, &file)?;
            record(&audit, "CreateUser", &name)?;
            eprintln!("envseal: user {name} created in {}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        IamCmd::DeleteUser { file, name, audit } => {
            let mut iam = load(&file)?;
            iam.delete_user(&name).map_err(|e| exit::fail(exit::Exit::BadInput, e.to_string(), None))?;
            save(&iam, &file)?;
            record(&audit, "DeleteUser", &name)?;
            eprintln!("envseal: user {name} deleted");
            Ok(ExitCode::SUCCESS)
        }
        IamCmd::CreateAccessKey { file, user, json, audit } => {
            let mut iam = load(&file)?;
            let k = iam.create_access_key(&user).map_err(|e| exit::fail(exit::Exit::BadInput, e.to_string(), None))?;
            save(&iam, &file)?;
            record(&audit, "CreateAccessKey", &format!("{user}/{}", k.id))?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"UserName": user, "AccessKeyId": k.id, "AccessKeySecret": k.secret.as_str()})
                    )?
                );
            } else {
                outln!("AccessKeyId:     {}", k.id);
                outln!("AccessKeySecret: {}", k.secret.as_str());
            }
            eprintln!(
                "envseal: the secret is shown this once; store it now (it stays in {} for the server)",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        IamCmd::UpdateAccessKey { file, id, status, audit } => {
            let mut iam = load(&file)?;
            iam.set_access_key_status(&id, matches!(status, StatusArg::Active))
                .map_err(|e| exit::fail(exit::Exit::BadInput, e.to_string(), None))?;
            save(&iam, &file)?;
            record(&audit, "UpdateAccessKey", &id)?;
            Ok(ExitCode::SUCCESS)
        }
        IamCmd::DeleteAccessKey { file, id, audit } => {
            let mut iam = load(&file)?;
            iam.delete_access_key(&id).map_err(|e| exit::fail(exit::Exit::BadInput, e.to_string(), None))?;
            save(&iam, &file)?;
            record(&audit, "DeleteAccessKey", &id)?;
            Ok(ExitCode::SUCCESS)
        }
        IamCmd::PutPolicy { file, name, document, audit } => {
            let mut iam = load(&file)?;
            let text = crate::fsio::read_text(&document)?;
            let policy = Policy::parse(&text)
                .map_err(|e| exit::fail(exit::Exit::BadInput, format!("{}: {e}", document.display()), None))?;
            iam.put_policy(&name, policy).map_err(|e| exit::fail(exit::Exit::BadInput, e.to_string(), None))?;
            save(&iam, &file)?;
            record(&audit, "PutPolicy", &name)?;
            Ok(ExitCode::SUCCESS)
        }
        IamCmd::AttachPolicy { file, policy, target, audit } => {
            let mut iam = load(&file)?;
            let (t, label) = target.resolve();
            iam.attach_policy(&t, &policy).map_err(|e| exit::fail(exit::Exit::BadInput, e.to_string(), None))?;
            save(&iam, &file)?;
            record(&audit, "AttachPolicy", &format!("{label}:{policy}"))?;
            Ok(ExitCode::SUCCESS)
        }
        IamCmd::DetachPolicy { file, policy, target, audit } => {
            let mut iam = load(&file)?;
            let (t, label) = target.resolve();
            iam.detach_policy(&t, &policy).map_err(|e| exit::fail(exit::Exit::BadInput, e.to_string(), None))?;
            save(&iam, &file)?;
            record(&audit, "DetachPolicy", &format!("{label}:{policy}"))?;
            Ok(ExitCode::SUCCESS)
        }
        IamCmd::Simulate(a) => simulate(a),
    }
}

fn simulate(a: SimulateArgs) -> Result<ExitCode> {
    let iam = load(&a.file)?;
    let flavor: Flavor = a.flavor.into();
    let session_policy = match &a.session_policy {
        Some(p) => {
            let text = crate::fsio::read_text(p)?;
            Some(
                Policy::parse(&text)
                    .map_err(|e| exit::fail(exit::Exit::BadInput, format!("{}: {e}", p.display()), None))?,
            )
        }
        None => None,
    };
    let who = iam.parse_principal(&a.principal, session_policy, a.mfa).map_err(|e| {
        exit::fail(
            exit::Exit::Usage,
            format!("--principal: {e}"),
            Some("user/NAME, role/NAME[/SESSION], root or an access key id"),
        )
    })?;
    let now = match &a.time {
        Some(t) => {
            humantime::parse_rfc3339_weak(t).map_err(|e| exit::fail(exit::Exit::Usage, format!("--time: {e}"), None))?
        }
        None => SystemTime::now(),
    };
    let mut ctx = RequestContext::new(&a.action, &a.resource, iam.principal_info(&who, flavor));
    ctx.mfa = Some(a.mfa);
    ctx.source_ip = a.source_ip;
    ctx.current_time = now;
    ctx.encryption_context = a.context.iter().cloned().collect::<BTreeMap<_, _>>();
    ctx.resource_tags = a.resource_tags.iter().cloned().collect::<BTreeMap<_, _>>();
    let d = iam.authorize(&who, &ctx);
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        outln!("{}: {d}", if d.allowed { "ALLOW" } else { "DENY" });
    }
    Ok(if d.allowed { ExitCode::SUCCESS } else { crate::exit::Exit::Denied.status() })
}

impl TargetOpts {
    fn resolve(&self) -> (envseal_iam::Target, String) {
        match (&self.user, &self.group, &self.role) {
            (Some(u), _, _) => (envseal_iam::Target::User(u.clone()), format!("user/{u}")),
            (_, Some(g), _) => (envseal_iam::Target::Group(g.clone()), format!("group/{g}")),
            (_, _, Some(r)) => (envseal_iam::Target::Role(r.clone()), format!("role/{r}")),
            _ => unreachable!("clap requires one of --user, --group, --role"),
        }
    }
}

#[allow(dead_code)]
fn _principal_kinds(p: &Principal) -> &'static str {
    match p {
        Principal::Root => "root",
        _ => "other",
    }
}
