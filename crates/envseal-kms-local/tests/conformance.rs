//! The backend conformance suite (envseal-testkit), run against a fresh local keystore.

use std::sync::Arc;

use envseal_core::Kms;
use envseal_kms_local::{LocalKms, Unlock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let tmp = tempfile::tempdir().unwrap();
    // A fresh subdirectory: created 0700 by the keystore (the temp dir itself may be 0755).
    let dir = tmp.path().join("envseal");
    let kms: Arc<dyn Kms> = Arc::new(LocalKms::open_or_create(&dir, Unlock::master_key_file()).unwrap());
    envseal_testkit::run_conformance(kms.clone(), "alias/default").await;
    envseal_testkit::run_key_management_conformance(kms).await;
}
