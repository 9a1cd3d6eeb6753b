//! One client connection: the state shared by the event loop and the worker serving it.
//!
//! The event loop reads and parses; complete requests are queued here. At most one worker at a
//! time serves a connection's queue (so responses go out in request order). The worker writes
//! straight to the non-blocking socket; whatever the socket does not take waits in `out` and the
//! event loop sends it when the socket becomes writable.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use mio::Token;

use crate::buffers::{OutBuf, Shared, Sink, SHARE_MIN};
use crate::http::{HttpError, Request};
use crate::net::{set_tcp_option, Peer, Stream, NOTSENT_LOWAT};

/// Output of a connection goes to its socket.
impl Sink for Stream {
    fn raw_fd(&self) -> RawFd {
        Stream::raw_fd(self)
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Stream::write_vectored(self, bufs)
    }
}

/// An item of a connection's queue, served in order.
#[derive(Debug)]
pub enum Item {
    /// A complete request for the app.
    Request(Box<Request>),
    /// `HTTP/1.1 100 Continue` owed to the client before the request that follows.
    Continue,
}

/// The mutable part of a connection, behind its lock.
#[derive(Debug)]
pub struct ConnState {
    /// Parsed requests not yet served.
    pub queue: VecDeque<Item>,
    /// A parse error to answer once the queue is served; nothing after it is served.
    pub error: Option<HttpError>,
    /// A worker owns the queue right now.
    pub busy: bool,
    /// Output the socket has not taken yet.
    pub out: OutBuf,
    /// Bytes handed to `send` so far (sent or queued): tells whether a response has started.
    pub produced: u64,
    /// Close once `out` is empty; nothing more is read or served.
    pub close_after_flush: bool,
    /// The socket is gone (peer closed or an I/O error): writes fail, the app may stop.
    pub closed: bool,
    /// The peer sent EOF.
    pub eof: bool,
    /// The event loop stopped reading because enough is queued; a worker must ask it to resume.
    pub read_paused: bool,
    /// Requests served, handed back so that the event loop frees them: their memory was
    /// allocated on its thread, and malloc serves a thread's own frees from a per-thread cache
    /// (a free on another thread takes the slow, locked path, and so does the next allocation).
    #[allow(clippy::vec_box)]
    pub spent: Vec<Box<Request>>,
    /// TCP_NOTSENT_LOWAT is in force on the socket (see `Conn::set_paced`).
    pub paced: bool,
    /// The request a worker is serving now (for the shutdown log); set while `busy`.
    pub serving: RequestLabel,
    /// The server gave up on the request in progress (the shutdown bound expired) and closed the
    /// connection: the worker's failing writes are not a client disconnect.
    pub abandoned: bool,
    /// When a worker last handed the connection back, on the loop's coarse clock
    /// ([`crate::reactor::Notifier::coarse_now`]; 0: never): how long it has been idle since.
    pub handed_back: u64,
}

/// `METHOD target` of a request, kept without allocating (the target cut at a fixed length), to
/// name it in log lines written while the request's own head is out of reach (with a worker).
#[derive(Clone, Copy)]
pub struct RequestLabel {
    len: u8,
    buf: [u8; RequestLabel::CAP],
}

impl RequestLabel {
    const CAP: usize = 128;

    pub const EMPTY: RequestLabel = RequestLabel {
        len: 0,
        buf: [0; RequestLabel::CAP],
    };

    /// `method request_target`, cut at [`RequestLabel::CAP`] bytes (`...` marks a cut).
    pub fn new(method: &str, target: &[u8]) -> RequestLabel {
        let mut label = RequestLabel::EMPTY;
        label.set(method, target);
        label
    }

    /// Makes this the label of `method target`, in place (only the label's bytes are written).
    pub fn set(&mut self, method: &str, target: &[u8]) {
        let mut n = 0;
        for part in [method.as_bytes(), b" ", target] {
            let take = part.len().min(Self::CAP - n);
            self.buf[n..n + take].copy_from_slice(&part[..take]);
            n += take;
        }
        if n == Self::CAP && method.len() + 1 + target.len() > Self::CAP {
            self.buf[Self::CAP - 3..].copy_from_slice(b"...");
        }
        self.len = n as u8;
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Display for RequestLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Request targets are ASCII (the parser refuses anything else in a request line); a
        // lossy conversion keeps this total all the same.
        f.write_str(&String::from_utf8_lossy(&self.buf[..self.len as usize]))
    }
}

impl std::fmt::Debug for RequestLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestLabel({self})")
    }
}

/// A connection, shared between the event loop and a worker.
#[derive(Debug)]
pub struct Conn {
    pub token: Token,
    pub stream: Stream,
    pub peer: Peer,
    /// Index of the listener that accepted it (for SERVER_PORT).
    pub listener: usize,
    pub state: Mutex<ConnState>,
    /// Signalled when output drains or the connection dies (for a worker over the high watermark).
    pub drained: Condvar,
    pub created: Instant,
    /// What the layer above keeps for the connection's whole life, made by its first request
    /// (the WSGI layer keeps the Python objects that are the same for every request on it).
    /// Opaque here: a connection knows nothing of Python.
    pub ext: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

/// Which of the parts of a send belongs to an object that can be kept instead of copied, and
/// how to keep it: given the part's bytes, a [`Shared`] that holds their owner.
pub type Keep<'k> = Option<(usize, &'k dyn Fn(&[u8]) -> Shared)>;

/// A single write at least this large is handed to the kernel whole (TCP_NOTSENT_LOWAT off).
const WHOLE_WRITE: usize = 256 * 1024;

/// Why a worker's write did not go out.
#[derive(Debug)]
pub struct Disconnected;

impl Conn {
    pub fn new(token: Token, stream: Stream, peer: Peer, listener: usize, outbuf_overflow: usize) -> Conn {
        Conn {
            token,
            stream,
            peer,
            listener,
            state: Mutex::new(ConnState {
                queue: VecDeque::new(),
                error: None,
                busy: false,
                out: OutBuf::new(outbuf_overflow),
                produced: 0,
                close_after_flush: false,
                closed: false,
                eof: false,
                read_paused: false,
                spent: Vec::new(),
                paced: true,
                serving: RequestLabel::EMPTY,
                abandoned: false,
                handed_back: 0,
            }),
            drained: Condvar::new(),
            created: Instant::now(),
            ext: std::sync::OnceLock::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `parts` in order: straight to the socket when nothing is pending, queued otherwise.
    /// Returns the state lock so the caller can decide what follows atomically.
    pub fn send<'a>(
        &self,
        st: MutexGuard<'a, ConnState>,
        parts: &[&[u8]],
    ) -> Result<MutexGuard<'a, ConnState>, Disconnected> {
        self.send_keeping(st, parts, None)
    }

    /// [`Conn::send`], where the part at `keep.0` belongs to an object that `keep.1` can hold
    /// on to: if that part has to wait, it is queued by reference (no copy) when it is large.
    pub fn send_keeping<'a>(
        &self,
        mut st: MutexGuard<'a, ConnState>,
        parts: &[&[u8]],
        keep: Keep<'_>,
    ) -> Result<MutexGuard<'a, ConnState>, Disconnected> {
        if st.closed {
            return Err(Disconnected);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return Ok(st);
        }
        st.produced += total as u64;
        let mut sent = 0usize;
        if !st.out.is_empty() && st.out.flush_to(&self.stream).is_err() {
            // Output from earlier is still pending: push it on first (the socket may have room).
            st.closed = true;
            st.out.clear();
            return Err(Disconnected);
        }
        if st.out.is_empty() {
            self.set_paced(&mut st, total < WHOLE_WRITE);
            // Responses come in a few parts (head, chunk line, data, CRLF): no allocation.
            let mut slices = [IoSlice::new(&[]); 8];
            let mut count = 0;
            for p in parts.iter().filter(|p| !p.is_empty()).take(slices.len()) {
                slices[count] = IoSlice::new(p);
                count += 1;
            }
            loop {
                match self.stream.write_vectored(&slices[..count]) {
                    Ok(n) => {
                        sent = n;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        st.closed = true;
                        return Err(Disconnected);
                    }
                }
            }
        }
        if sent < total {
            // Queue what the socket did not take (memory, then the spill file).
            let mut skip = sent;
            for (i, p) in parts.iter().enumerate() {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                let queued = match keep {
                    Some((at, hold)) if at == i && p.len() - skip >= SHARE_MIN => st.out.push_shared(hold(p), skip),
                    _ => st.out.push(&p[skip..]),
                };
                if queued.is_err() {
                    st.closed = true;
                    return Err(Disconnected);
                }
                skip = 0;
            }
        }
        Ok(st)
    }

    /// Sends `len` bytes of `file` from `offset` with sendfile: straight to the socket when
    /// nothing is pending, the rest left to the event loop.
    pub fn send_file<'a>(
        &self,
        mut st: MutexGuard<'a, ConnState>,
        file: Arc<File>,
        offset: u64,
        len: u64,
    ) -> Result<MutexGuard<'a, ConnState>, Disconnected> {
        if st.closed {
            return Err(Disconnected);
        }
        st.produced += len;
        let was_empty = st.out.is_empty();
        st.out.push_file(file, offset, len);
        if was_empty {
            // Nothing ahead of it: start sending now.
            self.set_paced(&mut st, true);
            if st.out.flush_to(&self.stream).is_err() {
                st.closed = true;
                return Err(Disconnected);
            }
        }
        Ok(st)
    }

    /// Turns TCP_NOTSENT_LOWAT on or off (TCP only; a no-op when already so). On, the kernel
    /// takes output only while little of it waits for the peer's window, and the rest waits in
    /// `out`: output produced piece by piece (a generator, a file) goes out as it is written,
    /// the server doing the work of sending it. Off, a large block already in memory is handed
    /// to the kernel whole, in one call.
    fn set_paced(&self, st: &mut ConnState, on: bool) {
        if st.paced == on {
            return;
        }
        if let Stream::Tcp(s) = &self.stream {
            // 0 is the system default: no limit unless the administrator set one. A failure
            // changes nothing that matters (the socket may be gone already).
            let _ = set_tcp_option(
                s.as_raw_fd(),
                libc::TCP_NOTSENT_LOWAT,
                if on { NOTSENT_LOWAT } else { 0 },
            );
        }
        st.paced = on;
    }

    /// Blocks (the caller must not hold the GIL) while more than `limit` bytes are pending.
    pub fn wait_below<'a>(
        &self,
        mut st: MutexGuard<'a, ConnState>,
        limit: usize,
    ) -> Result<MutexGuard<'a, ConnState>, Disconnected> {
        while st.out.held() > limit as u64 && !st.closed {
            st = self.drained.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.closed {
            Err(Disconnected)
        } else {
            Ok(st)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn notsent_lowat(fd: RawFd) -> libc::c_int {
        crate::net::tcp_option(fd, libc::TCP_NOTSENT_LOWAT)
    }

    /// A connection accepted from a listener with maitre's options, and the client's end.
    fn connection() -> (Conn, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        crate::net::set_connection_options(listener.as_raw_fd()).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let peer = Peer {
            addr: "127.0.0.1".into(),
            port: "1".into(),
        };
        let conn = Conn::new(
            Token(0),
            Stream::Tcp(mio::net::TcpStream::from_std(accepted)),
            peer,
            0,
            1 << 20,
        );
        (conn, client)
    }

    #[test]
    fn a_request_label_is_cut_at_its_capacity() {
        assert_eq!(RequestLabel::new("GET", b"/slow?x=1").to_string(), "GET /slow?x=1");
        assert!(RequestLabel::EMPTY.is_empty());
        let long = vec![b'a'; 500];
        let label = RequestLabel::new("POST", &long).to_string();
        assert_eq!(label.len(), RequestLabel::CAP);
        assert!(label.starts_with("POST aaa") && label.ends_with("a..."), "{label}");
        // Exactly the capacity: nothing is cut, no ellipsis.
        let exact = vec![b'b'; RequestLabel::CAP - 4];
        assert!(!RequestLabel::new("GET", &exact).to_string().ends_with("..."));
    }

    #[test]
    fn a_large_block_goes_to_the_kernel_whole_and_pieces_are_paced() {
        let (conn, mut client) = connection();
        let fd = conn.stream.raw_fd();
        assert_eq!(notsent_lowat(fd), NOTSENT_LOWAT);
        let big = vec![b'x'; WHOLE_WRITE];
        drop(conn.send(conn.lock(), &[&big]).unwrap());
        assert_eq!(notsent_lowat(fd), 0, "off for a block of WHOLE_WRITE bytes");
        // Read it all, flushing what waits, as the event loop would.
        let mut got = 0;
        let mut buf = vec![0; 64 * 1024];
        while got < WHOLE_WRITE {
            let mut st = conn.lock();
            assert!(st.out.flush_to(&conn.stream).is_ok());
            drop(st);
            got += client.read(&mut buf).unwrap();
        }
        assert!(conn.lock().out.is_empty());
        // A small write with nothing pending turns pacing back on.
        drop(conn.send(conn.lock(), &[b"small"]).unwrap());
        assert_eq!(notsent_lowat(fd), NOTSENT_LOWAT);
        client.read_exact(&mut buf[..5]).unwrap();
        assert_eq!(&buf[..5], b"small");
    }
}
