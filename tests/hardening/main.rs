//! Bad-input matrix and SIGKILL crash-safety tests over the CLI (issue 8).
//!
//! `matrix`: one table of bad inputs (empty, non-UTF-8, newer versions, truncation at every
//! structural boundary, huge length fields, directories, FIFOs, unreadable and unwritable paths,
//! a full disk, symlinks out of the directory, keystore problems), each checked for its exit
//! code, error phrase, hint line, an untouched input and no stray temp file.
//!
//! `crash`: `encrypt`, `set`, `edit` and `rewrap` killed with SIGKILL at random moments (seed
//! printed, `HARDENING_SEED` replays it); every file is the old or a valid new version, no
//! plaintext temp file survives, and the next run succeeds.

mod crash;
mod matrix;
mod util;
