//! The credential chain (against files in a temporary home) and the ECS RAM role provider
//! (against a metadata service on 127.0.0.1: 100.100.100.200 is never contacted here).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use super::*;
use crate::test_http::{Recorded, Reply, TestServer};

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |name| map.get(name).cloned()
}

fn resolve(pairs: &[(&str, &str)]) -> Result<CredentialSource, KmsError> {
    CredentialSource::from_lookup(&env(pairs))
}

fn static_id(source: &CredentialSource) -> (&str, &str, Option<&str>) {
    match source {
        CredentialSource::Static(c) => {
            (c.access_key_id(), c.access_key_secret().expose_secret(), c.security_token().map(|t| t.expose_secret()))
        }
        other => panic!("expected static credentials, got {other:?}"),
    }
}

fn home() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write(dir: &Path, rel: &str, content: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    p
}

const CLI_CONFIG: &str = r#"{
  "current": "main",
  "profiles": [
    {"name": "main", "mode": "AK", "access_key_id": "LTAIcli", "access_key_secret": "sk-cli-secret"},
    {"name": "sts", "mode": "StsToken", "access_key_id": "STS.cli", "access_key_secret": "sk-sts-secret", "sts_token": "tok-cli-secret"},
    {"name": "ecs", "mode": "EcsRamRole", "ram_role_name": "EcsRole"},
    {"name": "assume", "mode": "RamRoleArn", "access_key_id": "LTAIx", "access_key_secret": "sk-assume-secret", "ram_role_arn": "acs:ram::1:role/r"}
  ]
}"#;

#[test]
fn environment_comes_first() {
    let h = home();
    write(h.path(), ".aliyun/config.json", CLI_CONFIG);
    let hs = h.path().to_str().unwrap();
    let s = resolve(&[
        ("HOME", hs),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "sk-env-secret"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "tok-env-secret"),
    ])
    .unwrap();
    assert_eq!(static_id(&s), ("LTAIenv", "sk-env-secret", Some("tok-env-secret")));
    let text = format!("{s:?} {}", s.describe());
    assert!(!text.contains("sk-env") && !text.contains("tok-env") && text.contains("LTAIenv"), "{text}");
    // Half a pair is a mistake, not a reason to look elsewhere.
    let e = resolve(&[("HOME", hs), ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv")]).unwrap_err();
    assert!(e.to_string().contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET"), "{e}");
    let e = resolve(&[("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "sk-half-secret")]).unwrap_err();
    assert!(!format!("{e:?}").contains("sk-half"));
    // Empty variables count as unset.
    let s =
        resolve(&[("HOME", hs), ("ALIBABA_CLOUD_ACCESS_KEY_ID", ""), ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "")]).unwrap();
    assert_eq!(static_id(&s).0, "LTAIcli");
}

#[test]
fn cli_profiles() {
    let h = home();
    write(h.path(), ".aliyun/config.json", CLI_CONFIG);
    let hs = h.path().to_str().unwrap();
    assert_eq!(static_id(&resolve(&[("HOME", hs)]).unwrap()), ("LTAIcli", "sk-cli-secret", None));
    let s = resolve(&[("HOME", hs), ("ALIBABA_CLOUD_PROFILE", "sts")]).unwrap();
    assert_eq!(static_id(&s), ("STS.cli", "sk-sts-secret", Some("tok-cli-secret")));
    match resolve(&[
        ("HOME", hs),
        ("ALIBABA_CLOUD_PROFILE", "ecs"),
        ("ENVSEAL_ALIBABA_ECS_METADATA_ENDPOINT", "http://127.0.0.1:1"),
    ])
    .unwrap()
    {
        CredentialSource::EcsRamRole(c) => {
            assert_eq!(c.role_name.as_deref(), Some("EcsRole"));
            assert_eq!(c.metadata_endpoint, "http://127.0.0.1:1");
        }
        other => panic!("{other:?}"),
    }
    let e = resolve(&[("HOME", hs), ("ALIBABA_CLOUD_PROFILE", "assume")]).unwrap_err();
    let text = format!("{e}");
    assert!(text.contains("RamRoleArn") && text.contains("not supported") && !text.contains("sk-assume"), "{text}");
    // Disabled: the next source (none here, ECS disabled) is used.
    let e = resolve(&[
        ("HOME", hs),
        ("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true"),
        ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true"),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("no Alibaba Cloud credentials"), "{e}");
    // A profile that is not there: on down the chain, as the SDKs do.
    write(
        h.path(),
        ".alibabacloud/credentials",
        "[nope]\ntype = access_key\naccess_key_id = LTAIini\naccess_key_secret = sk-ini\n",
    );
    let e =
        resolve(&[("HOME", hs), ("ALIBABA_CLOUD_PROFILE", "nope"), ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")]);
    assert_eq!(static_id(&e.unwrap()).0, "LTAIini");
    // Malformed JSON: an error that does not echo the file.
    let h2 = home();
    write(h2.path(), ".aliyun/config.json", "{\"profiles\": [ \"sk-broken-secret\" ");
    let e = resolve(&[("HOME", h2.path().to_str().unwrap())]).unwrap_err();
    assert!(!e.to_string().contains("sk-broken"), "{e}");
}

#[test]
fn credentials_files() {
    let h = home();
    let hs = h.path().to_str().unwrap();
    // The Python SDK's name, when the Go/Java one is absent.
    write(
        h.path(),
        ".alibabacloud/credentials.ini",
        "# comment\n[default]\ntype = access_key # inline comment\naccess_key_id = LTAIpy\naccess_key_secret = sk-py-secret\n",
    );
    assert_eq!(static_id(&resolve(&[("HOME", hs)]).unwrap()), ("LTAIpy", "sk-py-secret", None));
    write(
        h.path(),
        ".alibabacloud/credentials",
        "[default]\ntype = access_key\naccess_key_id = LTAIgo\naccess_key_secret = sk-go-secret\n\n[prod]\ntype = ecs_ram_role\nrole_name = ProdRole\n\n[odd]\ntype = rsa_key_pair\n",
    );
    assert_eq!(static_id(&resolve(&[("HOME", hs)]).unwrap()).0, "LTAIgo");
    match resolve(&[("HOME", hs), ("ALIBABA_CLOUD_PROFILE", "prod"), ("ALIBABA_CLOUD_IMDSV1_DISABLED", "true")])
        .unwrap()
    {
        CredentialSource::EcsRamRole(c) => {
            assert_eq!(c.role_name.as_deref(), Some("ProdRole"));
            assert!(c.disable_imds_v1);
            assert_eq!(c.metadata_endpoint, DEFAULT_METADATA_ENDPOINT);
        }
        other => panic!("{other:?}"),
    }
    let e = resolve(&[("HOME", hs), ("ALIBABA_CLOUD_PROFILE", "odd")]).unwrap_err();
    assert!(e.to_string().contains("rsa_key_pair"), "{e}");
    // An explicit file wins; a missing explicit file is an error.
    let other = write(
        h.path(),
        "elsewhere.ini",
        "[default]\ntype=access_key\naccess_key_id=LTAIexplicit\naccess_key_secret=sk-x\n",
    );
    let s = resolve(&[("HOME", hs), ("ALIBABA_CLOUD_CREDENTIALS_FILE", other.to_str().unwrap())]).unwrap();
    assert_eq!(static_id(&s).0, "LTAIexplicit");
    let e = resolve(&[("HOME", hs), ("ALIBABA_CLOUD_CREDENTIALS_FILE", "/nonexistent/envseal/creds")]).unwrap_err();
    assert!(e.to_string().contains("ALIBABA_CLOUD_CREDENTIALS_FILE"), "{e}");
    // Missing secret.
    write(h.path(), "broken.ini", "[default]\ntype=access_key\naccess_key_id=LTAIb\n");
    let broken = h.path().join("broken.ini");
    assert!(resolve(&[("ALIBABA_CLOUD_CREDENTIALS_FILE", broken.to_str().unwrap())]).is_err());
}

#[test]
fn ecs_role_is_the_last_resort() {
    match resolve(&[]).unwrap() {
        CredentialSource::EcsRamRole(c) => {
            assert_eq!(c, EcsRamRoleConfig::default());
            assert_eq!(c.metadata_endpoint, "http://100.100.100.200");
        }
        other => panic!("{other:?}"),
    }
    match resolve(&[("ALIBABA_CLOUD_ECS_METADATA", "MyRole")]).unwrap() {
        CredentialSource::EcsRamRole(c) => assert_eq!(c.role_name.as_deref(), Some("MyRole")),
        other => panic!("{other:?}"),
    }
    assert!(resolve(&[("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "TRUE")]).is_err());
}

#[test]
fn ini_parser() {
    let text = "[a]\nk = 1\n[b]\n; c\nK : 2 # x\nempty =\n[a]\nk = late\n";
    let b = ini_section(text, "b").unwrap();
    assert_eq!(b.get("k").map(|v| v.as_str()), Some("2"));
    assert_eq!(b.get("empty").map(|v| v.as_str()), Some(""));
    assert!(ini_section(text, "c").is_none());
}

#[test]
fn refresh_at_80_percent() {
    let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(refresh_time(t0, t0 + Duration::from_secs(3600)), t0 + Duration::from_secs(2880));
    assert_eq!(refresh_time(t0, t0 - Duration::from_secs(1)), t0);
    let c = Cached {
        credentials: Arc::new(Credentials::new("a", AccessKeySecret::new("b"))),
        refresh_at: t0 + Duration::from_secs(2880),
        expiration: t0 + Duration::from_secs(3600),
    };
    assert!(still_usable(&c, t0 + Duration::from_secs(3500)));
    assert!(!still_usable(&c, t0 + Duration::from_secs(3545)));
}

fn role_json(id: &str, lifetime: Duration) -> String {
    serde_json::json!({
        "AccessKeyId": id, "AccessKeySecret": format!("sk-{id}-secret"), "SecurityToken": format!("tok-{id}-secret"),
        "Expiration": crate::time::format_utc(shifted_now() + lifetime),
        "LastUpdated": crate::time::format_utc(SystemTime::now()), "Code": "Success"
    })
    .to_string()
}

/// A metadata service: hardened-mode tokens (unless `v1_only`), role `EcsRole`, credentials
/// numbered by fetch, failing once `broken` is set.
async fn metadata_server(v1_only: bool, lifetime: Duration, broken: Arc<std::sync::atomic::AtomicBool>) -> TestServer {
    let fetches = Arc::new(AtomicU64::new(0));
    TestServer::start(move |r: &Recorded| {
        if broken.load(Ordering::SeqCst) {
            return Reply::json(500, "oops");
        }
        let token_ok = r.header("x-aliyun-ecs-metadata-token") == Some("mdtoken-1");
        match (r.method.as_str(), r.path()) {
            ("PUT", "/latest/api/token") if !v1_only => {
                assert_eq!(r.header("x-aliyun-ecs-metadata-token-ttl-seconds"), Some("21600"));
                Reply::json(200, "mdtoken-1")
            }
            ("PUT", _) => Reply::json(403, "forbidden"),
            ("GET", "/latest/meta-data/ram/security-credentials/") if token_ok || v1_only => {
                Reply::json(200, "EcsRole\n")
            }
            ("GET", "/latest/meta-data/ram/security-credentials/EcsRole") if token_ok || v1_only => {
                let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                Reply::json(200, role_json(&format!("STS.role{n}"), lifetime))
            }
            _ => Reply::json(404, "not found"),
        }
    })
    .await
}

static CLOCK_OFFSET: AtomicU64 = AtomicU64::new(0);

fn shifted_now() -> SystemTime {
    SystemTime::now() + Duration::from_secs(CLOCK_OFFSET.load(Ordering::SeqCst))
}

#[tokio::test]
async fn ecs_role_hardened_mode_cache_and_refresh() {
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = metadata_server(false, Duration::from_secs(1000), broken.clone()).await;
    let config = EcsRamRoleConfig::default().with_metadata_endpoint(server.url());
    let provider = EcsProvider::new(config).unwrap().with_clock(shifted_now);
    let c = provider.credentials().await.unwrap();
    assert_eq!(c.access_key_id(), "STS.role1");
    assert_eq!(c.access_key_secret().expose_secret(), "sk-STS.role1-secret");
    assert_eq!(c.security_token().unwrap().expose_secret(), "tok-STS.role1-secret");
    assert!(c.expiration().is_some());
    let requests = server.requests();
    let shape: Vec<(&str, &str)> = requests.iter().map(|r| (r.method.as_str(), r.path())).collect();
    assert_eq!(
        shape,
        [
            ("PUT", "/latest/api/token"),
            ("GET", "/latest/meta-data/ram/security-credentials/"),
            ("GET", "/latest/meta-data/ram/security-credentials/EcsRole"),
        ]
    );
    assert!(requests[1..].iter().all(|r| r.header("x-aliyun-ecs-metadata-token") == Some("mdtoken-1")));

    // Cached until 80% of the lifetime.
    CLOCK_OFFSET.store(700, Ordering::SeqCst);
    assert_eq!(provider.credentials().await.unwrap().access_key_id(), "STS.role1");
    assert_eq!(server.requests().len(), 3);
    CLOCK_OFFSET.store(810, Ordering::SeqCst);
    assert_eq!(provider.credentials().await.unwrap().access_key_id(), "STS.role2");
    // The role name is remembered: a token and the credentials only.
    assert_eq!(server.requests().len(), 5);

    // A failed refresh keeps credentials that are still valid ...
    broken.store(true, Ordering::SeqCst);
    CLOCK_OFFSET.store(810 + 810, Ordering::SeqCst);
    assert_eq!(provider.credentials().await.unwrap().access_key_id(), "STS.role2");
    // ... but not close to their expiry.
    CLOCK_OFFSET.store(810 + 990, Ordering::SeqCst);
    let e = provider.credentials().await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains("sk-STS") && !text.contains("tok-STS"), "{text}");
    CLOCK_OFFSET.store(0, Ordering::SeqCst);
}

#[tokio::test]
async fn ecs_role_plain_mode_fallback_and_refusal() {
    let ok = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = metadata_server(true, Duration::from_secs(3600), ok).await;
    let config = EcsRamRoleConfig::default().with_metadata_endpoint(server.url()).with_role_name("EcsRole");
    let provider = EcsProvider::new(config.clone()).unwrap();
    assert_eq!(provider.credentials().await.unwrap().access_key_id(), "STS.role1");
    assert!(server.requests().iter().all(|r| r.header("x-aliyun-ecs-metadata-token").is_none()));
    // With IMDSv1 disabled, no token means no credentials.
    let strict = EcsProvider::new(EcsRamRoleConfig { disable_imds_v1: true, ..config }).unwrap();
    let e = strict.credentials().await.unwrap_err();
    assert!(e.to_string().contains("hardened-mode"), "{e}");
}

#[tokio::test]
async fn ecs_role_failures() {
    let bad = TestServer::start(|r: &Recorded| match r.method.as_str() {
        "PUT" => Reply::json(200, "t"),
        _ => Reply::json(200, r#"{"Code":"Failure","AccessKeyId":"STS.x","AccessKeySecret":"sk-fail-secret"}"#),
    })
    .await;
    let p =
        EcsProvider::new(EcsRamRoleConfig::default().with_metadata_endpoint(bad.url()).with_role_name("R")).unwrap();
    let e = p.credentials().await.unwrap_err();
    assert!(matches!(e, KmsError::AccessDenied { .. }) && !format!("{e:?}").contains("sk-fail"), "{e:?}");

    // Nothing listening: unavailable, with a hint, quickly.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = EcsProvider::new(EcsRamRoleConfig::default().with_metadata_endpoint(format!("http://127.0.0.1:{port}")))
        .unwrap();
    let e = p.credentials().await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { .. }) && e.to_string().contains("not on ECS"), "{e}");

    for bad in ["ftp://x", "not a url", "http://h/?q=1"] {
        assert!(EcsProvider::new(EcsRamRoleConfig::default().with_metadata_endpoint(bad)).is_err(), "{bad}");
    }
    assert!(EcsProvider::new(EcsRamRoleConfig::default().with_role_name("../etc")).is_err());
}
