//! A parsed request head and a complete request (head + buffered body), and the head parser
//! with Waitress's strictness.

use std::borrow::Cow;
use std::collections::HashMap;

use smallvec::SmallVec;

use super::body::Body;
use super::chars::{is_field_value, is_ows, is_tchar};
use super::pystr::{bytes_rstrip, latin1_decode};
use super::{names, uri};
use super::{HttpError, Version};

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

/// A request's headers: on the stack (in the request) for the usual few.
pub type Headers = SmallVec<[Header; 8]>;

/// Everything the WSGI layer needs from the request line and headers.
#[derive(Debug)]
pub struct RequestHead {
    /// The method as sent (an upper-case token), a shared `&'static str` for the common ones
    /// (the table in `http::names`).
    pub method: Cow<'static, str>,
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
    pub headers: Headers,
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

impl RequestHead {
    /// The value of the header with environ key `key` (e.g. `HTTP_HOST`, `CONTENT_TYPE`).
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.key == key).map(|h| h.value.as_slice())
    }
}

/// A complete request: head and the whole body.
#[derive(Debug)]
pub struct Request {
    /// The request line and headers.
    pub head: RequestHead,
    /// The body, de-chunked.
    pub body: Body,
}

/// How the body of a parsed head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes (> 0).
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 only).
    Chunked,
}

fn find_crlf(s: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < s.len() {
        match memchr::memchr(b'\n', &s[i + 1..]) {
            None => return None,
            Some(off) => {
                let lf = i + 1 + off;
                if s[lf - 1] == b'\r' {
                    return Some(lf - 1);
                }
                i = lf;
            }
        }
    }
    None
}

/// Splits on `\r\n` exactly as Python's `bytes.split(b"\r\n")`.
struct CrlfLines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.rest?;
        match find_crlf(s, 0) {
            Some(i) => {
                self.rest = Some(&s[i + 2..]);
                Some(&s[..i])
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

fn lines(s: &[u8]) -> CrlfLines<'_> {
    CrlfLines { rest: Some(s) }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// `^token:OWS field-value OWS$` with field-value made of VCHAR/obs-text separated by SP/HTAB:
/// `(name, value stripped of SP/HTAB)`.
fn match_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = line.iter().take_while(|&&b| is_tchar(b)).count();
    if n == 0 || line.get(n) != Some(&b':') {
        return None;
    }
    let rest = &line[n + 1..];
    if rest.iter().all(|&b| is_field_value(b)) {
        Some((&line[..n], trim_ows(rest)))
    } else {
        None
    }
}

/// The environ key for a header name (a token without `_`).
fn env_key(name: &[u8]) -> Cow<'static, str> {
    let mut buf = [0u8; 32];
    let norm = |b: u8| if b == b'-' { b'_' } else { b.to_ascii_uppercase() };
    if name.len() <= buf.len() {
        for (d, &s) in buf.iter_mut().zip(name) {
            *d = norm(s);
        }
        if let Some(k) = names::header_key(&buf[..name.len()]) {
            return Cow::Borrowed(k);
        }
    }
    let mut key = String::with_capacity(name.len() + 5);
    key.push_str("HTTP_");
    key.extend(name.iter().map(|&b| norm(b) as char));
    Cow::Owned(key)
}

/// Header storage during parsing: a Vec, with a hash index once there are many headers so that
/// a head of thousands of tiny headers stays linear.
struct HeaderSet {
    headers: Headers,
    index: Option<HashMap<String, usize>>,
}

const INDEX_THRESHOLD: usize = 24;

impl HeaderSet {
    fn find(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(map) => map.get(key).copied(),
            None => self.headers.iter().position(|h| h.key == key),
        }
    }

    fn push(&mut self, header: Header) {
        if let Some(map) = &mut self.index {
            map.insert(header.key.to_string(), self.headers.len());
        }
        self.headers.push(header);
        if self.index.is_none() && self.headers.len() > INDEX_THRESHOLD {
            let map = self
                .headers
                .iter()
                .enumerate()
                .map(|(i, h)| (h.key.to_string(), i))
                .collect();
            self.index = Some(map);
        }
    }
}

fn remove_header(headers: &mut Headers, key: &str) -> Option<Vec<u8>> {
    let i = headers.iter().position(|h| h.key == key)?;
    Some(headers.remove(i).value)
}

/// True when `fields` certainly passes [`check_lines`]: every CR is followed by LF and every LF
/// preceded by CR, and the first line is not a continuation line (the common case, checked in
/// one pass).
fn plain_lines(fields: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in fields.iter().enumerate() {
        let bare = if b == b'\r' {
            fields.get(i + 1) != Some(&b'\n')
        } else {
            b == b'\n' && prev != b'\r'
        };
        if bare {
            return false;
        }
        prev = b;
    }
    let mut rest = fields;
    while let [b'\r', b'\n', tail @ ..] = rest {
        rest = tail;
    }
    !matches!(rest.first(), Some(b' ' | b'\t'))
}

/// Waitress's checks of the header lines before any is parsed: a bare CR or LF in a line, a
/// continuation line before any header line.
fn check_lines(fields: &[u8]) -> Result<(), HttpError> {
    let v10 = Version::Http10;
    let mut have_line = false;
    for line in lines(fields) {
        if line.is_empty() {
            continue;
        }
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            let detail = format!("Bare CR or LF found in header line \"{}\"", latin1_decode(line));
            return Err(HttpError::bad_request(detail, v10));
        }
        if is_ows(line[0]) {
            if !have_line {
                let detail = format!("Malformed header line \"{}\"", latin1_decode(line));
                return Err(HttpError::bad_request(detail, v10));
            }
        } else {
            have_line = true;
        }
    }
    Ok(())
}

/// Parses a request head: `block` starts at the request line (leading whitespace already
/// skipped) and ends with the `\r\n\r\n` terminator. Checks run in Waitress's order: bare CR/LF
/// in the request line, header-line splitting, each header field (and duplicates), the request
/// line, the target, Transfer-Encoding (1.1), Content-Length, and the body-size limit.
pub(crate) fn parse_head(block: &[u8], max_body: u64) -> Result<(RequestHead, Framing), HttpError> {
    let v10 = Version::Http10;
    let idx = find_crlf(block, 0).ok_or_else(|| HttpError::bad_request("HTTP message header invalid", v10))?;
    let first_line = bytes_rstrip(&block[..idx]);
    if first_line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(HttpError::bad_request("Bare CR or LF found in HTTP message", v10));
    }
    let fields = &block[idx + 2..];

    // Pass 1 (Waitress's get_header_lines): bare CR/LF and a leading continuation line.
    if !plain_lines(fields) {
        check_lines(fields)?;
    }

    // Pass 2: logical lines (obs-fold joined, leading whitespace kept), matched and stored.
    let mut set = HeaderSet {
        headers: Headers::new(),
        index: None,
    };
    let mut current: Option<Cow<'_, [u8]>> = None;
    for line in lines(fields) {
        if line.is_empty() {
            continue;
        }
        if is_ows(line[0]) {
            if let Some(cur) = &mut current {
                cur.to_mut().extend_from_slice(line);
            }
            continue;
        }
        if let Some(prev) = current.replace(Cow::Borrowed(line)) {
            add_field(&mut set, &prev)?;
        }
    }
    if let Some(prev) = current {
        add_field(&mut set, &prev)?;
    }
    let mut headers = set.headers;

    let (method, target, version_bytes) = crack_request_line(first_line)?;
    let is_11 = version_bytes == Some(b"1.1".as_slice());
    let version = if is_11 { Version::Http11 } else { Version::Http10 };
    let (path, query) = uri::split_target(target).map_err(|_| HttpError::bad_request("Bad URI", version))?;

    let connection = headers
        .iter()
        .find(|h| h.key == "HTTP_CONNECTION")
        .map(|h| h.value.as_slice())
        .unwrap_or(b"");
    let connection_close = connection.eq_ignore_ascii_case(b"close");
    let connection_keep_alive = connection.eq_ignore_ascii_case(b"keep-alive");

    let mut chunked = false;
    let mut expect_continue = false;
    let mut force_close = false;
    if is_11 {
        if let Some(te) = remove_header(&mut headers, "HTTP_TRANSFER_ENCODING") {
            let mut n_chunked = 0usize;
            for coding in te.split(|&b| b == b',').filter(|c| !c.is_empty()) {
                if !trim_ows(coding).eq_ignore_ascii_case(b"chunked") {
                    return Err(HttpError::new(
                        501,
                        "Transfer-Encoding requested is not supported.",
                        version,
                    ));
                }
                n_chunked += 1;
            }
            if n_chunked > 1 {
                return Err(HttpError::new(
                    501,
                    "Transfer-Encoding is invalid. Multiple chunked encodings requested.",
                    version,
                ));
            }
            chunked = n_chunked == 1;
        }
        expect_continue = headers
            .iter()
            .find(|h| h.key == "HTTP_EXPECT")
            .is_some_and(|h| h.value.eq_ignore_ascii_case(b"100-continue"));
    }

    let framing = if chunked {
        if remove_header(&mut headers, "CONTENT_LENGTH").is_some() {
            force_close = true;
        }
        Framing::Chunked
    } else {
        let cl = headers
            .iter()
            .find(|h| h.key == "CONTENT_LENGTH")
            .map(|h| h.value.as_slice())
            .unwrap_or(b"0");
        if cl.is_empty() || !cl.iter().all(u8::is_ascii_digit) {
            return Err(HttpError::bad_request("Content-Length is invalid", version));
        }
        let cl = cl
            .iter()
            .fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0')));
        if cl == 0 {
            Framing::None
        } else if cl >= max_body {
            return Err(HttpError::new(413, format!("exceeds max_body of {max_body}"), version));
        } else {
            Framing::Length(cl)
        }
    };

    let head = RequestHead {
        method: match names::method(method) {
            Some(shared) => Cow::Borrowed(shared),
            None => Cow::Owned(latin1_decode(method)),
        },
        version,
        request_uri: target.to_vec(),
        path,
        query,
        headers,
        connection_close,
        connection_keep_alive,
        expect_continue,
        force_close,
    };
    Ok((head, framing))
}

/// Matches one logical header line and stores it (join, or [main]'s duplicate rejection).
fn add_field(set: &mut HeaderSet, line: &[u8]) -> Result<(), HttpError> {
    let (name, value) = match_field(line).ok_or_else(|| HttpError::bad_request("Invalid header", Version::Http10))?;
    if name.contains(&b'_') {
        return Ok(());
    }
    let key = env_key(name);
    match set.find(&key) {
        Some(i) => {
            if matches!(&*key, "HTTP_HOST" | "CONTENT_LENGTH" | "CONTENT_TYPE") {
                let detail = format!("Duplicate header: {}", latin1_decode(name));
                return Err(HttpError::bad_request(detail, Version::Http10));
            }
            let existing = &mut set.headers[i].value;
            existing.reserve(2 + value.len());
            existing.extend_from_slice(b", ");
            existing.extend_from_slice(value);
        }
        None => set.push(Header {
            key,
            value: value.to_vec(),
        }),
    }
    Ok(())
}

type RequestLine<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);

/// `METHOD SP target [SP HTTP/d.d]` (a full match), then the upper-case method check.
fn crack_request_line(line: &[u8]) -> Result<RequestLine<'_>, HttpError> {
    let invalid = || HttpError::bad_request("Start line is invalid", Version::Http10);
    let m = line.iter().take_while(|&&b| is_tchar(b)).count();
    if m == 0 || line.get(m) != Some(&b' ') {
        return Err(invalid());
    }
    let method = &line[..m];
    let rest = &line[m + 1..];
    let (target, version) = match rest {
        [target @ .., b' ', b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() && !target.is_empty() && !target.contains(&b' ') =>
        {
            (target, Some(&rest[rest.len() - 3..]))
        }
        _ if !rest.is_empty() && !rest.contains(&b' ') => (rest, None),
        _ => return Err(invalid()),
    };
    if method.iter().any(u8::is_ascii_lowercase) {
        let detail = format!("Malformed HTTP method \"{}\"", latin1_decode(method));
        return Err(HttpError::bad_request(detail, Version::Http10));
    }
    Ok((method, target, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_split_matches_python() {
        let got: Vec<&[u8]> = lines(b"a\r\nb\r\r\nc\nd\r\n\r\n").collect();
        assert_eq!(got, vec![&b"a"[..], b"b\r", b"c\nd", b"", b""]);
        let got: Vec<&[u8]> = lines(b"").collect();
        assert_eq!(got, vec![&b""[..]]);
    }

    #[test]
    fn plain_lines_only_when_the_checks_pass() {
        let cases: &[&[u8]] = &[
            b"Host: a\r\n\r\n",
            b"Host: a\r\nX: b\r\n\r\n",
            b"\r\nHost: a\r\n\r\n",
            b" Host: a\r\n\r\n",
            b"\r\n\tHost: a\r\n\r\n",
            b"Host: a\r\n folded\r\n\r\n",
            b"Host: a\rb\r\n\r\n",
            b"Host: a\nb\r\n\r\n",
            b"Host: a\r\r\n\r\n",
            b"Host: a\n\r\n",
            b"Host: a\r",
            b"\r\n\r\n",
            b"",
        ];
        for case in cases {
            let checked = check_lines(case).is_ok();
            if plain_lines(case) {
                assert!(checked, "{:?}", latin1_decode(case));
            }
        }
        // The fast check does not give up on ordinary heads.
        assert!(plain_lines(b"Host: a\r\nX: b\r\n folded\r\n\r\n"));
        assert!(!plain_lines(b"Host: a\nX: b\r\n\r\n"));
        assert!(!plain_lines(b" X: b\r\n\r\n"));
    }

    #[test]
    fn field_matching() {
        assert_eq!(match_field(b"Host: a"), Some((&b"Host"[..], &b"a"[..])));
        assert_eq!(match_field(b"X:"), Some((&b"X"[..], &b""[..])));
        assert_eq!(match_field(b"X: \t a b \t"), Some((&b"X"[..], &b"a b"[..])));
        assert_eq!(match_field(b"X: \xa0v\x85"), Some((&b"X"[..], &b"\xa0v\x85"[..])));
        assert_eq!(match_field(b"Host : a"), None);
        assert_eq!(match_field(b": a"), None);
        assert_eq!(match_field(b"X a"), None);
        assert_eq!(match_field(b"X: a\x01"), None);
        assert_eq!(match_field(b"X: \x7f"), None);
        assert_eq!(match_field(b"X:\x0bbar"), None);
    }

    #[test]
    fn keys() {
        assert!(matches!(env_key(b"host"), Cow::Borrowed("HTTP_HOST")));
        assert!(matches!(env_key(b"Content-Length"), Cow::Borrowed("CONTENT_LENGTH")));
        assert!(matches!(env_key(b"content-type"), Cow::Borrowed("CONTENT_TYPE")));
        assert!(matches!(
            env_key(b"X-Forwarded-For"),
            Cow::Borrowed("HTTP_X_FORWARDED_FOR")
        ));
        assert_eq!(env_key(b"X-Custom-thing"), "HTTP_X_CUSTOM_THING");
        let long = "a".repeat(100);
        assert_eq!(env_key(long.as_bytes()), format!("HTTP_{}", "A".repeat(100)));
    }

    #[test]
    fn request_line() {
        fn ok(l: &[u8]) -> RequestLine<'_> {
            crack_request_line(l).unwrap()
        }
        assert_eq!(ok(b"GET / HTTP/1.1"), (&b"GET"[..], &b"/"[..], Some(&b"1.1"[..])));
        assert_eq!(ok(b"GET /"), (&b"GET"[..], &b"/"[..], None));
        assert_eq!(ok(b"GET HTTP/1.1"), (&b"GET"[..], &b"HTTP/1.1"[..], None));
        assert_eq!(ok(b"GET / HTTP/8.4").2, Some(&b"8.4"[..]));
        for bad in [
            &b"GET / HTTP/1.x"[..],
            b"GET  / HTTP/1.1",
            b"GET /a b HTTP/1.1",
            b"GE\x00 / HTTP/1.1",
            b"GET /info?x RTSP/1.0",
            b"GET",
            b"GET ",
            b" / HTTP/1.1",
            b"GET / HTTP/1.1 x",
        ] {
            assert_eq!(crack_request_line(bad).unwrap_err().detail, "Start line is invalid");
        }
        assert_eq!(
            crack_request_line(b"get / HTTP/1.1").unwrap_err().detail,
            "Malformed HTTP method \"get\""
        );
    }
}
