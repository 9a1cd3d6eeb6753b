//! Response heads by Waitress's rules: header-name casing, sorting, Content-Length, keep-alive or
//! close, chunking, Server/Via and Date.

use std::borrow::Cow;

use smallvec::SmallVec;

use super::error::decimal;
use super::pystr::latin1_encode_into;
use super::Version;

/// What a response head is made from.
#[derive(Debug, Clone)]
pub struct HeadSpec<'a> {
    /// The request's version, which the response is written with.
    pub version: Version,
    /// The status line after the version, e.g. `200 OK` (as the app gave it).
    pub status: &'a str,
    /// The app's headers, validated (no CR/LF, no hop-by-hop), names as the app wrote them.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body length when known (the app's Content-Length, or inferred from a one-item app_iter).
    pub content_length: Option<u64>,
    /// The request said `Connection: close` (lower-cased, exact).
    pub request_close: bool,
    /// The request said `Connection: keep-alive` (lower-cased, exact).
    pub request_keep_alive: bool,
    /// The connection closes after this response whatever the request asked: TE + CL on an
    /// HTTP/1.1 request, or an app whose body is known to fall short of its Content-Length before
    /// the head goes out.
    pub force_close: bool,
    /// The `Server` header value; None leaves it out.
    pub ident: Option<&'a str>,
    /// The `Date` header value, unless the app set one.
    pub date: &'a str,
}

/// A serialised head and what it decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The head: status line, fields and the blank line.
    pub bytes: Vec<u8>,
    /// The body goes out with chunked framing.
    pub chunked: bool,
    /// The connection closes after this response.
    pub close: bool,
}

/// A header or status has a character outside latin-1 (Python raises UnicodeEncodeError).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLatin1(pub char);

/// 1xx, 204 and 304 responses carry no body.
pub fn status_has_body(status: &str) -> bool {
    !(status.starts_with('1') || status.starts_with("204") || status.starts_with("304"))
}

/// `x-api-KEY` → `X-Api-Key`: Python's `str.capitalize` on each dash-separated part (borrowed
/// when the name is already written so, as most are).
pub fn capitalize_name(name: &str) -> Cow<'_, str> {
    // Each byte as capitalize() leaves it: not lower-case at the start of a part, not upper-case
    // elsewhere (ASCII only; anything else takes the general path).
    let mut part_start = true;
    let capitalized = name.bytes().all(|b| {
        let ok = b.is_ascii()
            && if part_start {
                !b.is_ascii_lowercase()
            } else {
                !b.is_ascii_uppercase()
            };
        part_start = b == b'-';
        ok
    });
    if capitalized {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    for (i, part) in name.split('-').enumerate() {
        if i > 0 {
            out.push('-');
        }
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_uppercase());
            for c in chars {
                out.extend(c.to_lowercase());
            }
        }
    }
    Cow::Owned(out)
}

/// Builds the head. Decides, as Waitress does: HTTP/1.0 keeps the connection only for a
/// keep-alive request with a Content-Length, and is never chunked; HTTP/1.1 without a
/// Content-Length is chunked (when a body is allowed) and always closes. Chunking does not depend
/// on closing: a 1.1 body without a Content-Length is chunked even when the connection closes
/// after it anyway (`Connection: close`), so that the client can tell a complete body from a cut
/// one.
pub fn build_head(spec: &HeadSpec<'_>) -> Result<Head, NotLatin1> {
    build_head_in(spec, Vec::new())
}

/// [`build_head`] written into `bytes` (emptied first), a buffer kept for reuse.
pub fn build_head_in(spec: &HeadSpec<'_>, bytes: Vec<u8>) -> Result<Head, NotLatin1> {
    let has_body = status_has_body(spec.status);
    // The inferred Content-Length's digits, and the fields: on the stack for the usual number.
    let mut digits = [0u8; 20];
    let mut out: SmallVec<[(Cow<'_, str>, &str); 16]> = SmallVec::new();
    let mut cl_header: Option<&str> = None;
    let mut date_set = false;
    let mut server_set = false;
    // The app's Connection header: None, or whether it says `close`.
    let mut conn_header: Option<bool> = None;
    for &(name, value) in spec.headers {
        let name = capitalize_name(name);
        match &*name {
            "Content-Length" => {
                if !has_body {
                    continue;
                }
                cl_header = Some(value);
            }
            "Date" => date_set = !value.is_empty(),
            "Server" => server_set = !value.is_empty(),
            "Connection" => conn_header = Some(value.eq_ignore_ascii_case("close")),
            _ => {}
        }
        out.push((name, value));
    }
    if cl_header.is_none() && has_body {
        if let Some(cl) = spec.content_length {
            let inferred = decimal(&mut digits, cl);
            out.push((Cow::Borrowed("Content-Length"), inferred));
            cl_header = Some(inferred);
        }
    }
    let has_cl = cl_header.is_some_and(|v| !v.is_empty());
    let mut close = false;
    let mut chunked = false;
    match spec.version {
        Version::Http10 => {
            if spec.request_keep_alive && has_cl && !spec.force_close {
                out.push((Cow::Borrowed("Connection"), "Keep-Alive"));
            } else {
                close = true;
            }
        }
        Version::Http11 => {
            if !has_cl {
                if has_body {
                    out.push((Cow::Borrowed("Transfer-Encoding"), "chunked"));
                    chunked = true;
                }
                close = true;
            } else if spec.request_close || spec.force_close || conn_header == Some(true) {
                close = true;
            }
        }
    }
    // Said once: an app's own Connection header (none can pass start_response) is left alone.
    if close && conn_header.is_none() {
        out.push((Cow::Borrowed("Connection"), "close"));
    }
    if !server_set {
        if let Some(ident) = spec.ident {
            out.push((Cow::Borrowed("Server"), ident));
        }
    } else {
        out.push((Cow::Borrowed("Via"), spec.ident.unwrap_or("maitre")));
    }
    if !date_set {
        out.push((Cow::Borrowed("Date"), spec.date));
    }
    // Stable: same-named headers keep their order (RFC 9110 §5.3).
    // Names mostly differ in their first letter: compared on it first.
    out.sort_by(|a, b| {
        let (a, b) = (a.0.as_bytes(), b.0.as_bytes());
        a.first().cmp(&b.first()).then_with(|| a.cmp(b))
    });
    let bytes = serialize(spec.version, spec.status, &out, bytes)?;
    Ok(Head { bytes, chunked, close })
}

/// `VERSION SP status CRLF (name ": " value CRLF)* CRLF` with every text latin-1 encoded, as
/// Waitress encodes the head.
fn serialize(
    version: Version,
    status: &str,
    fields: &[(Cow<'_, str>, &str)],
    mut bytes: Vec<u8>,
) -> Result<Vec<u8>, NotLatin1> {
    let lines = fields.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
    let size = version.as_str().len() + 1 + status.len() + 2 + lines + 2;
    bytes.clear();
    bytes.reserve(size);
    // The texts are UTF-8, which for ASCII (nearly every head) is their latin-1 encoding
    // already: copied as they are, then one check over the whole head.
    write_head(&mut bytes, version, status, fields, false)?;
    debug_assert_eq!(bytes.len(), size, "the head fits the room made for it");
    if !bytes.is_ascii() {
        bytes.clear();
        write_head(&mut bytes, version, status, fields, true)?;
    }
    Ok(bytes)
}

/// Writes the head; `encode` re-encodes each text from UTF-8 to latin-1 (else copied as is).
fn write_head(
    bytes: &mut Vec<u8>,
    version: Version,
    status: &str,
    fields: &[(Cow<'_, str>, &str)],
    encode: bool,
) -> Result<(), NotLatin1> {
    let put = |bytes: &mut Vec<u8>, text: &str| {
        if encode {
            latin1_encode_into(bytes, text).map_err(NotLatin1)
        } else {
            bytes.extend_from_slice(text.as_bytes());
            Ok(())
        }
    };
    bytes.extend_from_slice(version.as_str().as_bytes());
    bytes.push(b' ');
    put(bytes, status)?;
    bytes.extend_from_slice(b"\r\n");
    for (k, v) in fields {
        put(bytes, k)?;
        bytes.extend_from_slice(b": ");
        put(bytes, v)?;
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    Ok(())
}

/// Writes the chunk-size line for `n` (upper-case hex + CRLF) into `buf`; returns its length.
pub fn chunk_size_line(buf: &mut [u8; 20], n: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 16];
    let mut i = 16;
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = HEX[v & 0xF];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    let len = 16 - i;
    buf[..len].copy_from_slice(&digits[i..]);
    buf[len] = b'\r';
    buf[len + 1] = b'\n';
    len + 2
}

/// A string of 1 to 18 ASCII digits as a number (what `int()` gives for it); `None` for anything
/// else (signs, spaces, underscores, other digits, longer numbers), left to `int()`.
pub fn plain_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| n * 10 + u64::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    #[test]
    fn capitalize_name_as_python_and_borrowed_when_unchanged() {
        use super::capitalize_name;
        use std::borrow::Cow;
        for (name, want) in [
            ("x-api-KEY", "X-Api-Key"),
            ("content-type", "Content-Type"),
            ("CONTENT-LENGTH", "Content-Length"),
            ("eTag", "Etag"),
            ("x--y", "X--Y"),
            ("-x-", "-X-"),
            ("ümlaut-x", "Ümlaut-X"),
        ] {
            let got = capitalize_name(name);
            assert_eq!(got, want);
            assert!(matches!(got, Cow::Owned(_)), "{name}");
        }
        for name in [
            "Content-Type",
            "X-1a",
            "1x-Y",
            "Etag",
            "",
            "-",
            "X--Y",
            "Www-Authenticate",
        ] {
            assert!(matches!(capitalize_name(name), Cow::Borrowed(n) if n == name), "{name}");
        }
    }

    #[test]
    fn plain_decimal_is_int_for_plain_digits_only() {
        use super::plain_decimal;
        assert_eq!(plain_decimal("0"), Some(0));
        assert_eq!(plain_decimal("13"), Some(13));
        assert_eq!(plain_decimal("007"), Some(7));
        assert_eq!(plain_decimal("999999999999999999"), Some(999_999_999_999_999_999));
        for other in [
            "",
            " 1",
            "1 ",
            "+1",
            "-1",
            "1_0",
            "1e3",
            "0x10",
            "١",
            "9999999999999999999",
        ] {
            assert_eq!(plain_decimal(other), None, "{other:?}");
        }
    }

    use super::*;

    const DATE: &str = "Sun, 22 Nov 2026 04:15:48 GMT";

    fn spec<'a>(version: Version, status: &'a str, headers: &'a [(&'a str, &'a str)]) -> HeadSpec<'a> {
        HeadSpec {
            version,
            status,
            headers,
            content_length: None,
            request_close: false,
            request_keep_alive: false,
            force_close: false,
            ident: Some("maitre"),
            date: DATE,
        }
    }

    fn h<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        pairs.to_vec()
    }

    fn text(head: &Head) -> String {
        String::from_utf8_lossy(&head.bytes).into_owned()
    }

    #[test]
    fn keep_alive_11_with_length_sorted_and_capitalised() {
        let hs = h(&[
            ("x-api-KEY", "1"),
            ("content-type", "text/plain"),
            ("Content-Length", "13"),
        ]);
        let head = build_head(&spec(Version::Http11, "200 OK", &hs)).unwrap();
        assert_eq!(
            text(&head),
            "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\
             Date: Sun, 22 Nov 2026 04:15:48 GMT\r\nServer: maitre\r\nX-Api-Key: 1\r\n\r\n"
        );
        assert!(!head.chunked && !head.close);
    }

    #[test]
    fn http11_without_length_is_chunked_and_closes() {
        let hs = h(&[("Content-Type", "text/plain")]);
        let head = build_head(&spec(Version::Http11, "200 OK", &hs)).unwrap();
        assert!(head.chunked && head.close);
        assert!(text(&head).contains("Transfer-Encoding: chunked\r\n"));
        assert!(text(&head).contains("Connection: close\r\n"));
    }

    #[test]
    fn inferred_length_keeps_11_open() {
        let hs = h(&[]);
        let mut s = spec(Version::Http11, "200 OK", &hs);
        s.content_length = Some(5);
        let head = build_head(&s).unwrap();
        assert!(text(&head).contains("Content-Length: 5\r\n"));
        assert!(!head.close && !head.chunked);
    }

    #[test]
    fn http10_matrix() {
        let hs = h(&[("Content-Length", "3")]);
        let mut s = spec(Version::Http10, "200 OK", &hs);
        let head = build_head(&s).unwrap();
        assert!(head.close && text(&head).contains("Connection: close\r\n"));
        s.request_keep_alive = true;
        let head = build_head(&s).unwrap();
        assert!(!head.close && text(&head).contains("Connection: Keep-Alive\r\n"));
        let none = h(&[]);
        let mut s = spec(Version::Http10, "200 OK", &none);
        s.request_keep_alive = true;
        let head = build_head(&s).unwrap();
        assert!(head.close && !head.chunked && text(&head).contains("Connection: close\r\n"));
    }

    #[test]
    fn request_close_and_force_close() {
        let hs = h(&[("Content-Length", "3")]);
        let mut s = spec(Version::Http11, "200 OK", &hs);
        s.request_close = true;
        assert!(build_head(&s).unwrap().close);
        let mut s = spec(Version::Http11, "200 OK", &hs);
        s.force_close = true;
        let head = build_head(&s).unwrap();
        assert!(head.close && text(&head).contains("Connection: close\r\n"));
    }

    #[test]
    fn http11_close_without_length_is_still_chunked() {
        let none = h(&[]);
        for (request_close, force_close) in [(true, false), (false, true), (true, true)] {
            let mut s = spec(Version::Http11, "200 OK", &none);
            s.request_close = request_close;
            s.force_close = force_close;
            let head = build_head(&s).unwrap();
            assert!(head.chunked && head.close);
            assert_eq!(
                text(&head),
                "HTTP/1.1 200 OK\r\nConnection: close\r\nDate: Sun, 22 Nov 2026 04:15:48 GMT\r\n\
                 Server: maitre\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
        }
        // An empty Content-Length value frames nothing: chunked, as Waitress (`not ""`).
        let empty = h(&[("Content-Length", "")]);
        let mut s = spec(Version::Http11, "200 OK", &empty);
        s.request_close = true;
        let head = build_head(&s).unwrap();
        assert!(head.chunked && head.close);
        // HTTP/1.0 is never chunked, closing or not.
        for (request_close, request_keep_alive) in [(true, false), (false, true), (false, false)] {
            let mut s = spec(Version::Http10, "200 OK", &none);
            s.request_close = request_close;
            s.request_keep_alive = request_keep_alive;
            let head = build_head(&s).unwrap();
            assert!(!head.chunked && head.close);
            assert!(!text(&head).contains("Transfer-Encoding"));
        }
        // No body allowed: neither chunked nor a Content-Length, and closed.
        let mut s = spec(Version::Http11, "204 No Content", &none);
        s.request_close = true;
        let head = build_head(&s).unwrap();
        assert!(!head.chunked && head.close && !text(&head).contains("Transfer-Encoding"));
    }

    #[test]
    fn force_close_overrides_http10_keep_alive() {
        let hs = h(&[("Content-Length", "5")]);
        let mut s = spec(Version::Http10, "200 OK", &hs);
        s.request_keep_alive = true;
        s.force_close = true;
        let head = build_head(&s).unwrap();
        let t = text(&head);
        assert!(head.close && !head.chunked, "{t}");
        assert_eq!(t.matches("Connection:").count(), 1, "{t}");
        assert!(t.contains("Connection: close\r\n"), "{t}");
    }

    #[test]
    fn bodiless_statuses_drop_length_and_close_on_11() {
        for status in ["204 No Content", "304 Not Modified", "101 Switching Protocols"] {
            let hs = h(&[("Content-Length", "10")]);
            let head = build_head(&spec(Version::Http11, status, &hs)).unwrap();
            let t = text(&head);
            assert!(!t.contains("Content-Length"), "{t}");
            assert!(
                !head.chunked && head.close && t.contains("Connection: close\r\n"),
                "{t}"
            );
        }
    }

    #[test]
    fn server_via_and_date() {
        let hs = h(&[("Server", "app"), ("Date", "yesterday")]);
        let t = text(&build_head(&spec(Version::Http11, "200 OK", &hs)).unwrap());
        assert!(t.contains("Server: app\r\n") && t.contains("Via: maitre\r\n") && t.contains("Date: yesterday\r\n"));
        assert!(!t.contains(DATE));
        let none = h(&[]);
        let mut s = spec(Version::Http11, "200 OK", &none);
        s.ident = None;
        let t = text(&build_head(&s).unwrap());
        assert!(!t.contains("Server:"));
    }

    #[test]
    fn same_named_headers_keep_their_order() {
        let hs = h(&[("Set-Cookie", "b=2"), ("A", "x"), ("set-cookie", "a=1")]);
        let t = text(&build_head(&spec(Version::Http11, "200 OK", &hs)).unwrap());
        let first = t.find("Set-Cookie: b=2").unwrap();
        let second = t.find("Set-Cookie: a=1").unwrap();
        assert!(first < second);
    }

    #[test]
    fn status_without_reason_and_latin1() {
        let hs = h(&[("X", "caf\u{e9}")]);
        let head = build_head(&spec(Version::Http11, "200", &hs)).unwrap();
        assert!(head.bytes.starts_with(b"HTTP/1.1 200\r\n"));
        assert!(head.bytes.windows(7).any(|w| w == b"X: caf\xe9"));
        let bad = h(&[("X", "\u{263a}")]);
        assert_eq!(
            build_head(&spec(Version::Http11, "200 OK", &bad)),
            Err(NotLatin1('\u{263a}'))
        );
    }

    #[test]
    fn capitalises_like_python_and_chunk_lines() {
        assert_eq!(capitalize_name("x-api-KEY"), "X-Api-Key");
        assert_eq!(capitalize_name("ETAG"), "Etag");
        let mut b = [0u8; 20];
        let n = chunk_size_line(&mut b, 255);
        assert_eq!(&b[..n], b"FF\r\n");
        let n = chunk_size_line(&mut b, 0);
        assert_eq!(&b[..n], b"0\r\n");
    }
}
