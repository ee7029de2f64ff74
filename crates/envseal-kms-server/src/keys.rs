//! What the emulator keeps per key beside the backend: the key policy and the grants (AWS
//! `PutKeyPolicy` / `CreateGrant`, Alibaba `SetKeyPolicy`). The request hook evaluates them
//! with the identity policies ([`envseal_iam::Iam::authorize_key`]).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use envseal_iam::{Grant, Policy};
use serde::{Deserialize, Serialize};

/// One key's policy and grants.
#[derive(Clone, Debug, Default)]
pub(crate) struct Entry {
    /// `None`: the default policy.
    pub policy: Option<Arc<Policy>>,
    pub grants: Arc<Vec<Grant>>,
}

/// Key policies and grants of every key.
#[derive(Debug, Default)]
pub(crate) struct KeyPolicies {
    inner: RwLock<HashMap<String, Entry>>,
}

/// What `--state` stores of them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    #[serde(default)]
    pub policies: Vec<(String, Policy)>,
    #[serde(default)]
    pub grants: Vec<Grant>,
}

impl KeyPolicies {
    pub(crate) fn get(&self, key_id: &str) -> Entry {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).get(key_id).cloned().unwrap_or_default()
    }

    pub(crate) fn set_policy(&self, key_id: &str, policy: Policy) {
        let mut m = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        m.entry(key_id.to_owned()).or_default().policy = Some(Arc::new(policy));
    }

    /// Adds a grant, unless one of the same key with the same name and parameters exists
    /// (CreateGrant is idempotent so): returns the grant that is in effect.
    pub(crate) fn add_grant(&self, grant: Grant) -> Grant {
        let mut m = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let e = m.entry(grant.key_id.clone()).or_default();
        if !grant.name.is_empty()
            && let Some(same) = e.grants.iter().find(|g| {
                g.name == grant.name
                    && g.grantee_principal == grant.grantee_principal
                    && g.retiring_principal == grant.retiring_principal
                    && g.operations == grant.operations
                    && g.constraints == grant.constraints
            })
        {
            return same.clone();
        }
        let mut grants = (*e.grants).clone();
        grants.push(grant.clone());
        e.grants = Arc::new(grants);
        grant
    }

    /// Removes a grant of `key_id`.
    pub(crate) fn remove_grant(&self, key_id: &str, grant_id: &str) -> Option<Grant> {
        let mut m = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let e = m.get_mut(key_id)?;
        let i = e.grants.iter().position(|g| g.grant_id == grant_id)?;
        let mut grants = (*e.grants).clone();
        let g = grants.remove(i);
        e.grants = Arc::new(grants);
        Some(g)
    }

    /// The grant a token names.
    pub(crate) fn by_token(&self, token: &str) -> Option<Grant> {
        let m = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        m.values().flat_map(|e| e.grants.iter()).find(|g| g.grant_token == token).cloned()
    }

    /// Every grant, of every key.
    pub(crate) fn all_grants(&self) -> Vec<Grant> {
        let m = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Grant> = m.values().flat_map(|e| e.grants.iter().cloned()).collect();
        out.sort_by(|a, b| (a.created, &a.grant_id).cmp(&(b.created, &b.grant_id)));
        out
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let m = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut policies: Vec<(String, Policy)> =
            m.iter().filter_map(|(k, e)| e.policy.as_ref().map(|p| (k.clone(), (**p).clone()))).collect();
        policies.sort_by(|a, b| a.0.cmp(&b.0));
        drop(m);
        Snapshot { policies, grants: self.all_grants() }
    }

    pub(crate) fn restore(&self, s: Snapshot) {
        let mut m = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        m.clear();
        for (k, p) in s.policies {
            m.entry(k).or_default().policy = Some(Arc::new(p));
        }
        for g in s.grants {
            let e = m.entry(g.key_id.clone()).or_default();
            let mut grants = (*e.grants).clone();
            grants.push(g);
            e.grants = Arc::new(grants);
        }
    }
}
