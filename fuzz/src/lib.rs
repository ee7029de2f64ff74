//! Helpers shared by the fuzz targets: the fixed keys of `testdata/vectors` and a small text
//! form for HTTP requests.

#![forbid(unsafe_code)]

use envseal_core::{DataKey, Engine};

/// Every AEAD engine compiled in (both, in the fuzz build): targets that decrypt compare them.
pub const ENGINES: &[Engine] = Engine::ALL;

/// The container data key of testdata/vectors (`00 01 … 1f`).
pub fn container_key() -> DataKey {
    DataKey::from_bytes(std::array::from_fn(|i| i as u8))
}

/// The field data key of testdata/vectors (`40 41 … 5f`).
pub fn field_key() -> DataKey {
    DataKey::from_bytes(std::array::from_fn(|i| 0x40 + i as u8))
}

/// A request in a text form that seeds and dictionaries can carry:
///
/// ```text
/// METHOD PATH[?QUERY]\n
/// name: value\n      (any number of header lines)
/// \n
/// body
/// ```
#[derive(Debug)]
pub struct TextRequest<'a> {
    /// Method.
    pub method: &'a str,
    /// Path as sent.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: &'a str,
    /// Headers in order.
    pub headers: Vec<(&'a str, &'a str)>,
    /// Body bytes.
    pub body: &'a [u8],
}

impl<'a> TextRequest<'a> {
    /// Splits `data`; `None` when the head is not UTF-8 or has no request line.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &data[data.len()..]),
        };
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split('\n');
        let (method, target) = lines.next()?.split_once(' ')?;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        // At most 64 headers: hyper refuses more by default.
        let headers = lines.take(64).filter_map(|l| l.split_once(':')).map(|(n, v)| (n, v.trim_start())).collect();
        Some(Self { method, path, query, headers, body })
    }

    /// As the kms-server fuzzing entry points take it.
    pub fn as_fuzz(&self) -> envseal_kms_server::fuzzing::FuzzRequest<'_> {
        envseal_kms_server::fuzzing::FuzzRequest {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            body: self.body,
        }
    }
}
