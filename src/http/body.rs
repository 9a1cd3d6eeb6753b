//! Request body buffering (memory, spilling to a temporary file) and the chunked decoder.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::Mutex;

use super::chars::{is_qdtext, is_quoted_pair_char, is_tchar};

/// A complete, buffered request body.
#[derive(Debug)]
pub enum Body {
    /// No body bytes.
    Empty,
    /// The body in memory (at most `inbuf_overflow` bytes).
    Memory(Vec<u8>),
    /// The body in an anonymous temporary file, `len` bytes from offset 0.
    File {
        /// The file, positioned at offset 0.
        file: std::fs::File,
        /// The body's length in bytes.
        len: u64,
    },
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

/// Spare body buffers, reused for later bodies.
///
/// A body is read on the event-loop thread and dropped on a worker thread once the app is done.
/// With glibc's malloc a freed block of this size goes back to the top of the loop thread's heap,
/// which is trimmed and faulted in again for the next body: page faults for every byte of every
/// body. Handing the buffers back here instead ([`recycle`]) keeps them mapped, within a bound.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Buffers smaller than this are left to malloc (its per-thread caches serve them well).
const SPARE_MIN: usize = 16 * 1024;
/// Buffers larger than this are freed (bodies up to `inbuf_overflow` stay in memory).
const SPARE_MAX: usize = 1 << 20;
/// At most this many bytes of spare buffers are kept.
const SPARE_TOTAL: usize = 4 << 20;

/// Gives a body's buffer back for reuse (or frees it when too small, too big or not needed).
pub fn recycle(mut buf: Vec<u8>) {
    if !(SPARE_MIN..=SPARE_MAX).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
    let kept: usize = spare.iter().map(Vec::capacity).sum();
    if kept + buf.capacity() <= SPARE_TOTAL {
        spare.push(buf);
    }
}

/// An empty buffer with room for `len` bytes: a spare one when one fits, else a new one.
fn buffer_for(len: usize) -> Vec<u8> {
    if len >= SPARE_MIN {
        let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
        // The smallest spare that fits, so big ones stay for big bodies.
        let best = (0..spare.len())
            .filter(|&i| spare[i].capacity() >= len)
            .min_by_key(|&i| spare[i].capacity());
        if let Some(i) = best {
            return spare.swap_remove(i);
        }
    }
    Vec::with_capacity(len)
}

/// Collects body bytes in memory up to `overflow` bytes, then in an anonymous temporary file.
#[derive(Debug)]
pub(crate) struct BodySink {
    mem: Vec<u8>,
    file: Option<File>,
    len: u64,
    overflow: usize,
}

impl BodySink {
    /// A sink for a body of `expected` bytes when known (Content-Length): a body longer than
    /// `overflow` goes straight to a file, a shorter one gets its whole buffer at once.
    pub(crate) fn new(overflow: usize, expected: Option<u64>) -> io::Result<Self> {
        let mut sink = BodySink {
            mem: Vec::new(),
            file: None,
            len: 0,
            overflow,
        };
        match expected {
            Some(n) if n > overflow as u64 => sink.file = Some(tempfile::tempfile()?),
            // Capped: the length is the client's claim until the bytes arrive.
            Some(n) => sink.mem = buffer_for(n.min(SPARE_MAX as u64) as usize),
            None => {}
        }
        Ok(sink)
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.file.is_none() && self.mem.len() + data.len() > self.overflow {
            let mut file = tempfile::tempfile()?;
            file.write_all(&self.mem)?;
            recycle(std::mem::take(&mut self.mem));
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(data)?,
            None => self.mem.extend_from_slice(data),
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Lets `read` append up to `max` bytes straight to the memory buffer (no copy through the
    /// caller's buffer) when the buffer already has room for them; `None` otherwise (the body
    /// is in a file, or the buffer would have to grow). `read` returns how many it appended.
    pub(crate) fn append_with<F>(&mut self, max: usize, read: F) -> Option<io::Result<usize>>
    where
        F: FnOnce(&mut Vec<u8>, usize) -> io::Result<usize>,
    {
        if self.file.is_some() || self.mem.capacity() - self.mem.len() < max {
            return None;
        }
        let before = self.mem.len();
        let res = read(&mut self.mem, max);
        let n = self.mem.len() - before;
        debug_assert!(res.as_ref().map_or(n == 0, |&r| r == n && n <= max));
        self.len += n as u64;
        Some(res)
    }

    /// The finished body; a file is rewound to offset 0.
    pub(crate) fn finish(self) -> io::Result<Body> {
        if self.len == 0 {
            return Ok(Body::Empty);
        }
        match self.file {
            Some(mut file) => {
                file.seek(SeekFrom::Start(0))?;
                Ok(Body::File { file, len: self.len })
            }
            None => Ok(Body::Memory(self.mem)),
        }
    }
}

/// What the chunked decoder reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// All input taken; the body is not complete yet.
    NeedMore,
    /// The last chunk and the trailer section were read.
    Done,
    /// Malformed framing (the Waitress detail text).
    Invalid(&'static str),
    /// A chunk size that would take the raw body to the limit.
    TooLarge,
}

/// The chunk-extension grammar `*(";" token ["=" (token / quoted-string)])` as a DFA, entered
/// after the first `;`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    NameStart,
    Name,
    ValueStart,
    Token,
    Quoted,
    Escape,
    QuoteEnd,
    Bad,
}

impl Ext {
    fn step(self, b: u8) -> Ext {
        use Ext::*;
        match self {
            NameStart if is_tchar(b) => Name,
            Name if is_tchar(b) => Name,
            Name if b == b'=' => ValueStart,
            Name | Token | QuoteEnd if b == b';' => NameStart,
            ValueStart if is_tchar(b) => Token,
            ValueStart if b == b'"' => Quoted,
            Token if is_tchar(b) => Token,
            Quoted if b == b'"' => QuoteEnd,
            Quoted if b == b'\\' => Escape,
            Quoted if is_qdtext(b) => Quoted,
            Escape if is_quoted_pair_char(b) => Quoted,
            _ => Bad,
        }
    }

    fn accepts(self) -> bool {
        matches!(self, Ext::Name | Ext::Token | Ext::QuoteEnd)
    }
}

/// A chunk-size line read so far (validated as it arrives, never buffered).
#[derive(Debug, Clone, Copy, Default)]
struct SizeLine {
    size: u64,
    digits: bool,
    size_bad: bool,
    nonempty: bool,
    ext: Option<Ext>,
    pending_cr: bool,
}

impl SizeLine {
    fn push(&mut self, b: u8) {
        self.nonempty = true;
        match &mut self.ext {
            Some(ext) => *ext = ext.step(b),
            None if b == b';' => self.ext = Some(Ext::NameStart),
            None => match (b as char).to_digit(16) {
                Some(d) => {
                    self.digits = true;
                    self.size = self.size.saturating_mul(16).saturating_add(u64::from(d));
                }
                None => self.size_bad = true,
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum ChunkState {
    Size(SizeLine),
    Data(u64),
    /// After the data: the first of the two bytes that must be CRLF, once seen.
    DataEnd(Option<u8>),
    /// Trailer bytes seen and the last four of them.
    Trailer(u64, u32),
    Done,
}

/// Decodes `Transfer-Encoding: chunked` as Waitress's ChunkedReceiver does: size lines of
/// `1*HEXDIG` with optional extensions (empty lines before a size line skipped), data followed by
/// exactly CRLF, then trailers up to an empty line, discarded.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
}

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size(SizeLine::default()),
        }
    }

    /// Takes bytes from `input`, writing chunk data to `sink`. Returns how much was consumed
    /// (everything unless the body ended or was found invalid). `raw_before` is the raw body bytes
    /// consumed in earlier calls and `max` the body limit, for the early chunk-size 413.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        sink: &mut BodySink,
        raw_before: u64,
        max: u64,
    ) -> io::Result<(usize, Step)> {
        let mut i = 0;
        while i < input.len() {
            match &mut self.state {
                ChunkState::Size(line) => {
                    let b = input[i];
                    i += 1;
                    if line.pending_cr {
                        line.pending_cr = false;
                        if b == b'\n' {
                            let line = *line;
                            if !line.nonempty {
                                self.state = ChunkState::Size(SizeLine::default());
                                continue;
                            }
                            if line.ext.is_some_and(|e| !e.accepts()) {
                                return Ok((i, Step::Invalid("Invalid chunk extension")));
                            }
                            if line.size_bad || !line.digits {
                                return Ok((i, Step::Invalid("Invalid chunk size")));
                            }
                            if line.size == 0 {
                                self.state = ChunkState::Trailer(0, 0);
                            } else {
                                let raw = raw_before.saturating_add(i as u64);
                                if raw.saturating_add(line.size).saturating_add(2) >= max {
                                    return Ok((i, Step::TooLarge));
                                }
                                self.state = ChunkState::Data(line.size);
                            }
                            continue;
                        }
                        line.push(b'\r');
                    }
                    if b == b'\r' {
                        line.pending_cr = true;
                    } else {
                        line.push(b);
                    }
                }
                ChunkState::Data(remaining) => {
                    let avail = (input.len() - i) as u64;
                    let take = (*remaining).min(avail) as usize;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = ChunkState::DataEnd(None);
                    }
                    sink.write(&input[i..i + take])?;
                    i += take;
                }
                ChunkState::DataEnd(first) => {
                    let b = input[i];
                    i += 1;
                    match *first {
                        None => *first = Some(b),
                        Some(f) => {
                            if f == b'\r' && b == b'\n' {
                                self.state = ChunkState::Size(SizeLine::default());
                            } else {
                                return Ok((i, Step::Invalid("Chunk not properly terminated")));
                            }
                        }
                    }
                }
                ChunkState::Trailer(n, window) => {
                    let b = input[i];
                    i += 1;
                    *n += 1;
                    *window = (*window << 8) | u32::from(b);
                    let done = (*n == 2 && *window & 0xffff == 0x0d0a) || (*n >= 4 && *window == 0x0d0a_0d0a);
                    if done {
                        self.state = ChunkState::Done;
                        return Ok((i, Step::Done));
                    }
                }
                ChunkState::Done => return Ok((i, Step::Done)),
            }
        }
        let step = if matches!(self.state, ChunkState::Done) {
            Step::Done
        } else {
            Step::NeedMore
        };
        Ok((i, step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode_all(input: &[u8]) -> (usize, Step, Vec<u8>) {
        let mut d = ChunkedDecoder::new();
        let mut sink = BodySink::new(1 << 20, None).unwrap();
        let (n, step) = d.decode(input, &mut sink, 0, u64::MAX).unwrap();
        let body = match sink.finish().unwrap() {
            Body::Empty => Vec::new(),
            Body::Memory(v) => v,
            Body::File { .. } => unreachable!(),
        };
        (n, step, body)
    }

    #[test]
    fn body_buffers_are_recycled_within_bounds() {
        let v: Vec<u8> = Vec::with_capacity(200_000);
        let ptr = v.as_ptr();
        recycle(v);
        let again = buffer_for(199_999);
        assert_eq!(again.as_ptr(), ptr, "the spare buffer was reused");
        assert!(again.is_empty());
        // Small ones are left to malloc.
        assert_eq!(buffer_for(100).capacity(), 100);
        // At most SPARE_TOTAL bytes are kept.
        for _ in 0..10 {
            recycle(Vec::with_capacity(SPARE_MAX));
        }
        let kept: usize = SPARE.lock().unwrap().iter().map(Vec::capacity).sum();
        assert!(kept <= SPARE_TOTAL, "{kept}");
        // Too big to keep.
        recycle(Vec::with_capacity(SPARE_MAX + 1));
        assert!(SPARE.lock().unwrap().iter().all(|b| b.capacity() <= SPARE_MAX));
    }

    #[test]
    fn simple_chunks() {
        let input = b"3\r\nabc\r\n1;a=b;c=\"x y\";d\r\nd\r\n0\r\n\r\nNEXT";
        let (n, step, body) = decode_all(input);
        assert_eq!(step, Step::Done);
        assert_eq!(body, b"abcd");
        assert_eq!(&input[n..], b"NEXT");
    }

    #[test]
    fn trailers_and_blank_lines() {
        let input = b"\r\n\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\nbad trailer\x01\r\n\r\nZ";
        let (n, step, body) = decode_all(input);
        assert_eq!(step, Step::Done);
        assert_eq!(body, b"0123456789");
        assert_eq!(&input[n..], b"Z");
    }

    #[test]
    fn invalid() {
        for (input, detail) in [
            (&b"0x3\r\n"[..], "Invalid chunk size"),
            (b"+3\r\n", "Invalid chunk size"),
            (b"3 \r\n", "Invalid chunk size"),
            (b"3 ;a\r\n", "Invalid chunk size"),
            (b"zz\r\n", "Invalid chunk size"),
            (b"3\n\r\n", "Invalid chunk size"),
            (b";a\r\n", "Invalid chunk size"),
            (b"3;a=\r\n", "Invalid chunk extension"),
            (b"3;a=\x00\r\n", "Invalid chunk extension"),
            (b"3;\r\n", "Invalid chunk extension"),
            (b"zz;a=\x00\r\n", "Invalid chunk extension"),
            (b"3;a=\"b\r\n", "Invalid chunk extension"),
            (b"3;a\n\r\n", "Invalid chunk extension"),
            (b"3\r\nabcX\r\n", "Chunk not properly terminated"),
            (b"3\r\nabc\n\r", "Chunk not properly terminated"),
        ] {
            let (_, step, _) = decode_all(input);
            assert_eq!(step, Step::Invalid(detail), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn early_too_large() {
        let mut d = ChunkedDecoder::new();
        let mut sink = BodySink::new(10, None).unwrap();
        let (_, step) = d
            .decode(b"10000000000000000000000000000000000000\r\n", &mut sink, 0, 1 << 30)
            .unwrap();
        assert_eq!(step, Step::TooLarge);
        let mut d = ChunkedDecoder::new();
        // "5\r\n" (3) + 5 + 2 = 10 >= 10
        assert_eq!(d.decode(b"5\r\n", &mut sink, 0, 10).unwrap().1, Step::TooLarge);
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(b"5\r\n", &mut sink, 0, 11).unwrap().1, Step::NeedMore);
    }

    #[test]
    fn sink_spills() {
        let mut s = BodySink::new(4, None).unwrap();
        s.write(b"ab").unwrap();
        s.write(b"cd").unwrap();
        assert!(s.file.is_none());
        s.write(b"e").unwrap();
        assert!(s.file.is_some());
        match s.finish().unwrap() {
            Body::File { mut file, len } => {
                assert_eq!(len, 5);
                let mut v = Vec::new();
                file.read_to_end(&mut v).unwrap();
                assert_eq!(v, b"abcde");
            }
            other => panic!("{other:?}"),
        }
        let s = BodySink::new(4, Some(5)).unwrap();
        assert!(s.file.is_some());
        assert!(matches!(BodySink::new(4, None).unwrap().finish().unwrap(), Body::Empty));
    }
}
