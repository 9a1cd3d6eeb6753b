//! Error responses, byte-identical to Waitress's.

use super::Version;

/// A request that cannot be served: the status code, Waitress's detail text and the version the
/// status line is written with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError {
    pub code: u16,
    pub detail: String,
    pub version: Version,
}
