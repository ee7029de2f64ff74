//! KMS fault matrix: throttling, 5xx, timeouts, resets, slow and expiring credentials (issue 8).
