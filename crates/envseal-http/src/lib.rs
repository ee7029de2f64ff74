#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod retry;
pub mod secret;
pub mod transport;

pub use crate::retry::{ApiFailure, Failure, Idempotence, send_with_retries};
pub use crate::transport::{HttpTransport, Method, Request, Response, Transport, TransportError};
