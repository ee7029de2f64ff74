//! STS `AssumeRole` in both clouds' request shapes, answered through
//! [`RequestHook::assume_role`](crate::RequestHook::assume_role):
//!
//! - AWS STS Query API (`Action=AssumeRole&Version=2011-06-15`, form body, SigV4 scoped to
//!   service `sts`), answered in XML;
//! - Alibaba Cloud STS RPC API (`Version=2015-04-01`, V3 or V2 signature), answered in JSON.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::{Class, Fault};
use crate::hook::{self, AssumeRoleInput, CallerIdentity, CallerKind, IssuedCredentials, StsRefusal};
use crate::request::{Call, Incoming};
use crate::wire;
use crate::{acs, sigv4};

/// The AWS STS API version served.
pub(crate) const AWS_VERSION: &str = "2011-06-15";
/// The Alibaba Cloud STS API version served.
pub(crate) const ALIBABA_VERSION: &str = "2015-04-01";
/// Longest session policy accepted (bytes of JSON; AWS counts 2048 characters).
const MAX_POLICY: usize = 2048;

fn get<'a>(p: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    p.get(name).map(String::as_str).filter(|s| !s.is_empty())
}

fn input(p: &BTreeMap<String, String>) -> Result<AssumeRoleInput<'_>, Fault> {
    let role_arn = get(p, "RoleArn").ok_or_else(|| Fault::missing("RoleArn"))?;
    let session_name = get(p, "RoleSessionName").ok_or_else(|| Fault::missing("RoleSessionName"))?;
    let duration_seconds = get(p, "DurationSeconds")
        .map(|s| s.parse::<u64>().map_err(|_| Fault::invalid("DurationSeconds must be an integer")))
        .transpose()?;
    let policy = get(p, "Policy");
    if policy.is_some_and(|s| s.len() > MAX_POLICY) {
        return Err(Fault::new(Class::InvalidParameter, format!("the session policy exceeds {MAX_POLICY} bytes"))
            .with_codes((400, "PackedPolicyTooLarge"), (400, "InvalidParameter.PolicySize")));
    }
    Ok(AssumeRoleInput { role_arn, session_name, duration_seconds, policy })
}

/// A refusal in the API's terms: (AWS status, code), (Alibaba status, code).
fn refusal(r: StsRefusal) -> Fault {
    match r {
        StsRefusal::AccessDenied(m) => {
            Fault::new(Class::AccessDenied, m).with_codes((403, "AccessDenied"), (403, "NoPermission"))
        }
        StsRefusal::NoSuchRole(m) => {
            Fault::new(Class::AccessDenied, m).with_codes((403, "AccessDenied"), (404, "EntityNotExist.Role"))
        }
        StsRefusal::InvalidParameter(name, m) => {
            let ali: &'static str = match name {
                "DurationSeconds" => "InvalidParameter.DurationSeconds",
                "RoleSessionName" => "InvalidParameter.RoleSessionName",
                "RoleArn" => "InvalidParameter.RoleArn",
                _ => "InvalidParameter",
            };
            Fault::new(Class::InvalidParameter, m).with_codes((400, "ValidationError"), (400, ali))
        }
        StsRefusal::MalformedPolicy(m) => Fault::new(Class::InvalidParameter, m)
            .with_codes((400, "MalformedPolicyDocument"), (400, "InvalidParameter.PolicyGrammar")),
        StsRefusal::PolicyTooLarge(m) => Fault::new(Class::InvalidParameter, m)
            .with_codes((400, "PackedPolicyTooLarge"), (400, "InvalidParameter.PolicySize")),
        _ => Fault::new(Class::Unsupported, "this emulator issues no temporary credentials: start it with --iam FILE")
            .with_codes((400, "InvalidAction"), (404, "InvalidAction.NotFound")),
    }
}

/// Who the caller is: the hook's answer, else the fixed keys' meaning (the account root, or an
/// assumed role named after the principal for a temporary key of a credentials-only file).
fn identity(call: &Call<'_>, api: crate::hook::Api) -> CallerIdentity {
    let mut info = call.info();
    info.api = api;
    if let Some(id) = call.app.cfg.hook.caller_identity(&info) {
        return id;
    }
    let aws = api == crate::hook::Api::Aws;
    let account = if aws { &call.app.cfg.aws_account } else { &call.app.cfg.alibaba_account };
    if call.security_token {
        let (p, ak) = (&call.principal, &call.access_key_id);
        let arn = if aws {
            format!("arn:aws:sts::{account}:assumed-role/{p}/{ak}")
        } else {
            format!("acs:ram::{account}:assumed-role/{p}/{ak}")
        };
        CallerIdentity::new(arn, format!("{}:{ak}", envseal_iam::role_id(p)), CallerKind::AssumedRole)
    } else {
        let arn = if aws { format!("arn:aws:iam::{account}:root") } else { format!("acs:ram::{account}:root") };
        CallerIdentity::new(arn, account.clone(), CallerKind::Root)
    }
}

fn assume(call: &mut Call<'_>, p: &BTreeMap<String, String>) -> Result<IssuedCredentials, Fault> {
    let input = input(p)?;
    let info = call.info();
    call.app.cfg.hook.assume_role(&info, &input).map_err(refusal)
}

/// AWS STS (Query API): the body is a form, the answer XML.
pub(crate) async fn handle_aws(call: &mut Call<'_>, req: &Incoming) -> Result<Value, Fault> {
    call.xml = true;
    let p = acs::params(req)?;
    call.action = get(&p, "Action").unwrap_or("").to_owned();
    if req.method != "POST" && req.method != "GET" {
        return Err(Fault::new(Class::UnknownAction, "STS requests are POST / (or GET /)"));
    }
    let verified = sigv4::verify(req, &call.app.cfg.credentials, call.app.cfg.max_clock_skew, "sts")?;
    call.principal = verified.key.principal().to_owned();
    call.access_key_id = verified.key.id().to_owned();
    call.signature = "sigv4";
    call.region = verified.region.clone();
    call.security_token = req.header("x-amz-security-token").is_some();
    let values: Vec<(&str, Value)> = p.iter().map(|(k, v)| (k.as_str(), Value::String(v.clone()))).collect();
    call.params = hook::safe_params(values.iter().map(|(k, v)| (*k, v)));
    if get(&p, "Version") != Some(AWS_VERSION) {
        return Err(Fault::new(Class::UnsupportedVersion, format!("this emulator serves STS {AWS_VERSION}"))
            .with_codes((400, "InvalidParameterValue"), (400, "InvalidVersion")));
    }
    match call.action.as_str() {
        "AssumeRole" => {
            let c = assume(call, &p)?;
            let (secret, token) = (call.secrets.text(c.secret), call.secrets.text(c.security_token));
            Ok(Value::String(format!(
                concat!(
                    "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">",
                    "<AssumeRoleResult><Credentials><AccessKeyId>{}</AccessKeyId>",
                    "<SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken>",
                    "<Expiration>{}</Expiration></Credentials><AssumedRoleUser><Arn>{}</Arn>",
                    "<AssumedRoleId>{}</AssumedRoleId></AssumedRoleUser></AssumeRoleResult>",
                    "<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></AssumeRoleResponse>"
                ),
                xml_escape(&c.access_key_id),
                secret,
                token,
                wire::iso8601(c.expiration),
                xml_escape(&c.assumed_role_arn),
                xml_escape(&c.assumed_role_id),
                xml_escape(&call.request_id),
            )))
        }
        "GetCallerIdentity" => {
            let id = identity(call, crate::hook::Api::Aws);
            Ok(Value::String(format!(
                concat!(
                    "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">",
                    "<GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>",
                    "</GetCallerIdentityResult><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>",
                    "</GetCallerIdentityResponse>"
                ),
                xml_escape(&id.arn),
                xml_escape(&id.user_id),
                xml_escape(&call.app.cfg.aws_account),
                xml_escape(&call.request_id),
            )))
        }
        other => Err(Fault::new(Class::UnknownAction, format!("unknown STS action {other:?}"))
            .with_codes((400, "InvalidAction"), (404, "InvalidAction.NotFound"))),
    }
}

/// Alibaba Cloud STS (`Version=2015-04-01`): parameters and signature as for KMS.
pub(crate) async fn handle_alibaba(
    call: &mut Call<'_>,
    req: &Incoming,
    p: &BTreeMap<String, String>,
) -> Result<Value, Fault> {
    let app = call.app;
    let verified = acs::verify(req, p, &app.cfg.credentials, &app.nonces, app.cfg.max_clock_skew)?;
    call.principal = verified.key.principal().to_owned();
    call.access_key_id = verified.key.id().to_owned();
    call.signature = match verified.scheme {
        acs::Scheme::V3 => "acs3",
        acs::Scheme::V2 => "rpc-v2",
    };
    call.region = get(p, "RegionId").unwrap_or(crate::DEFAULT_ALIBABA_REGION).to_owned();
    call.security_token = req.header("x-acs-security-token").is_some() || get(p, "SecurityToken").is_some();
    let values: Vec<(&str, Value)> = p.iter().map(|(k, v)| (k.as_str(), Value::String(v.clone()))).collect();
    call.params = hook::safe_params(values.iter().map(|(k, v)| (*k, v)));
    match call.action.as_str() {
        "AssumeRole" => {
            let c = assume(call, p)?;
            Ok(json!({
                "Credentials": {
                    "AccessKeyId": c.access_key_id,
                    "AccessKeySecret": call.secrets.text(c.secret),
                    "SecurityToken": call.secrets.text(c.security_token),
                    "Expiration": wire::iso8601(c.expiration),
                },
                "AssumedRoleUser": {"Arn": c.assumed_role_arn, "AssumedRoleId": c.assumed_role_id},
            }))
        }
        "GetCallerIdentity" => {
            let id = identity(call, crate::hook::Api::Alibaba);
            let mut out = json!({
                "AccountId": app.cfg.alibaba_account,
                "Arn": id.arn,
                "PrincipalId": id.user_id,
                "IdentityType": match id.kind {
                    CallerKind::Root => "Account",
                    CallerKind::User => "RAMUser",
                    _ => "AssumedRoleUser",
                },
            });
            if let Value::Object(o) = &mut out {
                match id.kind {
                    CallerKind::User => drop(o.insert("UserId".into(), json!(id.user_id))),
                    CallerKind::AssumedRole => {
                        let role = id.user_id.split(':').next().unwrap_or("").to_owned();
                        o.insert("RoleId".into(), json!(role));
                    }
                    _ => {}
                }
            }
            Ok(out)
        }
        other => Err(Fault::new(Class::UnknownAction, format!("unknown STS action {other:?}"))),
    }
}

/// The AWS STS error document.
pub(crate) fn aws_error_xml(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id)
    )
}

/// STS's spelling of a fault met before the action ran (signature, token, ...).
pub(crate) fn aws_code(f: &Fault) -> (u16, &'static str) {
    if let Some(c) = f.aws_override() {
        return c;
    }
    match f.class {
        Class::MissingAuth => (400, "MissingAuthenticationToken"),
        Class::IncompleteSignature => (400, "IncompleteSignature"),
        Class::UnknownAccessKey | Class::InvalidToken => (403, "InvalidClientTokenId"),
        Class::SignatureMismatch | Class::BadTimestamp | Class::NonceReused => (403, "SignatureDoesNotMatch"),
        Class::RequestExpired => (400, "RequestExpired"),
        Class::ExpiredToken => (400, "ExpiredToken"),
        Class::AccessDenied => (403, "AccessDenied"),
        Class::MissingParameter => (400, "MissingParameter"),
        Class::InvalidParameter | Class::UnsupportedVersion | Class::MalformedBody => (400, "ValidationError"),
        Class::PayloadTooLarge => (413, "RequestEntityTooLarge"),
        Class::Throttled => (400, "Throttling"),
        _ => (500, "InternalFailure"),
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
