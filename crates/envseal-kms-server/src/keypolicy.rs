//! Key policies as the two APIs set them (AWS `PutKeyPolicy`, `CreateKey` `Policy`; Alibaba
//! `SetKeyPolicy`): validation and the lockout safety check.

use envseal_iam::Policy;

use crate::error::{Class, Fault};
use crate::request::Call;

/// Largest key policy (AWS: 32 KiB).
const MAX_KEY_POLICY: usize = 32 * 1024;

/// Parses a key policy: a valid policy document whose every statement names a `Principal`.
///
/// # Errors
/// `MalformedPolicyDocumentException` / `InvalidParameter.Policy` with the parser's message.
pub(crate) fn parse(text: &str) -> Result<Policy, Fault> {
    if text.len() > MAX_KEY_POLICY {
        return Err(Fault::new(Class::MalformedPolicy, format!("the key policy exceeds {MAX_KEY_POLICY} bytes")));
    }
    let p = Policy::parse(text)
        .map_err(|e| Fault::new(Class::MalformedPolicy, format!("the key policy is invalid: {e}")))?;
    if !envseal_iam::every_statement_has_principal(&p) {
        return Err(Fault::new(Class::MalformedPolicy, "every statement of a key policy needs a Principal"));
    }
    Ok(p)
}

/// AWS's lockout safety check: the caller must still be allowed to change the key policy
/// under the new one (unless `bypass`, `BypassPolicyLockoutSafetyCheck`).
///
/// # Errors
/// `MalformedPolicyDocumentException` when the new policy would lock the caller out.
pub(crate) fn check_lockout(call: &Call<'_>, key_id: &str, policy: &Policy, bypass: bool) -> Result<(), Fault> {
    if bypass {
        return Ok(());
    }
    let mut info = call.info();
    info.resource = Some(key_id);
    info.key_policy = Some(policy);
    let entry = call.app.keys.get(key_id);
    info.grants = &entry.grants;
    call.app.cfg.hook.authorize(&info).map_err(|_| {
        Fault::new(
            Class::MalformedPolicy,
            format!(
                "The new key policy will not allow you to update the key policy in the future ({} would be refused).",
                call.action
            ),
        )
    })
}
