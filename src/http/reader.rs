//! The streaming request reader: head, then body, with Waitress's limits.

use super::{HttpError, Limits, Request};

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

/// Parses a stream of pipelined requests.
#[derive(Debug)]
pub struct RequestReader {
    limits: Limits,
}

impl RequestReader {
    pub fn new(limits: Limits) -> Self {
        RequestReader { limits }
    }

    /// Offers `input` (the caller's unconsumed bytes). Returns how many bytes were consumed and
    /// what happened. On `NeedMore` with 0 consumed, the caller must pass the same bytes again
    /// plus whatever arrived since (the reader remembers how far it has scanned).
    pub fn feed(&mut self, input: &[u8]) -> (usize, Event) {
        let _ = (&self.limits, input);
        todo!("implemented by the http layer")
    }
}
