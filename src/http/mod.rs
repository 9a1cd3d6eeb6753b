//! Sans-IO HTTP/1.x: request parsing with Waitress's strictness, body decoders, error responses.
//!
//! Nothing in this module touches a socket or Python. The event loop feeds bytes to a
//! [`reader::RequestReader`] and gets back complete requests or an error to answer with.
//!
//! Layout (each module uses only those above it, and `error`/this file's types):
//! - `chars`: the byte classes of the HTTP grammar (`tchar`, field-value bytes, quoted-string);
//! - `pystr`: Python's `bytes`/`str` semantics that Waitress's parsing rests on;
//! - `names`: the tables of common methods and header names (shared with the WSGI environ);
//! - [`uri`]: the request-target split into path and query;
//! - [`body`]: body buffering (memory, then a temporary file) and the chunked decoder;
//! - [`request`]: the parsed head and the head parser;
//! - [`reader`]: the streaming reader (head, then body, with the limits);
//! - [`proxy`]: trusted `Forwarded`/`X-Forwarded-*` headers;
//! - [`error`], [`response`], [`date`]: error responses, response heads, the `Date` value.

pub mod body;
mod chars;
pub mod date;
pub mod error;
pub(crate) mod names;
pub mod proxy;
mod pystr;
pub mod reader;
pub mod request;
pub mod response;
pub mod uri;

pub use body::Body;
pub use date::{http_date, HttpDate};
pub use error::{error_response, reason_phrase, HttpError};
pub use reader::{Event, RequestReader};
pub use request::{Header, Headers, Request, RequestHead};

/// The protocol version a request is answered with. Waitress answers every version other than
/// exactly `HTTP/1.1` (including a missing one and `HTTP/8.4`) as HTTP/1.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
}

impl Version {
    /// `"HTTP/1.0"` or `"HTTP/1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// The limits a [`RequestReader`] enforces, from the Waitress adjustments of the same names.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Request line + headers reaching this many bytes without a terminator → 431.
    pub max_request_header_size: usize,
    /// Content-Length `>=` this → 413; chunked: raw consumed body bytes (framing included) `>=` this → 413.
    pub max_request_body_size: u64,
    /// Request bodies larger than this are kept in an anonymous temporary file instead of memory.
    pub inbuf_overflow: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_size: 262_144,
            max_request_body_size: 1_073_741_824,
            inbuf_overflow: 524_288,
        }
    }
}
