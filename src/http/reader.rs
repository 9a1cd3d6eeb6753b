//! The streaming request reader: head, then body, with Waitress's limits.

use std::borrow::Cow;
use std::io;

use super::body::{BodySink, ChunkedDecoder, Step};
use super::error::{push_decimal, INTERNAL_ERROR_DETAIL};
use super::pystr::bytes_isspace;
use super::request::{parse_head, Framing, Header, RequestHead};
use super::{HttpError, Limits, Request, Version};

/// What [`RequestReader::feed`] found.
#[derive(Debug)]
pub enum Event {
    /// Everything useful was taken; call again with more bytes appended after the unconsumed ones.
    NeedMore,
    /// A head was parsed with `Expect: 100-continue` (HTTP/1.1) and a non-empty body is expected:
    /// the caller may write `HTTP/1.1 100 Continue\r\n\r\n`, then calls `feed` again.
    ExpectContinue,
    /// A complete request; the reader is ready for the next one.
    Request(Box<Request>),
    /// The input is bad: answer with this error and close. The reader takes nothing more.
    Error(HttpError),
}

/// How far the search for the end of the head has got in the (unconsumed) input.
#[derive(Debug, Default, Clone, Copy)]
struct HeadScan {
    /// Bytes already searched.
    pos: usize,
    /// The first byte that is not whitespace to Python's `bytes.isspace()` (where the request
    /// line starts).
    content_start: Option<usize>,
}

enum Scan {
    Incomplete,
    /// `\r\n\r\n` ends the head just before this index.
    Complete(usize),
    /// A blank line made of bare LFs (`\n\n`, or `\n\r\n` after a bare LF) ends here.
    BareLf(usize),
}

impl HeadScan {
    /// Searches `s[..limit]` from where the last call stopped.
    fn scan(&mut self, s: &[u8], limit: usize) -> Scan {
        let mut i = self.pos;
        while i < limit {
            let Some(cs) = self.content_start else {
                let b = s[i];
                if !bytes_isspace(b) {
                    self.content_start = Some(i);
                } else if b == b'\n' && i >= 3 && s[i - 3..i] == *b"\r\n\r" {
                    self.pos = i + 1;
                    return Scan::Complete(i + 1);
                }
                i += 1;
                continue;
            };
            let Some(off) = memchr::memchr(b'\n', &s[i..limit]) else {
                i = limit;
                break;
            };
            let j = i + off;
            i = j + 1;
            if j >= 3 && s[j - 3..j] == *b"\r\n\r" {
                self.pos = i;
                return Scan::Complete(i);
            }
            // After the request line started, a blank line ended by bare LFs would end the head
            // for a lenient parser: reject it at once instead of waiting.
            let lf_lf = j >= 1 && s[j - 1] == b'\n' && j - 1 > cs;
            let lf_crlf = j >= 3 && s[j - 1] == b'\r' && s[j - 2] == b'\n' && j - 2 > cs && s[j - 3] != b'\r';
            if lf_lf || lf_crlf {
                self.pos = i;
                return Scan::BareLf(i);
            }
        }
        self.pos = i;
        Scan::Incomplete
    }
}

/// A body with at least this many bytes still to come may be read straight into its buffer.
const DIRECT_BODY_MIN: u64 = 16 * 1024;

enum BodyKind {
    Fixed(u64),
    Chunked(ChunkedDecoder),
}

struct BodyState {
    head: RequestHead,
    sink: BodySink,
    kind: BodyKind,
    /// Raw body bytes consumed (chunk framing included).
    raw: u64,
}

enum State {
    Head(HeadScan),
    Body(Box<BodyState>),
    Failed(HttpError),
}

/// Parses a stream of pipelined requests.
pub struct RequestReader {
    limits: Limits,
    state: State,
}

impl std::fmt::Debug for RequestReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Head(_) => "head",
            State::Body(_) => "body",
            State::Failed(_) => "failed",
        };
        f.debug_struct("RequestReader")
            .field("limits", &self.limits)
            .field("state", &state)
            .finish()
    }
}

impl RequestReader {
    /// A reader at the start of a connection, enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestReader {
            limits,
            state: State::Head(HeadScan::default()),
        }
    }

    /// The limits this reader enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True once an error was returned: the reader will never produce a request again.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed(_))
    }

    /// True while a head has been parsed and its body is still being read.
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body(_))
    }

    /// Offers `input` (the caller's unconsumed bytes). Returns how many bytes were consumed and
    /// what happened. On `NeedMore` with 0 consumed, the caller must pass the same bytes again
    /// plus whatever arrived since (the reader remembers how far it has scanned).
    ///
    /// While a head is incomplete nothing is consumed. A complete head is consumed at once, body
    /// bytes as they arrive. With several pipelined requests in `input`, the first complete one
    /// is returned and `consumed` covers exactly its bytes. Blank heads (only whitespace up to
    /// `\r\n\r\n`) are consumed silently. On `Error`, `consumed` covers the bytes examined; every
    /// later call returns `(0, Error(same error))`.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Event) {
        let mut consumed = 0;
        loop {
            let s = &input[consumed..];
            match &mut self.state {
                State::Failed(e) => return (0, Event::Error(e.clone())),
                State::Head(scan) => {
                    if scan.pos > s.len() {
                        *scan = HeadScan::default();
                    }
                    let max = self.limits.max_request_header_size;
                    let end = match scan.scan(s, s.len().min(max)) {
                        Scan::Incomplete if s.len() >= max => None,
                        Scan::Incomplete => return (consumed, Event::NeedMore),
                        Scan::Complete(end) | Scan::BareLf(end) if end >= max => None,
                        Scan::BareLf(end) => {
                            let e = HttpError::bad_request("Bare CR or LF found in HTTP message", Version::Http10);
                            return (consumed + end, self.fail(e));
                        }
                        Scan::Complete(end) => Some(end),
                    };
                    let Some(end) = end else {
                        let e = HttpError::new(431, format!("exceeds max_header of {max}"), Version::Http10);
                        return (input.len(), self.fail(e));
                    };
                    let Some(start) = scan.content_start else {
                        // Only whitespace: ignored, as Waitress does with an empty request.
                        consumed += end;
                        *scan = HeadScan::default();
                        continue;
                    };
                    consumed += end;
                    let (head, framing) = match parse_head(&s[start..end], self.limits.max_request_body_size) {
                        Ok(parsed) => parsed,
                        Err(e) => return (consumed, self.fail(e)),
                    };
                    let (kind, expected) = match framing {
                        Framing::None => {
                            self.state = State::Head(HeadScan::default());
                            let request = Request {
                                head,
                                body: super::Body::Empty,
                            };
                            return (consumed, Event::Request(Box::new(request)));
                        }
                        Framing::Length(n) => (BodyKind::Fixed(n), Some(n)),
                        Framing::Chunked => (BodyKind::Chunked(ChunkedDecoder::new()), None),
                    };
                    let sink = match BodySink::new(self.limits.inbuf_overflow, expected) {
                        Ok(sink) => sink,
                        Err(_) => return (consumed, self.fail(internal_error(head.version))),
                    };
                    let expect = head.expect_continue;
                    self.state = State::Body(Box::new(BodyState {
                        head,
                        sink,
                        kind,
                        raw: 0,
                    }));
                    if expect {
                        return (consumed, Event::ExpectContinue);
                    }
                }
                State::Body(body) => {
                    if s.is_empty() {
                        return (consumed, Event::NeedMore);
                    }
                    let version = body.head.version;
                    let max = self.limits.max_request_body_size;
                    let done = match &mut body.kind {
                        BodyKind::Fixed(remaining) => {
                            let take = (*remaining).min(s.len() as u64) as usize;
                            if body.sink.write(&s[..take]).is_err() {
                                return (consumed, self.fail(internal_error(version)));
                            }
                            *remaining -= take as u64;
                            consumed += take;
                            *remaining == 0
                        }
                        BodyKind::Chunked(decoder) => {
                            let room = max.saturating_sub(body.raw);
                            let part = &s[..(s.len() as u64).min(room) as usize];
                            let (n, step) = match decoder.decode(part, &mut body.sink, body.raw, max) {
                                Ok(r) => r,
                                Err(_) => return (consumed, self.fail(internal_error(version))),
                            };
                            body.raw += n as u64;
                            consumed += n;
                            if step == Step::TooLarge || body.raw >= max {
                                let e = HttpError::new(413, format!("exceeds max_body of {max}"), version);
                                return (consumed, self.fail(e));
                            }
                            match step {
                                Step::Invalid(detail) => {
                                    // Waitress counts the whole received buffer against the body
                                    // limit before it reports a framing error, so an oversized
                                    // malformed body gets 413, not 400 (its functional suite
                                    // asserts this). The outcome is an error and a close either way.
                                    let offered = body.raw - n as u64 + s.len() as u64;
                                    let e = if offered >= max {
                                        HttpError::new(413, format!("exceeds max_body of {max}"), version)
                                    } else {
                                        HttpError::bad_request(detail, version)
                                    };
                                    return (consumed, self.fail(e));
                                }
                                Step::Done => true,
                                Step::NeedMore | Step::TooLarge => false,
                            }
                        }
                    };
                    if !done {
                        return (consumed, Event::NeedMore);
                    }
                    return (consumed, self.complete());
                }
            }
        }
    }

    /// Reads body bytes straight into the body's buffer, when that is possible: a
    /// Content-Length body held in memory with at least 16 KiB (`DIRECT_BODY_MIN`) still to come.
    /// The caller must have no unconsumed input buffered (it would precede these bytes).
    /// `read(buf, max)` appends at most `max` bytes to `buf` and returns how many (0 at EOF).
    ///
    /// `None`: not possible now, read into the caller's buffer and `feed` it. Otherwise the
    /// read's result: the bytes appended, and the request once its body is complete.
    pub fn read_body<F>(&mut self, read: F) -> Option<io::Result<(usize, Option<Event>)>>
    where
        F: FnOnce(&mut Vec<u8>, usize) -> io::Result<usize>,
    {
        let State::Body(body) = &mut self.state else {
            return None;
        };
        let BodyKind::Fixed(remaining) = &mut body.kind else {
            return None;
        };
        if *remaining < DIRECT_BODY_MIN {
            return None;
        }
        let n = match body.sink.append_with(*remaining as usize, read)? {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        *remaining -= n as u64;
        let done = *remaining == 0;
        Some(Ok((n, done.then(|| self.complete()))))
    }

    /// The body is complete: the request, and the reader back to reading a head.
    fn complete(&mut self) -> Event {
        let State::Body(body) = std::mem::replace(&mut self.state, State::Head(HeadScan::default())) else {
            unreachable!("called with a body")
        };
        let BodyState {
            mut head, sink, kind, ..
        } = *body;
        let version = head.version;
        if matches!(kind, BodyKind::Chunked(_)) {
            let mut value = Vec::with_capacity(20);
            push_decimal(&mut value, sink.len());
            head.headers.push(Header {
                key: Cow::Borrowed("CONTENT_LENGTH"),
                value,
            });
        }
        match sink.finish() {
            Ok(body) => Event::Request(Box::new(Request { head, body })),
            Err(_) => self.fail(internal_error(version)),
        }
    }

    fn fail(&mut self, e: HttpError) -> Event {
        self.state = State::Failed(e.clone());
        Event::Error(e)
    }
}

fn internal_error(version: Version) -> HttpError {
    HttpError::new(500, INTERNAL_ERROR_DETAIL, version)
}
