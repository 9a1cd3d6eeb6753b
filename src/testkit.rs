//! The split-input harness shared by the reader's integration tests (`tests/http_reader.rs`) and
//! the fuzz targets (`fuzz/`): feed bytes to a [`RequestReader`] the way the event loop does, in
//! pieces of chosen sizes, check the reader's invariants on every step, and summarise what it
//! produced so that runs can be compared.
//!
//! Built only with the `testkit` cargo feature (the tests get it through the crate's
//! dev-dependency on itself, the fuzz crate through its dependency).

use std::collections::HashSet;
use std::io::Read;

use crate::http::{Body, Event, HttpError, Limits, Request, RequestReader, Version};

/// A comparable summary of one reader event.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Out {
    /// A complete request.
    Req {
        /// `REQUEST_METHOD`.
        method: String,
        /// The version the response is written with.
        version: Version,
        /// The request-target as sent.
        uri: Vec<u8>,
        /// The decoded path.
        path: Vec<u8>,
        /// The raw query.
        query: Vec<u8>,
        /// The headers as (environ key, value), in order.
        headers: Vec<(String, Vec<u8>)>,
        /// The whole body.
        body: Vec<u8>,
        /// `Connection: close`.
        close: bool,
        /// `Connection: keep-alive`.
        keep_alive: bool,
        /// `Expect: 100-continue` on HTTP/1.1.
        expect: bool,
        /// The connection closes after the response whatever it says.
        force_close: bool,
    },
    /// `Event::ExpectContinue`.
    Continue,
    /// An error: the code, the detail and the status-line version.
    Err(u16, String, Version),
}

/// What feeding a whole stream produced.
#[derive(Debug)]
pub struct Run {
    /// The events, in order.
    pub outs: Vec<Out>,
    /// Bytes left unconsumed at the end (0 after an error).
    pub left: usize,
}

/// The body's bytes, read back from memory or from its file.
pub fn body_bytes(body: Body) -> Vec<u8> {
    match body {
        Body::Empty => Vec::new(),
        Body::Memory(v) => v,
        Body::File { mut file, len } => {
            let mut v = Vec::new();
            file.read_to_end(&mut v).expect("read the body file");
            assert_eq!(v.len() as u64, len, "Body::File len");
            v
        }
    }
}

/// Checks what holds for every request a reader with `limits` returns, and summarises it.
pub fn summarize(req: Request, limits: &Limits) -> Out {
    let h = req.head;
    assert!(!h.method.is_empty(), "empty method");
    assert!(
        h.method
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b.is_ascii_lowercase()),
        "method {:?}",
        h.method
    );
    if let Body::Memory(v) = &req.body {
        assert!(!v.is_empty(), "Body::Memory must not be empty");
        assert!(
            v.len() <= limits.inbuf_overflow,
            "a body in memory beyond inbuf_overflow"
        );
    }
    let body = body_bytes(req.body);
    assert!(
        (body.len() as u64) < limits.max_request_body_size.max(1),
        "a body at or over the limit"
    );
    let mut seen = HashSet::new();
    for x in &h.headers {
        assert!(seen.insert(x.key.clone()), "header key {} twice", x.key);
        assert!(
            x.key.starts_with("HTTP_") || x.key == "CONTENT_LENGTH" || x.key == "CONTENT_TYPE",
            "environ key {}",
            x.key
        );
    }
    if let Some(cl) = h.header("CONTENT_LENGTH") {
        // Content-Length is 1*DIGIT (or the de-chunked length); it frames exactly the body.
        let text = std::str::from_utf8(cl).expect("CONTENT_LENGTH is ASCII");
        assert!(
            !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()),
            "CONTENT_LENGTH {text:?}"
        );
        let n: u128 = text
            .parse()
            .expect("an accepted Content-Length is below the body limit");
        assert_eq!(n, body.len() as u128, "CONTENT_LENGTH does not match the body");
    } else {
        assert!(body.is_empty(), "a body without CONTENT_LENGTH");
    }
    Out::Req {
        method: h.method.into_owned(),
        version: h.version,
        uri: h.request_uri,
        path: h.path,
        query: h.query,
        headers: h.headers.into_iter().map(|x| (x.key.into_owned(), x.value)).collect(),
        body,
        close: h.connection_close,
        keep_alive: h.connection_keep_alive,
        expect: h.expect_continue,
        force_close: h.force_close,
    }
}

/// Feeds the unconsumed bytes in `buf` until the reader needs more, as the event loop does,
/// recording each event in `outs` and removing what was consumed. Checks on every step that
/// nothing beyond the input is consumed, that the bytes kept for the next read are bounded
/// (an incomplete head shorter than the header limit; no body bytes), and the error codes.
/// Returns the error that ended the input, if one did.
pub fn feed_buffered(r: &mut RequestReader, buf: &mut Vec<u8>, outs: &mut Vec<Out>) -> Option<HttpError> {
    let limits = r.limits().clone();
    loop {
        let before = buf.len();
        let (used, ev) = r.feed(buf);
        assert!(used <= before, "consumed {used} of {before}");
        buf.drain(..used);
        match ev {
            Event::NeedMore => {
                // Bounded memory: an incomplete head is shorter than the header limit; body
                // bytes are always taken (into the body sink, which spills to a file).
                if r.in_body() {
                    assert!(buf.is_empty(), "{} body bytes left in the read buffer", buf.len());
                } else {
                    assert!(
                        buf.len() < limits.max_request_header_size,
                        "{} bytes of an incomplete head kept (limit {})",
                        buf.len(),
                        limits.max_request_header_size
                    );
                }
                assert!(!r.is_failed());
                return None;
            }
            Event::ExpectContinue => {
                assert!(r.in_body(), "100-continue without a body to read");
                outs.push(Out::Continue);
            }
            Event::Request(req) => {
                assert!(!r.is_failed());
                outs.push(summarize(*req, &limits));
            }
            Event::Error(e) => {
                assert!(matches!(e.code, 400 | 413 | 431 | 500 | 501), "error code {}", e.code);
                if e.code == 431 {
                    assert_eq!(e.version, Version::Http10);
                }
                assert!(r.is_failed());
                outs.push(Out::Err(e.code, e.detail.clone(), e.version));
                return Some(e);
            }
        }
    }
}

/// Feeds `data` in pieces of the given sizes (the rest in one piece at the end) the way the event
/// loop does: a buffer of unconsumed bytes, [`feed_buffered`] after each piece. Also checks that
/// after an error the reader never yields a request again, whatever arrives later.
pub fn run_split(limits: &Limits, data: &[u8], pieces: &[usize]) -> Run {
    let mut r = RequestReader::new(limits.clone());
    let mut outs = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut sizes = pieces.iter().copied();
    loop {
        let n = sizes.next().unwrap_or(data.len() - fed).min(data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        if let Some(e) = feed_buffered(&mut r, &mut buf, &mut outs) {
            // The reader never recovers, whatever arrives later.
            for more in [&buf[..], b"GET / HTTP/1.1\r\n\r\n", &data[fed..]] {
                let (again_used, again) = r.feed(more);
                assert_eq!(again_used, 0, "consumed after an error");
                assert!(
                    matches!(again, Event::Error(ref e2) if *e2 == e),
                    "{again:?} after {e:?}"
                );
            }
            return Run { outs, left: 0 };
        }
        if fed >= data.len() {
            return Run { outs, left: buf.len() };
        }
    }
}

/// Outcomes compared across splits. The one split-dependent case is Waitress's: a chunked body
/// with a framing error counts every byte received so far against `max_request_body_size`, so
/// the same malformed oversized body ends as 413 when it arrived in one piece and as the 400
/// framing error when the bad line came first. Both are an error and a close; they compare equal
/// here, and nothing else does.
pub fn split_class(outs: Vec<Out>) -> Vec<Out> {
    outs.into_iter()
        .map(|o| match o {
            Out::Err(413, _, v) => Out::Err(0, "body rejected".into(), v),
            Out::Err(400, d, v) if d.starts_with("Invalid chunk") || d == "Chunk not properly terminated" => {
                Out::Err(0, "body rejected".into(), v)
            }
            other => other,
        })
        .collect()
}

/// Small limits chosen by one input byte, so that the 431/413 paths and the spill to a file are
/// reachable with short inputs.
pub fn small_limits(b: u8) -> Limits {
    const HEADER: [usize; 4] = [24, 64, 200, 4096];
    const BODY: [u64; 4] = [1, 16, 100, 100_000];
    const OVERFLOW: [usize; 4] = [1, 8, 64, 1 << 20];
    Limits {
        max_request_header_size: HEADER[usize::from(b & 3)],
        max_request_body_size: BODY[usize::from((b >> 2) & 3)],
        inbuf_overflow: OVERFLOW[usize::from((b >> 4) & 3)],
    }
}

/// Feeds `data` whole, in the given pieces, and (when short) byte by byte, and asserts that the
/// outcomes agree up to [`split_class`]. Returns the whole-input run.
pub fn check_splits(limits: &Limits, data: &[u8], pieces: &[usize]) -> Run {
    let whole = run_split(limits, data, &[]);
    let want = split_class(whole.outs.clone());
    let split = run_split(limits, data, pieces);
    assert_eq!(
        split_class(split.outs),
        want,
        "split {pieces:?} differs from the whole input"
    );
    if data.len() <= 2048 {
        let bytewise = run_split(limits, data, &vec![1; data.len()]);
        assert_eq!(
            split_class(bytewise.outs),
            want,
            "byte-by-byte differs from the whole input"
        );
    }
    whole
}
