//! One module per command. What several commands share lives outside this folder: options in
//! `opts.rs`, per-file settings in `settings.rs`, opening sealed files in `open.rs`, reader
//! trust in `trust.rs`.

pub mod audit;
pub mod config;
pub mod db;
pub mod decrypt;
pub mod edit;
pub mod encrypt;
pub mod esdk;
pub mod iam;
pub mod import;
pub mod init;
pub mod inspect;
pub mod keys;
pub mod kms;
pub mod rekey;
pub mod rewrap;
pub mod run;
pub mod values;
