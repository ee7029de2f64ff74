//! Cross-crate test helpers (tests live in `tests/tests/`).
