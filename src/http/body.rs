//! Request body buffering (memory, spilling to a temporary file) and the Content-Length and
//! chunked decoders.

/// A complete, buffered request body.
#[derive(Debug)]
pub enum Body {
    /// No body bytes.
    Empty,
    /// The body in memory (at most `inbuf_overflow` bytes).
    Memory(Vec<u8>),
    /// The body in an anonymous temporary file, `len` bytes from offset 0.
    File { file: std::fs::File, len: u64 },
}

impl Body {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Memory(v) => v.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    /// True when the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
