//! A connection's pending output: memory up to `outbuf_overflow`, then an anonymous temporary
//! file, plus file ranges from `wsgi.file_wrapper`; sent with `writev` and `sendfile(2)`. Large
//! pieces of an app's immutable `bytes` are kept by reference instead of copied ([`Shared`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Pieces at least this long are kept by reference when they can be; shorter ones are copied
/// (and coalesced with their neighbours, so a flush needs fewer slices).
pub const SHARE_MIN: usize = 4096;

/// Bytes that someone else owns (an app's `bytes` object), kept alive by holding the owner until
/// they are sent: queued without a copy.
pub struct Shared {
    _owner: Box<dyn Send>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the bytes are immutable for as long as the owner lives (`Shared::new`'s contract) and
// the owner itself is `Send`; nothing is shared mutably.
unsafe impl Send for Shared {}

impl Shared {
    /// # Safety
    /// `bytes` must stay valid and unchanged for as long as `owner` lives.
    pub unsafe fn new(owner: Box<dyn Send>, bytes: &[u8]) -> Shared {
        Shared {
            _owner: owner,
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` describe bytes that live, unchanged, as long as `_owner` (see new).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared({} bytes)", self.len)
    }
}

/// One piece of pending output.
#[derive(Debug)]
enum Segment {
    /// Bytes in memory; `sent` of them already went out.
    Mem { data: Vec<u8>, sent: usize },
    /// Bytes in memory that belong to someone else; `sent` of them already went out.
    Shared { data: Shared, sent: usize },
    /// A range of a file, sent with sendfile. `spill` marks our own temporary file (counted
    /// against the high watermark; a `file_wrapper` file is not).
    File {
        file: Arc<File>,
        offset: u64,
        end: u64,
        spill: bool,
    },
}

impl Segment {
    /// What is left to send of a piece in memory (None for a file range).
    fn unsent_memory(&self) -> Option<&[u8]> {
        match self {
            Segment::Mem { data, sent } => Some(&data[*sent..]),
            Segment::Shared { data, sent } => Some(&data.bytes()[*sent..]),
            Segment::File { .. } => None,
        }
    }
}

/// Where output goes when the socket cannot take it yet.
#[derive(Debug)]
pub struct OutBuf {
    segs: VecDeque<Segment>,
    /// Bytes held in memory.
    mem: usize,
    /// Bytes held in memory or in the spill file: what the high watermark is about.
    counted: u64,
    /// The spill file and how far it is written.
    spill: Option<(Arc<File>, u64)>,
    /// Memory beyond this goes to the spill file (`outbuf_overflow`).
    overflow: usize,
}

impl Default for OutBuf {
    fn default() -> Self {
        OutBuf::new(1_048_576)
    }
}

/// What the socket side of a flush needs: a descriptor to `sendfile` into and vectored writes.
pub trait Sink {
    fn raw_fd(&self) -> RawFd;
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl OutBuf {
    pub fn new(overflow: usize) -> OutBuf {
        OutBuf {
            segs: VecDeque::new(),
            mem: 0,
            counted: 0,
            spill: None,
            overflow,
        }
    }

    /// Pending bytes held by the server (memory and spill file), for the high watermark.
    pub fn held(&self) -> u64 {
        self.counted
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    pub fn clear(&mut self) {
        self.segs.clear();
        self.mem = 0;
        self.counted = 0;
        self.spill = None;
    }

    /// Queues a copy of `data`, in memory or, past `overflow`, in the spill file.
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.mem + data.len() <= self.overflow {
            self.mem += data.len();
            self.counted += data.len() as u64;
            if let Some(Segment::Mem { data: last, .. }) = self.segs.back_mut() {
                if last.len() + data.len() <= 64 * 1024 {
                    last.extend_from_slice(data);
                    return Ok(());
                }
            }
            self.segs.push_back(Segment::Mem {
                data: data.to_vec(),
                sent: 0,
            });
            return Ok(());
        }
        if self.spill.is_none() {
            self.spill = Some((Arc::new(tempfile::tempfile()?), 0));
        }
        let (file, at) = self.spill.as_mut().expect("spill file just made");
        file.write_all_at(data, *at)?;
        let start = *at;
        *at += data.len() as u64;
        let end = *at;
        self.counted += data.len() as u64;
        if let Some(Segment::File {
            file: f,
            end: last_end,
            spill: true,
            ..
        }) = self.segs.back_mut()
        {
            if Arc::ptr_eq(f, file) && *last_end == start {
                *last_end = end;
                return Ok(());
            }
        }
        self.segs.push_back(Segment::File {
            file: file.clone(),
            offset: start,
            end,
            spill: true,
        });
        Ok(())
    }

    /// Queues `data` from its byte `skip` on: kept by reference while the memory budget
    /// (`overflow`) allows, copied to the spill file past it.
    pub fn push_shared(&mut self, data: Shared, skip: usize) -> io::Result<()> {
        let len = data.len - skip;
        if len == 0 {
            return Ok(());
        }
        if self.mem + len > self.overflow {
            return self.push(&data.bytes()[skip..]);
        }
        self.mem += len;
        self.counted += len as u64;
        self.segs.push_back(Segment::Shared { data, sent: skip });
        Ok(())
    }

    /// Queues `len` bytes of `file` from `offset` (a `wsgi.file_wrapper` file).
    pub fn push_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if len > 0 {
            self.segs.push_back(Segment::File {
                file,
                offset,
                end: offset + len,
                spill: false,
            });
        }
    }

    /// Sends as much as the socket takes. `Ok(true)` when everything went out.
    pub fn flush_to<S: Sink + ?Sized>(&mut self, sink: &S) -> io::Result<bool> {
        while let Some(front) = self.segs.front_mut() {
            match front {
                Segment::Mem { .. } | Segment::Shared { .. } => {
                    let mut slices: [IoSlice<'_>; 16] = [IoSlice::new(&[]); 16];
                    let mut n = 0;
                    for seg in self.segs.iter() {
                        let Some(rest) = seg.unsent_memory() else { break };
                        slices[n] = IoSlice::new(rest);
                        n += 1;
                        if n == slices.len() {
                            break;
                        }
                    }
                    let written = match sink.write_vectored(&slices[..n]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(w) => w,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    self.consume_mem(written);
                }
                Segment::File {
                    file,
                    offset,
                    end,
                    spill,
                } => {
                    let count = (*end - *offset).min(1 << 30) as usize;
                    let mut off = *offset as libc::off_t;
                    // SAFETY: both descriptors are open for the duration of the call; `off` is
                    // a valid off_t that the kernel updates.
                    let r = unsafe { libc::sendfile(sink.raw_fd(), file.as_raw_fd(), &mut off, count) };
                    if r < 0 {
                        let e = io::Error::last_os_error();
                        match e.kind() {
                            io::ErrorKind::WouldBlock => return Ok(false),
                            io::ErrorKind::Interrupted => continue,
                            _ => return Err(e),
                        }
                    }
                    if r == 0 {
                        // The file is shorter than promised: nothing more can be sent.
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let sent = r as u64;
                    *offset += sent;
                    if *spill {
                        self.counted -= sent;
                    }
                    if *offset >= *end {
                        self.segs.pop_front();
                        if self.segs.is_empty() {
                            self.spill = None;
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    fn consume_mem(&mut self, mut written: usize) {
        self.mem -= written;
        self.counted -= written as u64;
        while written > 0 {
            let (len, sent) = match self.segs.front_mut() {
                Some(Segment::Mem { data, sent }) => (data.len(), sent),
                Some(Segment::Shared { data, sent }) => (data.len, sent),
                _ => break,
            };
            let left = len - *sent;
            if written >= left {
                written -= left;
                self.segs.pop_front();
            } else {
                *sent += written;
                written = 0;
            }
        }
        if self.segs.is_empty() {
            self.spill = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// A socket pair: writes go to `a`, the test reads from `b`.
    struct Pair {
        a: UnixStream,
        /// Bytes the sink accepts per vectored write (to exercise partial writes).
        limit: RefCell<usize>,
    }

    impl Sink for Pair {
        fn raw_fd(&self) -> RawFd {
            self.a.as_raw_fd()
        }
        fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let limit = *self.limit.borrow();
            let mut total = 0;
            let mut out = Vec::new();
            for b in bufs {
                let take = b.len().min(limit - total);
                out.extend_from_slice(&b[..take]);
                total += take;
                if total == limit {
                    break;
                }
            }
            use std::io::Write;
            (&self.a).write_all(&out)?;
            Ok(total)
        }
    }

    fn pair(limit: usize) -> (Pair, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            Pair {
                a,
                limit: RefCell::new(limit),
            },
            b,
        )
    }

    fn drain(b: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        b.read_exact(&mut v).unwrap();
        v
    }

    #[test]
    fn memory_then_spill_in_order() {
        let mut out = OutBuf::new(10);
        out.push(b"hello ").unwrap();
        out.push(b"big world, spilled").unwrap();
        out.push(b"!").unwrap();
        assert_eq!(out.held(), 25);
        assert!(out.mem <= 10);
        let (sink, mut b) = pair(4);
        assert!(out.flush_to(&sink).unwrap());
        assert!(out.is_empty() && out.held() == 0 && out.spill.is_none());
        assert_eq!(drain(&mut b, 25), b"hello big world, spilled!");
    }

    #[test]
    fn shared_bytes_are_sent_in_order_and_released_once_sent() {
        let owner = Arc::new(b"0123456789abcdef".to_vec());
        let mut out = OutBuf::new(1024);
        out.push(b"<").unwrap();
        // SAFETY: the Vec behind the Arc is never changed and lives as long as its clone.
        let shared = unsafe { Shared::new(Box::new(owner.clone()), &owner[..]) };
        out.push_shared(shared, 4).unwrap();
        out.push(b">").unwrap();
        assert_eq!(out.held(), 14);
        assert_eq!(Arc::strong_count(&owner), 2);
        let (sink, mut b) = pair(5);
        assert!(out.flush_to(&sink).unwrap());
        assert_eq!(drain(&mut b, 14), b"<456789abcdef>");
        assert!(out.is_empty() && out.held() == 0);
        assert_eq!(
            Arc::strong_count(&owner),
            1,
            "the owner is let go once its bytes are sent"
        );
    }

    #[test]
    fn shared_bytes_past_the_memory_budget_are_copied_to_the_spill_file() {
        let owner = Arc::new(vec![7u8; 64]);
        let mut out = OutBuf::new(16);
        // SAFETY: as above.
        let shared = unsafe { Shared::new(Box::new(owner.clone()), &owner[..]) };
        out.push_shared(shared, 0).unwrap();
        assert_eq!(Arc::strong_count(&owner), 1, "copied, not kept");
        assert!(out.mem == 0 && out.spill.is_some() && out.held() == 64);
        let (sink, mut b) = pair(1024);
        assert!(out.flush_to(&sink).unwrap());
        assert_eq!(drain(&mut b, 64), vec![7u8; 64]);
    }

    #[test]
    fn file_ranges_are_sent_but_not_counted() {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(b"0123456789", 0).unwrap();
        let mut out = OutBuf::new(1024);
        out.push(b"head:").unwrap();
        out.push_file(Arc::new(f), 3, 4);
        out.push(b":tail").unwrap();
        assert_eq!(out.held(), 10);
        let (sink, mut b) = pair(3);
        assert!(out.flush_to(&sink).unwrap());
        assert_eq!(drain(&mut b, 14), b"head:3456:tail");
    }

    #[test]
    fn short_file_is_an_error_not_a_loop() {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(b"abc", 0).unwrap();
        let mut out = OutBuf::new(1024);
        out.push_file(Arc::new(f), 0, 10);
        let (sink, _b) = pair(1024);
        assert!(out.flush_to(&sink).is_err());
    }
}
