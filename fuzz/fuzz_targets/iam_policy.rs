//! Policy documents and IAM files (docs/IAM.md): parsing never panics; a parsed policy
//! re-serializes to a document that parses again and decides every probe request the same way.
#![no_main]

use envseal_iam::{Flavor, Format, Iam, Policy, Principal, RequestContext, evaluate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Iam::parse(text, Format::Toml);
    let _ = Iam::parse(text, Format::Json);
    let Ok(p) = Policy::parse(text) else { return };
    let again = Policy::parse(&p.to_string()).expect("a valid policy re-parses");
    let iam = Iam::default();
    for action in ["kms:Decrypt", "kms:GenerateDataKey", "sts:AssumeRole", "iam:EnableMFADevice"] {
        for resource in ["*", "acs:kms:cn-hangzhou:1234567890123456:key/k", "arn:aws:kms:us-east-1:1:key/k"] {
            let mut ctx = RequestContext::new(action, resource, iam.principal_info(&Principal::Root, Flavor::Aws));
            ctx.mfa = Some(false);
            ctx.source_ip = "10.0.0.1".parse().ok();
            ctx.encryption_context.insert("stage".into(), "ci".into());
            ctx.resource_tags.insert("team".into(), "web".into());
            let a = evaluate(&[("p", &p)], &ctx);
            let b = evaluate(&[("p", &again)], &ctx);
            assert_eq!((a.allowed, a.kind), (b.allowed, b.kind));
        }
    }
});
