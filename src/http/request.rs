//! A parsed request head and a complete request (head + buffered body).

use std::borrow::Cow;

use super::body::Body;
use super::Version;

/// One request header as the WSGI environ names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The environ key: `CONTENT_LENGTH`, `CONTENT_TYPE`, or `HTTP_` + the name upper-cased with
    /// `-` turned into `_`. Common names are `Cow::Borrowed` statics so no allocation is needed.
    pub key: Cow<'static, str>,
    /// The value with SP/HTAB stripped at both ends; other bytes kept as sent (decoded as latin-1
    /// later). Repeated headers are joined with `", "`.
    pub value: Vec<u8>,
}

/// Everything the WSGI layer needs from the request line and headers.
#[derive(Debug)]
pub struct RequestHead {
    /// The method as sent (an upper-case token).
    pub method: String,
    /// The version the response is written with.
    pub version: Version,
    /// The request-target exactly as sent (`REQUEST_URI`).
    pub request_uri: Vec<u8>,
    /// The percent-decoded path, leading repeated slashes collapsed to one, bytes as decoded
    /// (`PATH_INFO` before url_prefix handling, latin-1 when turned into a str).
    pub path: Vec<u8>,
    /// The raw query string without `?` and without the fragment (`QUERY_STRING`).
    pub query: Vec<u8>,
    /// Headers in the order first seen: duplicates joined, names containing `_` dropped. For a
    /// chunked request `CONTENT_LENGTH` holds the de-chunked length and `HTTP_TRANSFER_ENCODING`
    /// is removed.
    pub headers: Vec<Header>,
    /// The `Connection` header, lower-cased, equals `close` exactly.
    pub connection_close: bool,
    /// The `Connection` header, lower-cased, equals `keep-alive` exactly.
    pub connection_keep_alive: bool,
    /// HTTP/1.1 with `Expect: 100-continue` (case-insensitive).
    pub expect_continue: bool,
    /// The connection must close after this response whatever else the response says
    /// (Transfer-Encoding chunked together with Content-Length on HTTP/1.1).
    pub force_close: bool,
}

/// A complete request: head and the whole body.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub body: Body,
}
