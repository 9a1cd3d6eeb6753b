//! Integration tests of the sans-IO request reader against Waitress's parsing rules.

// Cargo passes every dependency of the library to each test crate too; this one uses only the
// library (with its `testkit` feature, through the crate's dev-dependency on itself).
#![allow(unused_crate_dependencies)]

use std::borrow::Cow;
use std::time::{Duration, Instant};

use maitre::http::{Body, Event, HttpError, Limits, RequestReader, Version};
use maitre::testkit::{body_bytes, feed_buffered, run_split, split_class, summarize, Out};

fn limits() -> Limits {
    Limits::default()
}

fn small(max_header: usize, max_body: u64) -> Limits {
    Limits {
        max_request_header_size: max_header,
        max_request_body_size: max_body,
        inbuf_overflow: 64,
    }
}

fn run(data: &[u8]) -> Vec<Out> {
    run_split(&limits(), data, &[]).outs
}

fn run_with(l: Limits, data: &[u8]) -> Vec<Out> {
    run_split(&l, data, &[]).outs
}

fn only_request(data: &[u8]) -> Out {
    let out = run(data);
    assert_eq!(out.len(), 1, "{out:?}");
    out.into_iter().next().unwrap()
}

fn headers_of(o: &Out) -> Vec<(String, Vec<u8>)> {
    match o {
        Out::Req { headers, .. } => headers.clone(),
        other => panic!("not a request: {other:?}"),
    }
}

fn header(o: &Out, key: &str) -> Option<Vec<u8>> {
    headers_of(o).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn body_of(o: &Out) -> Vec<u8> {
    match o {
        Out::Req { body, .. } => body.clone(),
        other => panic!("not a request: {other:?}"),
    }
}

fn err(code: u16, detail: &str, version: Version) -> Out {
    Out::Err(code, detail.to_string(), version)
}

fn assert_error(data: &[u8], code: u16, detail: &str, version: Version) {
    let out = run(data);
    assert_eq!(
        out.last(),
        Some(&err(code, detail, version)),
        "input {:?}",
        String::from_utf8_lossy(data)
    );
}

use Version::{Http10 as V10, Http11 as V11};

// ---------------------------------------------------------------------------------------------
// Valid requests

#[test]
fn simple_get() {
    let o = only_request(b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n");
    match &o {
        Out::Req {
            method,
            version,
            uri,
            path,
            query,
            close,
            keep_alive,
            expect,
            force_close,
            body,
            ..
        } => {
            assert_eq!(method, "GET");
            assert_eq!(*version, V11);
            assert_eq!(uri, b"/a/b?x=1");
            assert_eq!(path, b"/a/b");
            assert_eq!(query, b"x=1");
            assert!(!close && !keep_alive && !expect && !force_close);
            assert!(body.is_empty());
        }
        _ => unreachable!(),
    }
    assert_eq!(
        headers_of(&o),
        vec![
            ("HTTP_HOST".into(), b"example.com".to_vec()),
            ("HTTP_USER_AGENT".into(), b"t".to_vec())
        ]
    );
}

#[test]
fn common_header_keys_are_static() {
    let mut r = RequestReader::new(limits());
    let (n, ev) = r
        .feed(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nContent-Type: x\r\nX-Forwarded-For: 1\r\nX-Odd: 1\r\n\r\n");
    assert_eq!(n, 87);
    let Event::Request(req) = ev else { panic!() };
    let keys: Vec<_> = req.head.headers.iter().map(|h| &h.key).collect();
    assert!(matches!(keys[0], Cow::Borrowed("HTTP_HOST")));
    assert!(matches!(keys[1], Cow::Borrowed("HTTP_ACCEPT")));
    assert!(matches!(keys[2], Cow::Borrowed("CONTENT_TYPE")));
    assert!(matches!(keys[3], Cow::Borrowed("HTTP_X_FORWARDED_FOR")));
    assert!(matches!(keys[4], Cow::Owned(k) if k == "HTTP_X_ODD"));
    assert_eq!(req.head.header("CONTENT_TYPE"), Some(&b"x"[..]));
}

#[test]
fn content_length_body_and_pipelining() {
    let data = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.0\r\n\r\nGET /3 HTTP/1.1\r\n";
    let mut r = RequestReader::new(limits());
    let (n, ev) = r.feed(data);
    assert_eq!(n, 44);
    let Event::Request(req) = ev else { panic!() };
    assert_eq!(body_bytes(req.body), b"hello");
    let (n2, ev) = r.feed(&data[n..]);
    assert_eq!(n2, 19);
    let Event::Request(req) = ev else { panic!() };
    assert_eq!(req.head.path, b"/2");
    assert_eq!(req.head.version, V10);
    let (n3, ev) = r.feed(&data[n + n2..]);
    assert_eq!(n3, 0);
    assert!(matches!(ev, Event::NeedMore));
}

#[test]
fn leading_blank_lines_and_whitespace_are_skipped() {
    // Row 31.
    let o = run(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert_eq!(o.len(), 1);
    let o = run(b"\r\n \t GET /x HTTP/1.1\r\n\r\n");
    assert!(matches!(&o[0], Out::Req { path, .. } if path == b"/x"));
    // A head that is only blank lines produces nothing and is consumed.
    let mut r = RequestReader::new(limits());
    let (n, ev) = r.feed(b"\r\n\r\n\r\n\r\n");
    assert_eq!(n, 8);
    assert!(matches!(ev, Event::NeedMore));
    let (n, ev) = r.feed(b"\r\n");
    assert_eq!(n, 0);
    assert!(matches!(ev, Event::NeedMore));
}

#[test]
fn trailing_space_after_version_and_missing_host() {
    // Row 30 (no Host accepted) and §9 (space after the version accepted).
    let o = only_request(b"GET / HTTP/1.1 \r\n\r\n");
    assert!(matches!(o, Out::Req { version: V11, .. }));
}

#[test]
fn other_versions_answer_as_http10() {
    // Row 21.
    for line in [&b"GET / HTTP/2.0"[..], b"GET / HTTP/8.4", b"GET /", b"GET / HTTP/1.0"] {
        let mut data = line.to_vec();
        data.extend_from_slice(b"\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx");
        let o = run(&data);
        assert_eq!(o.len(), 1, "{o:?}");
        assert!(
            matches!(
                &o[0],
                Out::Req {
                    version: V10,
                    expect: false,
                    ..
                }
            ),
            "{o:?}"
        );
    }
    let o = only_request(b"GET HTTP/1.1\r\n\r\n");
    assert!(matches!(&o, Out::Req { version: V10, path, .. } if path == b"HTTP/1.1"));
}

#[test]
fn header_values() {
    // Rows 15, 17, 18 and joins.
    let o = only_request(
        b"GET / HTTP/1.1\r\nX-A: b\r\n  c\r\nX-B: \xa0v\x85\r\nX_Auth: bob\r\nx-c: 1\r\nX-C:  2 \t\r\nX-D:\r\nX-E: a\r\n\tb\r\n \r\n\r\n",
    );
    assert_eq!(
        headers_of(&o),
        vec![
            ("HTTP_X_A".into(), b"b  c".to_vec()),
            ("HTTP_X_B".into(), b"\xa0v\x85".to_vec()),
            ("HTTP_X_C".into(), b"1, 2".to_vec()),
            ("HTTP_X_D".into(), b"".to_vec()),
            ("HTTP_X_E".into(), b"a\tb".to_vec()),
        ]
    );
}

#[test]
fn connection_flags_are_exact_tokens() {
    let flags = |v: &str| {
        let data = format!("GET / HTTP/1.1\r\nConnection: {v}\r\n\r\n");
        match only_request(data.as_bytes()) {
            Out::Req { close, keep_alive, .. } => (close, keep_alive),
            _ => unreachable!(),
        }
    };
    assert_eq!(flags("close"), (true, false));
    assert_eq!(flags("CLOSE"), (true, false));
    assert_eq!(flags("Keep-Alive"), (false, true));
    assert_eq!(flags("keep-alive, close"), (false, false));
    assert_eq!(flags("foo, keep-alive"), (false, false));
}

#[test]
fn target_forms() {
    let get = |t: &[u8]| {
        let mut d = b"GET ".to_vec();
        d.extend_from_slice(t);
        d.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        match only_request(&d) {
            Out::Req { path, query, uri, .. } => (path, query, uri),
            _ => unreachable!(),
        }
    };
    assert_eq!(
        get(b"http://x.com:81/p?q"),
        (b"/p".to_vec(), b"q".to_vec(), b"http://x.com:81/p?q".to_vec())
    );
    assert_eq!(get(b"http://x.com").0, b"");
    assert_eq!(
        get(b"//x//y?a#b"),
        (b"/x//y".to_vec(), b"a".to_vec(), b"//x//y?a#b".to_vec())
    );
    assert_eq!(
        get(b"/a%C5%9B;p?x%20y#f"),
        (
            b"/a\xc5\x9b;p".to_vec(),
            b"x%20y".to_vec(),
            b"/a%C5%9B;p?x%20y#f".to_vec()
        )
    );
    assert_eq!(get(b"/a\x00b\x7f").0, b"/a\x00b\x7f");
    assert_eq!(get(b"*").0, b"*");
}

#[test]
fn bad_uri_uses_request_version() {
    assert_error(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", 400, "Bad URI", V11);
    assert_error(b"GET /x?\xff HTTP/1.0\r\n\r\n", 400, "Bad URI", V10);
    assert_error(b"GET http://[::1/x HTTP/1.1\r\n\r\n", 400, "Bad URI", V11);
}

// ---------------------------------------------------------------------------------------------
// The bad-input list (reference §5)

#[test]
fn row_1_2_invalid_content_length() {
    for cl in ["+3", "-3", "0x3", "", " ", "3, 3", "3 3", "1e2", "\u{661}"] {
        let data = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\nabc");
        assert_error(data.as_bytes(), 400, "Content-Length is invalid", V11);
    }
    assert_error(
        b"POST / HTTP/1.0\r\nContent-Length: -1\r\n\r\n",
        400,
        "Content-Length is invalid",
        V10,
    );
    assert_error(
        b"POST / HTTP/8.4\r\nContent-Length: x\r\n\r\n",
        400,
        "Content-Length is invalid",
        V10,
    );
}

#[test]
fn row_3_4_duplicate_headers() {
    assert_error(
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "Duplicate header: Content-Length",
        V10,
    );
    assert_error(
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
        400,
        "Duplicate header: host",
        V10,
    );
    assert_error(
        b"GET / HTTP/1.1\r\nContent-Type: a\r\nCONTENT-TYPE: b\r\n\r\n",
        400,
        "Duplicate header: CONTENT-TYPE",
        V10,
    );
    // The duplicate is found before the request line is examined.
    assert_error(
        b"get / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
        "Duplicate header: Host",
        V10,
    );
}

#[test]
fn row_5_unsupported_transfer_encoding() {
    for te in [
        &b"gzip"[..],
        b"identity",
        b"gzip, chunked",
        b"chunked, gzip",
        b"\x85chunked",
        b"chun\xe2\x84\xaaed",
        b"chunked, , gzip",
        b"chunked;q=1",
    ] {
        let mut data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ".to_vec();
        data.extend_from_slice(te);
        data.extend_from_slice(b"\r\nContent-Length: 3\r\n\r\nabc");
        assert_error(&data, 501, "Transfer-Encoding requested is not supported.", V11);
    }
}

#[test]
fn row_6_chunked_twice() {
    let multiple = "Transfer-Encoding is invalid. Multiple chunked encodings requested.";
    assert_error(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        501,
        multiple,
        V11,
    );
    assert_error(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
        501,
        multiple,
        V11,
    );
    // Empty list elements are ignored; case and SP/HTAB around the coding do not matter.
    let o = run(b"POST / HTTP/1.1\r\nTransfer-Encoding: ,\t Chunked ,\r\n\r\n1\r\nx\r\n0\r\n\r\n");
    assert_eq!(body_of(&o[0]), b"x");
}

#[test]
fn row_7_chunked_with_content_length_on_11() {
    let o = only_request(
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert!(matches!(o, Out::Req { force_close: true, .. }));
    assert_eq!(body_of(&o), b"hello");
    assert_eq!(headers_of(&o), vec![("CONTENT_LENGTH".into(), b"5".to_vec())]);
    // An invalid Content-Length is dropped too.
    let o = only_request(b"POST / HTTP/1.1\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert!(matches!(o, Out::Req { force_close: true, .. }));
    assert_eq!(header(&o, "CONTENT_LENGTH"), Some(b"0".to_vec()));
}

#[test]
fn row_8_transfer_encoding_ignored_on_10() {
    let o = run(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nabGET");
    assert_eq!(o.len(), 1);
    assert_eq!(body_of(&o[0]), b"ab");
    assert_eq!(header(&o[0], "HTTP_TRANSFER_ENCODING"), Some(b"chunked".to_vec()));
    assert!(matches!(
        o[0],
        Out::Req {
            version: V10,
            force_close: false,
            ..
        }
    ));
    // Unsupported codings are not rejected on 1.0 either.
    let o = only_request(b"POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(header(&o, "HTTP_TRANSFER_ENCODING"), Some(b"gzip".to_vec()));
}

#[test]
fn row_9_bare_lf_head_is_rejected_at_once() {
    let bare = "Bare CR or LF found in HTTP message";
    assert_error(b"GET / HTTP/1.1\nHost: a\n\n", 400, bare, V10);
    assert_error(b"GET / HTTP/1.1\r\nHost: a\n\n", 400, bare, V10);
    assert_error(b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400, bare, V10);
    assert_error(b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400, bare, V10);
    // Not yet terminated: wait.
    assert_eq!(run(b"GET / HTTP/1.1\nHost: a\n"), vec![]);
    // Leading bare LFs are whitespace before the request, as with Waitress's lstrip.
    assert_eq!(run(b"\n\n\r\nGET / HTTP/1.1\r\n\r\n").len(), 1);
}

#[test]
fn rows_10_to_12_bare_cr_lf() {
    assert_error(
        b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        400,
        "Bare CR or LF found in header line \"Host: a\nX: b\"",
        V10,
    );
    assert_error(
        b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        400,
        "Bare CR or LF found in header line \"Host: a\rX: b\"",
        V10,
    );
    assert_error(
        b"GET /x\n HTTP/1.1\r\n\r\n",
        400,
        "Bare CR or LF found in HTTP message",
        V10,
    );
    assert_error(
        b"GET /x\r HTTP/1.1\r\n\r\n",
        400,
        "Bare CR or LF found in HTTP message",
        V10,
    );
    // Bare CR/LF in a header line is reported before an invalid line earlier in the head.
    assert_error(
        b"GET / HTTP/1.1\r\nBad Header\r\nX: a\rb\r\n\r\n",
        400,
        "Bare CR or LF found in header line \"X: a\rb\"",
        V10,
    );
}

#[test]
fn rows_13_14_16_invalid_header_lines() {
    for line in [
        &b"Host : a"[..],
        b"Host",
        b": a",
        b"X: a\x01b",
        b"X:\x0bbar",
        b"X: \x7f",
        b"X: a\x00",
        b"Bad-header: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x10",
        b"X\x80: a",
        b"X(: a",
    ] {
        let mut data = b"GET / HTTP/1.1\r\n".to_vec();
        data.extend_from_slice(line);
        data.extend_from_slice(b"\r\n\r\n");
        assert_error(&data, 400, "Invalid header", V10);
    }
    assert_error(
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        400,
        "Malformed header line \" Host: a\"",
        V10,
    );
    assert_error(
        b"GET / HTTP/1.1\r\n\tX: \xa0\r\n\r\n",
        400,
        "Malformed header line \"\tX: \u{a0}\"",
        V10,
    );
    // A folded continuation carrying a control character makes the joined line invalid.
    assert_error(b"GET / HTTP/1.1\r\nX: a\r\n b\x01\r\n\r\n", 400, "Invalid header", V10);
}

#[test]
fn redos_input_is_fast() {
    let mut data = b"GET / HTTP/1.1\r\nBad-header: ".to_vec();
    data.extend(std::iter::repeat_n(b'x', 200_000));
    data.extend_from_slice(b"\x10\r\n\r\n");
    let t = Instant::now();
    assert_error(&data, 400, "Invalid header", V10);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn rows_19_20_request_line() {
    assert_error(b"get / HTTP/1.1\r\n\r\n", 400, "Malformed HTTP method \"get\"", V10);
    assert_error(b"Get / HTTP/1.1\r\n\r\n", 400, "Malformed HTTP method \"Get\"", V10);
    for line in [
        &b"GET / HTTP/1.x"[..],
        b"GET  / HTTP/1.1",
        b"GET /a b HTTP/1.1",
        b"GE\x00 / HTTP/1.1",
        b"GET /info?x RTSP/1.0",
        b"GET",
        b"GET\t/ HTTP/1.1",
        b"G(T / HTTP/1.1",
        b"GET / HTTP/1.1.1",
    ] {
        let mut data = line.to_vec();
        data.extend_from_slice(b"\r\nHost: a\r\n\r\n");
        assert_error(&data, 400, "Start line is invalid", V10);
    }
    // Header errors are found before request-line errors.
    assert_error(b"get / HTTP/1.1\r\nX: \x01\r\n\r\n", 400, "Invalid header", V10);
}

#[test]
fn rows_22_to_25_chunked() {
    let chunked = |body: &[u8]| {
        let mut d = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        d.extend_from_slice(body);
        run(&d)
    };
    for size in [&b"0x3"[..], b"+3", b"3 ", b"zz", b" 3", b"3 ;a=b", b"-1", b"\t"] {
        let mut body = size.to_vec();
        body.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        let o = chunked(&body);
        assert_eq!(
            o,
            vec![err(400, "Invalid chunk size", V11)],
            "{:?}",
            String::from_utf8_lossy(size)
        );
    }
    for ext in [
        &b"3;a="[..],
        b"3;a=\x00",
        b"3;",
        b"3;a=\"b",
        b"3;a b",
        b"3;=b",
        b"zz;a=\"\x01\"",
    ] {
        let mut body = ext.to_vec();
        body.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        assert_eq!(
            chunked(&body),
            vec![err(400, "Invalid chunk extension", V11)],
            "{:?}",
            String::from_utf8_lossy(ext)
        );
    }
    let o = chunked(b"3;a=\"b c\";d;e=f;g=\"\\\"\"\r\nabc\r\n0;x=y\r\n\r\n");
    assert_eq!(body_of(&o[0]), b"abc");
    assert_eq!(header(&o[0], "CONTENT_LENGTH"), Some(b"3".to_vec()));
    assert_eq!(header(&o[0], "HTTP_TRANSFER_ENCODING"), None);
    assert_eq!(
        chunked(b"3\r\nabcX\r\n"),
        vec![err(400, "Chunk not properly terminated", V11)]
    );
    assert_eq!(
        chunked(b"3\r\nabc\r\r\n"),
        vec![err(400, "Chunk not properly terminated", V11)]
    );
    // Trailers, including malformed ones, are read and discarded.
    let o = chunked(b"3\r\nabc\r\n0\r\nX-T: 1\r\nnot a header\x01\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
    assert_eq!(o.len(), 2);
    assert_eq!(body_of(&o[0]), b"abc");
    assert!(matches!(&o[1], Out::Req { path, .. } if path == b"/next"));
    // Upper- and lower-case hex, leading zeros.
    let o = chunked(b"000A\r\n0123456789\r\na\r\nabcdefghij\r\n00\r\n\r\n");
    assert_eq!(body_of(&o[0]).len(), 20);
}

#[test]
fn row_26_body_too_large() {
    let l = small(1000, 10);
    assert_eq!(
        run_with(l.clone(), b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n"),
        vec![err(413, "exceeds max_body of 10", V11)]
    );
    assert_eq!(
        run_with(
            l.clone(),
            b"POST / HTTP/1.0\r\nContent-Length: 99999999999999999999999999\r\n\r\n"
        ),
        vec![err(413, "exceeds max_body of 10", V10)]
    );
    let o = run_with(l.clone(), b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n123456789");
    assert_eq!(body_of(&o[0]), b"123456789");
    // Chunked: raw bytes (framing included) reaching the limit.
    // "1\r\na\r\n" (6) + "0\r\n\r\n" (5) = 11 >= 10.
    assert_eq!(
        run_with(
            l.clone(),
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
        ),
        vec![err(413, "exceeds max_body of 10", V11)]
    );
    let l12 = small(1000, 12);
    let o = run_with(
        l12,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    );
    assert_eq!(body_of(&o[0]), b"a");
    // A chunk size that would pass the limit: 413 at once, no overflow for huge sizes.
    for size in ["ffffffffffffffffffffffffffffffffffffffff", "10000000000000003", "b"] {
        let data = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\n");
        assert_eq!(
            run_with(l.clone(), data.as_bytes()),
            vec![err(413, "exceeds max_body of 10", V11)]
        );
    }
    // An error before the limit is reported as such.
    assert_eq!(
        run_with(l, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n"),
        vec![err(400, "Invalid chunk size", V11)]
    );
}

#[test]
fn row_27_header_too_large() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"; // 27 bytes
    let n = head.len();
    assert_eq!(run_with(small(n + 1, 100), head).len(), 1);
    assert_eq!(
        run_with(small(n, 100), head),
        vec![err(431, &format!("exceeds max_header of {n}"), V10)]
    );
    // Without a terminator: waits below the limit, 431 at it.
    assert_eq!(
        run_with(small(10, 100), b"GET / HTTP"),
        vec![err(431, "exceeds max_header of 10", V10)]
    );
    assert_eq!(run_with(small(11, 100), b"GET / HTTP"), vec![]);
    // Always HTTP/1.0 and whatever the bytes are.
    assert_eq!(
        run_with(small(20, 100), b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaa"),
        vec![err(431, "exceeds max_header of 20", V10)]
    );
    // The leftover body of a keep-alive request is parsed as the next head.
    let o = run_with(
        small(30, 1000),
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
    );
    assert_eq!(o.len(), 1, "{o:?}"); // head is 38 bytes: 431 for the first
    let o = run_with(
        small(40, 1000),
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
    );
    assert_eq!(o.len(), 2);
    assert_eq!(o[1], err(431, "exceeds max_header of 40", V10));
}

#[test]
fn row_28_nothing_after_an_error() {
    let data = b"POST / HTTP/1.1\r\nContent-length: -1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx";
    let mut r = RequestReader::new(limits());
    let (n, ev) = r.feed(data);
    assert_eq!(n, 39);
    assert!(matches!(ev, Event::Error(HttpError { code: 400, .. })));
    for _ in 0..3 {
        let (n, ev) = r.feed(&data[39..]);
        assert_eq!(n, 0);
        assert!(matches!(ev, Event::Error(ref e) if e.detail == "Content-Length is invalid"));
    }
}

#[test]
fn row_29_expect_continue() {
    let data = b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\nabc";
    let mut r = RequestReader::new(limits());
    let (n, ev) = r.feed(data);
    assert!(matches!(ev, Event::ExpectContinue));
    assert_eq!(n, data.len() - 3);
    let (n2, ev) = r.feed(&data[n..]);
    assert_eq!(n2, 3);
    let Event::Request(req) = ev else { panic!() };
    assert!(req.head.expect_continue);
    // Chunked.
    let o = run(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(o[0], Out::Continue);
    assert_eq!(o.len(), 2);
    // No body, or already rejected: no 100 (maitre's deliberate difference).
    let o = run(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n");
    assert!(matches!(o[..], [Out::Req { expect: true, .. }]));
    let o = run(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
    assert!(matches!(o[..], [Out::Req { expect: true, .. }]));
    assert_eq!(
        run(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: x\r\n\r\n"),
        vec![err(400, "Content-Length is invalid", V11)]
    );
    assert_eq!(
        run_with(
            small(1000, 5),
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        ),
        vec![err(413, "exceeds max_body of 5", V11)]
    );
    // Other values and HTTP/1.0 do not ask.
    let o = run(b"POST / HTTP/1.1\r\nExpect: 100-continue, x\r\nContent-Length: 1\r\n\r\nx");
    assert!(matches!(o[..], [Out::Req { expect: false, .. }]));
}

// ---------------------------------------------------------------------------------------------
// Bodies

#[test]
fn spill_to_tempfile() {
    let l = Limits {
        inbuf_overflow: 8,
        ..limits()
    };
    let mut r = RequestReader::new(l.clone());
    let (_, ev) = r.feed(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n123456789");
    let Event::Request(req) = ev else { panic!() };
    assert!(matches!(req.body, Body::File { len: 9, .. }));
    assert_eq!(body_bytes(req.body), b"123456789");

    let (_, ev) = r.feed(b"POST / HTTP/1.1\r\nContent-Length: 8\r\n\r\n12345678");
    let Event::Request(req) = ev else { panic!() };
    assert!(matches!(req.body, Body::Memory(ref v) if v == b"12345678"));

    // Chunked bodies spill once they grow past the limit.
    let mut r = RequestReader::new(l);
    let (_, ev) = r.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n");
    let Event::Request(req) = ev else { panic!() };
    assert!(matches!(req.body, Body::File { len: 10, .. }));
    assert_eq!(body_bytes(req.body), b"1234567890");
}

#[test]
fn large_body_in_pieces() {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut data = format!("PUT /up HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    data.extend_from_slice(&body);
    let run = run_split(&limits(), &data, &[10, 50, 4096, 65536, 65536, 1, 1, 100_000]);
    assert_eq!(run.left, 0);
    let o = run.outs;
    assert_eq!(body_of(&o[0]), body);
    assert_eq!(header(&o[0], "CONTENT_LENGTH"), Some(b"300000".to_vec()));
}

// ---------------------------------------------------------------------------------------------
// Streaming properties

#[test]
fn slowloris_head_is_linear() {
    let mut data = b"GET / HTTP/1.1\r\n".to_vec();
    while data.len() < 200_000 {
        data.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    data.extend_from_slice(b"\r\n");
    let l = Limits {
        max_request_header_size: 1 << 20,
        ..limits()
    };
    let t = Instant::now();
    let mut r = RequestReader::new(l);
    let mut got = None;
    for end in 1..=data.len() {
        let (n, ev) = r.feed(&data[..end]);
        match ev {
            Event::NeedMore => assert_eq!(n, 0),
            Event::Request(req) => {
                assert_eq!(end, data.len());
                assert_eq!(n, data.len());
                got = Some(req);
            }
            other => panic!("{other:?}"),
        }
    }
    let req = got.expect("request");
    assert_eq!(req.head.headers.len(), 1);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn many_headers_are_linear() {
    let mut data = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..20_000 {
        data.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    data.extend_from_slice(b"A: 1\r\nA: 2\r\n\r\n");
    let l = Limits {
        max_request_header_size: 1 << 20,
        ..limits()
    };
    let t = Instant::now();
    let o = run_with(l, &data);
    assert_eq!(headers_of(&o[0]).len(), 20_001);
    assert_eq!(header(&o[0], "HTTP_A"), Some(b"1, 2".to_vec()));
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// Inputs for the split property: every split of the input must give the same events.
fn split_corpus() -> Vec<(Limits, Vec<u8>)> {
    let inputs: Vec<&[u8]> = vec![
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\r\n\r\n\r\nGET /x?y HTTP/1.0\r\nX-A: b\r\n  c\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\n\r\n",
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"b;c\"\r\nabc\r\n\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\r\nabc\r\n0\r\n\r\n",
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n2;x\r\nab\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\n\nGET",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"get / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nabPOST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\n1\r\nx\r\n0\r\n\r\r\n\r\nGET",
    ];
    let mut out = Vec::new();
    for input in inputs {
        out.push((limits(), input.to_vec()));
        out.push((small(48, 20), input.to_vec()));
        out.push((small(1000, 12), input.to_vec()));
    }
    out
}

#[test]
fn every_split_gives_the_same_outcome() {
    for (l, input) in split_corpus() {
        let whole = split_class(run_split(&l, &input, &[]).outs);
        let bytewise = split_class(run_split(&l, &input, &vec![1; input.len()]).outs);
        assert_eq!(bytewise, whole, "byte by byte: {:?}", String::from_utf8_lossy(&input));
        for cut in 0..=input.len() {
            let two = split_class(run_split(&l, &input, &[cut]).outs);
            assert_eq!(two, whole, "cut at {cut}: {:?}", String::from_utf8_lossy(&input));
        }
        for (a, b) in [(2usize, 3usize), (5, 7), (13, 1)] {
            let pieces: Vec<usize> = (0..input.len()).map(|i| if i % 2 == 0 { a } else { b }).collect();
            let many = split_class(run_split(&l, &input, &pieces).outs);
            assert_eq!(many, whole, "pieces {a}/{b}: {:?}", String::from_utf8_lossy(&input));
        }
    }
}

/// A small deterministic generator (no external crates).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_inputs_never_panic_and_split_consistently() {
    let alphabet = b"\r\n \t:;,=\"\\0123456789abcdefxX-_/?#%\x00\x01\x7f\x80\xff";
    let seeds = split_corpus();
    let mut rng = Lcg(42);
    for round in 0..3000 {
        let (l, seed) = &seeds[round % seeds.len()];
        let mut s = seed.clone();
        for _ in 0..rng.below(5) {
            let i = rng.below(s.len() + 1);
            match rng.below(3) {
                0 if i < s.len() => {
                    s.remove(i);
                }
                1 => s.insert(i, alphabet[rng.below(alphabet.len())]),
                _ if i < s.len() => s[i] = alphabet[rng.below(alphabet.len())],
                _ => {}
            }
        }
        let whole = split_class(run_split(l, &s, &[]).outs);
        let bytewise = split_class(run_split(l, &s, &vec![1; s.len()]).outs);
        assert_eq!(bytewise, whole, "{:?}", String::from_utf8_lossy(&s));
        let cut = rng.below(s.len() + 1);
        let two = split_class(run_split(l, &s, &[cut]).outs);
        assert_eq!(two, whole, "cut {cut}: {:?}", String::from_utf8_lossy(&s));
    }
}

#[test]
fn error_response_for_a_reader_error() {
    let mut r = RequestReader::new(limits());
    let (_, ev) = r.feed(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    let Event::Error(e) = ev else { panic!() };
    let date = "Sun, 22 Nov 2026 04:15:48 GMT";
    let got = e.to_response(Some("waitress"), date);
    let expected = b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\nContent-Length: 56\r\n\
Content-Type: text/plain; charset=utf-8\r\nDate: Sun, 22 Nov 2026 04:15:48 GMT\r\nServer: waitress\r\n\r\n\
Bad Request\r\n\r\nInvalid header\r\n\r\n(generated by waitress)";
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
}

#[test]
fn malformed_chunked_body_over_the_limit_is_413_when_received_at_once() {
    // Waitress's functional suite: `20;` (an invalid empty extension) repeated past a 1000-byte
    // limit, sent in one piece, is answered 413 because the whole buffer counts first.
    let l = Limits {
        max_request_header_size: 1000,
        max_request_body_size: 1000,
        inbuf_overflow: 524_288,
    };
    let mut data = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let repeat = b"20;\r\nThis string has 32 characters.\r\n";
    for _ in 0..(1050 / repeat.len() + 1) {
        data.extend_from_slice(repeat);
    }
    let outs = run_split(&l, &data, &[]).outs;
    assert!(matches!(outs.as_slice(), [Out::Err(413, d, Version::Http11)] if d == "exceeds max_body of 1000"));
    // The same bad line alone (well under the limit) is the framing error.
    let outs = run_split(&l, b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20;\r\n", &[]).outs;
    assert!(matches!(outs.as_slice(), [Out::Err(400, d, Version::Http11)] if d == "Invalid chunk extension"));
}

/// Reads `data` the way the event loop does with direct body reads: the bytes arrive in pieces
/// (a "socket" holding what has arrived); with nothing buffered, `read_body` is tried first and
/// takes bytes straight from the socket into the body; otherwise the socket's bytes are buffered
/// and fed. Returns the events and how many reads went straight into a body.
fn run_direct(l: Limits, data: &[u8], pieces: &[usize]) -> (Vec<Out>, usize) {
    let mut r = RequestReader::new(l.clone());
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut arrived = 0;
    let mut taken = 0;
    let mut direct = 0;
    let mut sizes = pieces.iter().copied();
    while taken < data.len() {
        if taken == arrived {
            let n = sizes.next().unwrap_or(data.len()).min(data.len() - arrived);
            arrived += n;
        }
        if buf.is_empty() {
            let socket = &data[taken..arrived];
            let res = r.read_body(|body, max| {
                let n = max.min(socket.len());
                body.extend_from_slice(&socket[..n]);
                Ok(n)
            });
            if let Some(res) = res {
                let (n, done) = res.unwrap();
                assert!(n > 0, "a read with bytes waiting appends some");
                taken += n;
                direct += 1;
                match done {
                    Some(Event::Request(req)) => out.push(summarize(*req, &l)),
                    Some(other) => panic!("unexpected {other:?}"),
                    None => {}
                }
                continue;
            }
        }
        buf.extend_from_slice(&data[taken..arrived]);
        taken = arrived;
        if feed_buffered(&mut r, &mut buf, &mut out).is_some() {
            return (out, direct);
        }
    }
    (out, direct)
}

#[test]
fn direct_body_reads_give_the_same_requests_as_feeding() {
    let big = |n: usize| {
        let mut v = format!("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        v.extend((0..n).map(|i| (i % 251) as u8));
        v
    };
    let mut pipelined = big(70_000);
    pipelined.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    pipelined.extend(big(20_000));
    pipelined.extend_from_slice(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n");
    let chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec();
    // (input, whether bytes go straight into a body: always, never, or depending on the split)
    let cases: Vec<(Vec<u8>, Option<bool>)> = vec![
        (big(65_536), Some(true)),
        // Exactly the threshold: direct only when the head arrives without body bytes.
        (big(16_384), None),
        // Too short to be worth it: fed as usual.
        (big(16_383), Some(false)),
        (big(100), Some(false)),
        (pipelined, Some(true)),
        // Chunked bodies are always decoded from the buffer.
        (chunked, Some(false)),
    ];
    for (data, expect_direct) in cases {
        let want = run(&data);
        for pieces in [&[][..], &[60][..], &[10, 5000, 7, 40_000][..], &[1000; 200][..]] {
            let (got, direct) = run_direct(limits(), &data, pieces);
            assert_eq!(got, want, "pieces {pieces:?}");
            if expect_direct == Some(false) {
                assert_eq!(direct, 0, "pieces {pieces:?}");
            }
        }
        if expect_direct == Some(true) {
            let (_, direct) = run_direct(limits(), &data, &[100]);
            assert!(direct > 0, "the body was read directly");
        }
    }
}

#[test]
fn direct_body_reads_skip_a_body_bound_for_a_file() {
    // Over inbuf_overflow (64 here) the body goes to a temporary file: no direct reads.
    let mut data = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n".to_vec();
    data.extend_from_slice(&[b'z'; 20_000]);
    let (got, direct) = run_direct(small(8192, 1 << 20), &data, &[100]);
    assert_eq!(direct, 0);
    assert_eq!(got, run_with(small(8192, 1 << 20), &data));
}

#[test]
fn direct_body_read_at_eof_and_on_error() {
    let mut r = RequestReader::new(limits());
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n";
    assert!(matches!(r.feed(head), (n, Event::NeedMore) if n == head.len()));
    // EOF: nothing appended, no request.
    let res = r.read_body(|_, _| Ok(0)).expect("direct read possible");
    assert!(matches!(res, Ok((0, None))));
    // An error is passed through and changes nothing.
    let res = r
        .read_body(|_, _| Err(std::io::ErrorKind::WouldBlock.into()))
        .expect("possible");
    assert!(res.is_err());
    let res = r.read_body(|b, max| {
        assert_eq!(max, 50_000, "at most what the body still needs");
        b.resize(b.len() + max, b'a');
        Ok(max)
    });
    match res {
        Some(Ok((50_000, Some(Event::Request(req))))) => assert_eq!(req.body.len(), 50_000),
        other => panic!("unexpected {other:?}"),
    }
    // Back to heads: no direct reads.
    assert!(r.read_body(|_, _| Ok(0)).is_none());
}
