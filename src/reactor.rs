//! The event loop: accepts connections, reads and parses requests, hands connections with work to
//! the worker pool, sends output the workers could not, and closes connections.

use std::collections::VecDeque;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::channel::{Conn, ConnState, Item};
use crate::http::{date, Limits, Request, RequestReader};
use crate::log::{Log, LOG_INFO, LOG_WARNING};
use crate::net::{set_connection_options, Listener, Peer, Stream};

/// Queued requests past which a connection's reading pauses until a worker catches up.
const MAX_QUEUED: usize = 32;
/// How often the loop runs its maintenance (retrying a failed accept) at the least.
pub const TICK: Duration = Duration::from_millis(100);
/// The longest wait for events while stopping (the drain deadline is checked between rounds).
const DRAIN_TICK: Duration = Duration::from_millis(10);
/// A read buffer larger than this is replaced by a fresh one once it is empty.
const MAX_IDLE_BUFFER: usize = 64 * 1024;
/// At the connection limit, a connection idle for at least this long (nothing in progress,
/// queued or unsent) is closed to make room for a client waiting to be accepted. Long enough
/// that a client's first request, or its next one on a connection in use, is not raced by the
/// close; short enough that nobody waits long for a connection that sits unused.
const EVICT_AFTER: Duration = Duration::from_millis(250);
/// Connections accepted from one listener in one round at the most; the rest wait for the next
/// round, so that a flood of new connections does not hold up the other connections' events.
const ACCEPT_BATCH: usize = 128;
const WAKER: Token = Token(usize::MAX);
/// The read end of Python's signal wakeup fd (see [`Reactor::watch_signals`]).
const SIGNAL: Token = Token(usize::MAX - 1);
const LISTENER_BASE: usize = usize::MAX / 2;

/// Settings for the loop, from the adjustments.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    pub limits: Limits,
    pub recv_bytes: usize,
    pub connection_limit: usize,
    pub channel_timeout: Duration,
    pub cleanup_interval: Duration,
    pub ident: Option<String>,
    pub outbuf_overflow: usize,
    /// How long a graceful stop waits for requests already received.
    pub shutdown_timeout: Duration,
}

/// Messages from workers (and `close()`) to the loop.
#[derive(Debug)]
enum Msg {
    /// The connection is finished: close it once its output is sent.
    Close(Arc<Conn>),
    /// Reading was paused; the queue has room again.
    Resume(Arc<Conn>),
}

/// The handle workers and other threads use to reach the loop.
#[derive(Debug)]
pub struct Notifier {
    msgs: Mutex<Vec<Msg>>,
    waker: Waker,
    /// A thread is (about to be) waiting for events in the loop.
    polling: AtomicBool,
    stop: AtomicBool,
    /// Stop now, without waiting for the requests in progress (a second Ctrl-C).
    abort: AtomicBool,
    /// The server is stopping: a connection whose request is done closes instead of idling.
    draining: AtomicBool,
    /// A signal arrived (Python's wakeup fd was written): its handler should run soon.
    signalled: AtomicBool,
    /// The loop's coarse clock: milliseconds from `epoch` to the start of its latest round's
    /// maintenance, for workers to stamp connections with at no cost.
    clock: AtomicU64,
    epoch: Instant,
}

impl Notifier {
    fn push(&self, msg: Msg) {
        self.msgs.lock().unwrap_or_else(|p| p.into_inner()).push(msg);
        // Whoever runs the loop next reads the message; wake it only if it is waiting now.
        if self.polling.load(Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }

    fn has_msgs(&self) -> bool {
        !self.msgs.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// Ask the loop to close `conn` once its output is sent.
    pub fn close(&self, conn: Arc<Conn>) {
        self.push(Msg::Close(conn));
    }

    /// Ask the loop to read from `conn` again.
    pub fn resume(&self, conn: Arc<Conn>) {
        self.push(Msg::Resume(conn));
    }

    /// Stop the server: no new connections, the requests already received finish (any thread).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Stop the server without waiting for the requests in progress (any thread).
    pub fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
        self.stop();
    }

    /// True once the server was told to stop without waiting for the requests in progress.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// True once a graceful stop has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// True once after a signal arrived: Python's handlers should run now, not at the next tick.
    pub fn take_signal(&self) -> bool {
        self.signalled.swap(false, Ordering::SeqCst)
    }

    /// A signal arrived and [`Notifier::take_signal`] has not been called since.
    pub fn signal_pending(&self) -> bool {
        self.signalled.load(Ordering::SeqCst)
    }

    /// The loop's coarse clock (as of its latest round; one atomic load). Never 0, which
    /// stands for "never" in a stamp.
    pub fn coarse_now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    fn set_clock(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.clock.store(ms + 1, Ordering::Relaxed);
    }

    fn coarse_instant(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_millis(stamp.saturating_sub(1))
    }
}

/// The loop's private per-connection data.
struct Entry {
    conn: Arc<Conn>,
    /// Read buffer; `rbuf[..filled]` holds unparsed bytes.
    rbuf: Vec<u8>,
    filled: usize,
    reader: RequestReader,
    /// Reading is over (EOF, error, or a parse error): further input is dropped.
    read_done: bool,
    paused: bool,
    last_activity: Instant,
}

impl Entry {
    /// After a successful read: whether to read this connection again in this round. Not after
    /// an error or with enough requests queued (reading pauses until a worker catches up), nor
    /// after a short read, which drained the socket (new data raises a new readiness edge),
    /// unless the edge carried a hang-up and everything up to it must be read now.
    fn keep_reading(&mut self, queued: usize, short_read: bool, to_the_end: bool) -> bool {
        if self.read_done || queued >= MAX_QUEUED {
            if !self.read_done {
                self.paused = true;
            }
            return false;
        }
        !short_read || to_the_end
    }

    /// If the connection is idle (no request in progress, nothing queued, unsent or owed, not
    /// closing), since when: its last read or flush, or when a worker last handed it back.
    fn idle_since(&self, notifier: &Notifier) -> Option<Instant> {
        if self.read_done || self.paused || self.filled > 0 || self.reader.in_body() || self.reader.is_failed() {
            return None;
        }
        let st = self.conn.lock();
        if st.busy
            || st.closed
            || st.close_after_flush
            || st.eof
            || st.error.is_some()
            || !st.queue.is_empty()
            || !st.out.is_empty()
        {
            return None;
        }
        match st.handed_back {
            0 => Some(self.last_activity),
            ms => Some(self.last_activity.max(notifier.coarse_instant(ms))),
        }
    }
}

/// The event loop and the connections it owns.
pub struct Reactor {
    poll: Poll,
    listeners: Vec<Listener>,
    /// For each listener: the server bound it, so stopping shuts it down (new connects are
    /// refused at once, whoever else holds its descriptor). A socket handed in by the caller
    /// (`sockets=`) may be shared with another process and is left alone.
    owned: Vec<bool>,
    /// Python's signal wakeup fd (read end), when the server watches signals.
    signal_fd: Option<RawFd>,
    conns: Vec<Option<Entry>>,
    free: Vec<usize>,
    open: usize,
    accepting: bool,
    notifier: Arc<Notifier>,
    log: Arc<dyn Log>,
    config: LoopConfig,
    /// Connections that became ready for a worker this round (handed over together).
    ready: Vec<Arc<Conn>>,
    /// Scratch space for the requests parsed from one read (reused; empty between reads).
    items: Vec<Item>,
    /// Served requests taken back from a connection, freed here (see `ConnState::spent`). Boxed
    /// as they were parsed: the box is one of the allocations to free on this thread.
    #[allow(clippy::vec_box)]
    spent: Vec<Box<Request>>,
    /// Set once stopping: the loop ends when every connection is done or at this instant.
    drain_deadline: Option<Instant>,
    /// accept() failed for lack of resources: retry on the next tick.
    accept_retry: bool,
    /// Accept again at the end of this round (the connection count dropped below the limit, or a
    /// batch was cut short); the round does not wait for events then.
    accept_resume: bool,
    /// At the limit, connections that a client waits for: idle ones, the idle longest last,
    /// found when room was first needed in an accept batch (and dropped at its end).
    idle: Vec<(Instant, usize)>,
    /// At the limit, a look found nothing to close: do not look again before the next tick.
    full: bool,
    /// The "reached the connection limit" warning was logged: the next drop below it says so.
    limit_warned: bool,
    /// Connections closed to make room since the last report (see `cleanup`).
    evicted: u64,
    /// How long a connection must have been idle to be closed to make room ([`EVICT_AFTER`]).
    evict_after: Duration,
    events: Events,
    /// Connections closed this round, whose sockets are let go at its end.
    closed: Vec<Arc<Conn>>,
    last_tick: Instant,
    last_cleanup: Instant,
    /// Test builds only: a request for exactly this path panics in the loop
    /// (`MAITRE_TEST_LOOP_PANIC_PATH`).
    #[cfg(feature = "test-hooks")]
    panic_path: Option<Vec<u8>>,
}

impl Reactor {
    /// `listeners`: each listening socket, and whether the server bound it itself (see
    /// [`Reactor::owned`]).
    pub fn new(listeners: Vec<(Listener, bool)>, log: Arc<dyn Log>, config: LoopConfig) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (mut listeners, owned): (Vec<Listener>, Vec<bool>) = listeners.into_iter().unzip();
        for (i, l) in listeners.iter_mut().enumerate() {
            let token = Token(LISTENER_BASE + i);
            match l {
                Listener::Tcp(l) => {
                    set_connection_options(l.as_raw_fd())?;
                    poll.registry().register(l, token, Interest::READABLE)?
                }
                Listener::Unix(l) => poll.registry().register(l, token, Interest::READABLE)?,
            }
        }
        Ok(Reactor {
            poll,
            listeners,
            owned,
            signal_fd: None,
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            accepting: true,
            notifier: Arc::new(Notifier {
                msgs: Mutex::new(Vec::new()),
                waker,
                polling: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                abort: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                signalled: AtomicBool::new(false),
                clock: AtomicU64::new(1),
                epoch: Instant::now(),
            }),
            log,
            config,
            ready: Vec::new(),
            items: Vec::new(),
            spent: Vec::new(),
            drain_deadline: None,
            accept_retry: false,
            accept_resume: false,
            idle: Vec::new(),
            full: false,
            limit_warned: false,
            evicted: 0,
            evict_after: EVICT_AFTER,
            events: Events::with_capacity(1024),
            closed: Vec::new(),
            last_tick: Instant::now(),
            last_cleanup: Instant::now(),
            #[cfg(feature = "test-hooks")]
            panic_path: std::env::var_os("MAITRE_TEST_LOOP_PANIC_PATH").map(|p| p.into_encoded_bytes()),
        })
    }

    pub fn notifier(&self) -> Arc<Notifier> {
        self.notifier.clone()
    }

    /// Watches `fd`, the read end of the descriptor Python's `signal.set_wakeup_fd` writes to
    /// when a signal arrives: the loop wakes and raises [`Notifier::take_signal`], so that the
    /// handler runs within a millisecond or two rather than at the next tick.
    pub fn watch_signals(&mut self, fd: RawFd) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), SIGNAL, Interest::READABLE)?;
        self.signal_fd = Some(fd);
        Ok(())
    }

    /// Empties the signal wakeup fd and tells whoever keeps watch.
    fn on_signal(&mut self) {
        if let Some(fd) = self.signal_fd {
            let mut sink = [0u8; 64];
            // SAFETY: reads into a local buffer from a descriptor the caller keeps open.
            while unsafe { libc::read(fd, sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
        }
        self.notifier.signalled.store(true, Ordering::SeqCst);
    }

    /// When a graceful stop gives up on the requests still in progress (None while serving).
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.drain_deadline
    }

    /// One round of the loop: waits up to `timeout` for events, handles them (accepting,
    /// reading, parsing, flushing, closing), runs the periodic maintenance, and leaves the
    /// connections that now have work for a worker in `ready` (see [`Reactor::take_ready`]).
    /// Returns `false` once the loop is over: stopped and drained, or aborted.
    pub fn round(&mut self, timeout: Duration) -> io::Result<bool> {
        let timeout = if self.drain_deadline.is_some() {
            timeout.min(DRAIN_TICK)
        } else {
            timeout
        };
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        // Workers wake the loop for their messages only while it waits for events; a message
        // queued before this point is seen here and the wait skipped.
        self.notifier.polling.store(true, Ordering::SeqCst);
        let timeout = if self.notifier.has_msgs() || self.accept_resume {
            Duration::ZERO
        } else {
            timeout
        };
        let polled = self.poll.poll(&mut events, Some(timeout));
        self.notifier.polling.store(false, Ordering::SeqCst);
        if let Err(e) = polled {
            self.events = events;
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            return Ok(true);
        }
        for ev in events.iter() {
            let token = ev.token();
            if token == WAKER {
                continue;
            }
            if token == SIGNAL {
                self.on_signal();
                continue;
            }
            if token.0 >= LISTENER_BASE {
                self.accept_all(token.0 - LISTENER_BASE);
                continue;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                // With a FIN or RST in this same edge, read to the end: no new edge will come.
                let to_the_end = ev.is_read_closed() || ev.is_error();
                self.on_readable(token.0, to_the_end);
            }
            if ev.is_writable() || ev.is_error() {
                self.on_writable(token.0);
            }
        }
        self.events = events;
        let res = self.after_events();
        self.release_closed();
        res
    }

    /// The rest of a round, after the events: messages, maintenance, stopping.
    fn after_events(&mut self) -> io::Result<bool> {
        self.drain_msgs();
        if std::mem::take(&mut self.accept_resume) {
            self.accept_every_listener();
        }
        if self.notifier.abort.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let now = Instant::now();
        self.notifier.set_clock(now);
        if now.duration_since(self.last_tick) >= TICK {
            self.last_tick = now;
            if self.accept_retry || !self.accepting {
                // A failed accept, or at the limit: whether a waiting client can be let in now.
                self.full = false;
                self.accept_every_listener();
            }
        }
        if self.notifier.stopping() && self.drain_deadline.is_none() {
            self.begin_drain(now);
        }
        if let Some(deadline) = self.drain_deadline {
            if self.open == 0 {
                return Ok(false);
            }
            if now >= deadline {
                self.abandon_in_progress();
                return Ok(false);
            }
        }
        if now.duration_since(self.last_cleanup) >= self.config.cleanup_interval {
            self.last_cleanup = now;
            self.cleanup(now);
        }
        Ok(true)
    }

    /// Moves the connections that became ready for a worker (their `busy` is set) to `to`.
    pub fn take_ready(&mut self, to: &mut VecDeque<Arc<Conn>>) {
        to.extend(self.ready.drain(..));
    }

    /// Graceful stop: accept nothing more (the listeners the server bound are shut down, so new
    /// connects are refused at once), close idle connections, let the requests already received
    /// finish (until `shutdown_timeout`), closing each connection once it is done.
    fn begin_drain(&mut self, now: Instant) {
        // Connections the kernel completed already were made before the stop: take them (what
        // they sent is served; one that sent nothing yet is closed below, like an idle one),
        // rather than leave them to be reset with the listener.
        if self.accepting {
            self.accept_every_listener();
        }
        self.drain_deadline = Some(now + self.config.shutdown_timeout);
        self.notifier.draining.store(true, Ordering::SeqCst);
        self.accepting = false;
        for (l, &owned) in self.listeners.iter_mut().zip(&self.owned) {
            let fd = match l {
                Listener::Tcp(l) => l.as_raw_fd(),
                Listener::Unix(l) => l.as_raw_fd(),
            };
            let _ = deregister(self.poll.registry(), fd);
            if owned {
                // On Linux, shutting down a listening socket closes it for every descriptor that
                // refers to it (Python's socket object, the engine's duplicates): further connects
                // are refused.
                // SAFETY: `fd` is a listening socket this loop owns a descriptor of.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
        }
        let mut in_progress = 0;
        for slot in 0..self.conns.len() {
            let Some(entry) = self.conns[slot].as_ref() else {
                continue;
            };
            let conn = entry.conn.clone();
            let st = conn.lock();
            in_progress += usize::from(st.busy) + st.queue.iter().filter(|i| matches!(i, Item::Request(_))).count();
            self.after_read(slot, st);
        }
        let secs = self.config.shutdown_timeout.as_secs_f64();
        self.log.log(
            LOG_INFO,
            &format!(
                "Shutting down: no longer accepting connections; {in_progress} request{} in progress \
                 (waiting up to {secs} s)",
                if in_progress == 1 { "" } else { "s" }
            ),
        );
    }

    /// The graceful stop's bound expired: names each request still running or waiting in a
    /// warning, and marks their connections abandoned (the loop closes them next).
    fn abandon_in_progress(&mut self) {
        let secs = self.config.shutdown_timeout.as_secs_f64();
        for entry in self.conns.iter().flatten() {
            let mut st = entry.conn.lock();
            let peer = &entry.conn.peer;
            if st.busy {
                st.abandoned = true;
                let what = if st.serving.is_empty() {
                    "a request".to_owned()
                } else {
                    st.serving.to_string()
                };
                self.log.log(
                    LOG_WARNING,
                    &format!(
                        "Shutdown timeout ({secs} s) expired: {what} from {}:{} was cut short",
                        peer.addr, peer.port
                    ),
                );
            }
            for item in &st.queue {
                if let Item::Request(r) = item {
                    let label = crate::channel::RequestLabel::new(&r.head.method, &r.head.request_uri);
                    self.log.log(
                        LOG_WARNING,
                        &format!(
                            "Shutdown timeout ({secs} s) expired: {label} from {}:{} was not served",
                            peer.addr, peer.port
                        ),
                    );
                }
            }
        }
    }

    /// Closes every connection and forgets the listeners (the caller closes their sockets).
    pub fn shutdown(&mut self) {
        for i in 0..self.conns.len() {
            self.close(i);
        }
        self.release_closed();
    }

    fn accept_every_listener(&mut self) {
        for i in 0..self.listeners.len() {
            self.accept_all(i);
        }
    }

    fn accept_all(&mut self, index: usize) {
        // The sockets of connections closed this round go first: never more open descriptors
        // than `connection_limit`.
        self.release_closed();
        let mut budget = ACCEPT_BATCH;
        loop {
            if budget == 0 {
                // The rest in the next round, after the other connections' events.
                self.accept_resume = true;
                break;
            }
            if !self.accepting {
                if !self.make_room(index) {
                    break;
                }
                self.release_closed();
            }
            budget -= 1;
            let accepted = match &self.listeners[index] {
                Listener::Tcp(l) => l.accept().map(|(s, addr)| {
                    // TCP_NODELAY and TCP_NOTSENT_LOWAT come from the listener.
                    (
                        Stream::Tcp(s),
                        Peer {
                            addr: addr.ip().to_string(),
                            port: addr.port().to_string(),
                        },
                    )
                }),
                Listener::Unix(l) => l.accept().map(|(s, _)| {
                    (
                        Stream::Unix(s),
                        Peer {
                            addr: "localhost".into(),
                            port: "None".into(),
                        },
                    )
                }),
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.accept_retry = false;
                    self.add_conn(stream, peer, index)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A client gone before accept() finished (CVE-2024-49769) or a transient error:
                // nothing was added; try the next one.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) => {}
                Err(e) => {
                    // EMFILE and friends: stop this round; the next tick retries (no new
                    // readiness edge comes for the connections already waiting). Logged once
                    // until an accept succeeds again.
                    if !std::mem::replace(&mut self.accept_retry, true) {
                        self.log
                            .log(LOG_WARNING, &format!("server accept() threw an exception: {e}"));
                    }
                    break;
                }
            }
        }
        self.idle.clear();
    }

    /// At the connection limit: if a client waits on listener `index`, closes the connection
    /// idle longest (for at least `evict_after`) to make room for it, as nginx reuses idle
    /// connections. Returns whether it did. With nothing to close, warns (once until the count
    /// drops below the limit again) and leaves the client waiting in the backlog; the next tick
    /// looks again.
    fn make_room(&mut self, index: usize) -> bool {
        if self.drain_deadline.is_some() || self.full || !has_pending(&self.listeners[index]) {
            return false;
        }
        let now = Instant::now();
        if self.idle.is_empty() {
            self.find_idle(now);
        }
        while let Some((_, slot)) = self.idle.pop() {
            // Still idle: a connection accepted into the same slot meanwhile is not.
            let still = self.conns[slot]
                .as_ref()
                .and_then(|e| e.idle_since(&self.notifier))
                .is_some_and(|since| now.saturating_duration_since(since) >= self.evict_after);
            if still {
                self.evicted += 1;
                self.close(slot);
                return true;
            }
        }
        self.full = true;
        if !self.limit_warned {
            self.limit_warned = true;
            self.log.log(
                LOG_WARNING,
                "total open connections reached the connection limit, no longer accepting new connections",
            );
        }
        false
    }

    /// Fills `idle` with the connections idle for at least `evict_after`, the idle longest last.
    fn find_idle(&mut self, now: Instant) {
        for (slot, entry) in self.conns.iter().enumerate() {
            let Some(since) = entry.as_ref().and_then(|e| e.idle_since(&self.notifier)) else {
                continue;
            };
            if now.saturating_duration_since(since) >= self.evict_after {
                self.idle.push((since, slot));
            }
        }
        self.idle.sort_unstable_by_key(|&(since, _)| std::cmp::Reverse(since));
    }

    fn add_conn(&mut self, stream: Stream, peer: Peer, listener: usize) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let token = Token(slot);
        let fd = stream.raw_fd();
        if self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            self.free.push(slot);
            return;
        }
        let conn = Arc::new(Conn::new(token, stream, peer, listener, self.config.outbuf_overflow));
        self.conns[slot] = Some(Entry {
            conn,
            rbuf: vec![0; self.config.recv_bytes.max(1024)],
            filled: 0,
            reader: RequestReader::new(self.config.limits.clone()),
            read_done: false,
            paused: false,
            last_activity: Instant::now(),
        });
        self.open += 1;
        if self.open >= self.config.connection_limit {
            // Until a connection closes, a client is accepted only if an idle one makes room
            // (`make_room`, which warns when none can).
            self.accepting = false;
        }
        // Data may already be waiting: edge-triggered readiness would not tell us again.
        self.on_readable(slot, true);
    }

    fn on_readable(&mut self, slot: usize, to_the_end: bool) {
        let recv_bytes = self.config.recv_bytes.max(1024);
        let Some(entry) = self.conns.get_mut(slot).and_then(|e| e.as_mut()) else {
            return;
        };
        if entry.paused {
            return;
        }
        let conn = entry.conn.clone();
        // The round's requests, in a buffer kept across calls.
        let mut items = std::mem::take(&mut self.items);
        let mut parse_error = None;
        let mut eof = false;
        let mut failed = false;
        loop {
            if entry.read_done {
                // Drain and drop whatever arrives after the connection is done with.
                let mut sink = [0u8; 4096];
                match conn.stream.read(&mut sink) {
                    Ok(0) => eof = true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => failed = true,
                }
                break;
            }
            if entry.filled == 0 {
                // A large body with nothing buffered ahead of it: read it straight into the
                // body's own buffer (one copy fewer, and reads as large as the body).
                let mut asked = 0;
                let direct = entry.reader.read_body(|buf, max| {
                    asked = max;
                    conn.stream.read_append(buf, max)
                });
                if let Some(res) = direct {
                    match res {
                        Ok((0, _)) => eof = true,
                        Ok((n, done)) => {
                            entry.last_activity = Instant::now();
                            if let Some(crate::http::Event::Request(r)) = done {
                                items.push(Item::Request(r));
                            } else if let Some(crate::http::Event::Error(e)) = done {
                                parse_error = Some(e);
                                entry.read_done = true;
                            }
                            if entry.keep_reading(items.len(), n < asked, to_the_end) {
                                continue;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => failed = true,
                    }
                    break;
                }
            }
            // The buffer is allocated (and zeroed) once; `filled` says how much holds data.
            if entry.rbuf.len() - entry.filled < recv_bytes {
                let want = entry.filled + recv_bytes;
                entry.rbuf.resize(want, 0);
            }
            let room = entry.rbuf.len() - entry.filled;
            let res = conn.stream.read(&mut entry.rbuf[entry.filled..]);
            let n = match res {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            };
            entry.filled += n;
            entry.last_activity = Instant::now();
            // Parse every complete request in the buffer.
            let mut pos = 0;
            loop {
                let (used, ev) = entry.reader.feed(&entry.rbuf[pos..entry.filled]);
                pos += used;
                match ev {
                    crate::http::Event::NeedMore => break,
                    crate::http::Event::ExpectContinue => items.push(Item::Continue),
                    crate::http::Event::Request(r) => items.push(Item::Request(r)),
                    crate::http::Event::Error(e) => {
                        parse_error = Some(e);
                        entry.read_done = true;
                        break;
                    }
                }
            }
            if pos == entry.filled {
                entry.filled = 0;
                if entry.rbuf.len() > MAX_IDLE_BUFFER {
                    // A big head or pipeline grew it; give the memory back.
                    entry.rbuf = vec![0; recv_bytes];
                }
            } else if pos > 0 {
                entry.rbuf.copy_within(pos..entry.filled, 0);
                entry.filled -= pos;
            }
            if !entry.keep_reading(items.len(), n < room, to_the_end) {
                break;
            }
        }
        if eof || failed {
            entry.read_done = true;
        }
        #[cfg(feature = "test-hooks")]
        if let Some(path) = &self.panic_path {
            if items
                .iter()
                .any(|i| matches!(i, Item::Request(r) if &r.head.path == path))
            {
                panic!("injected by MAITRE_TEST_LOOP_PANIC_PATH");
            }
        }
        let paused = entry.paused;
        let mut st = conn.lock();
        // Take back the requests served since the last read, to free them on this thread.
        std::mem::swap(&mut st.spent, &mut self.spent);
        if failed {
            st.closed = true;
            st.out.clear();
            // A worker blocked at the high watermark must learn the client is gone.
            conn.drained.notify_all();
        }
        if eof {
            st.eof = true;
        }
        if paused {
            st.read_paused = true;
        }
        if !(st.close_after_flush || st.closed) {
            // As Waitress: `100 Continue` only when no earlier request is pending on the
            // connection (a running or queued one); the client then just sends its body.
            let mut pending = st.busy || !st.queue.is_empty();
            for item in items.drain(..) {
                match item {
                    Item::Continue if pending => continue,
                    Item::Request(_) => pending = true,
                    Item::Continue => {}
                }
                st.queue.push_back(item);
            }
            if parse_error.is_some() {
                st.error = parse_error;
            }
        }
        items.clear();
        self.items = items;
        self.after_read(slot, st);
        self.spent.clear();
    }

    /// Decides what a connection needs after its state changed on the loop thread.
    fn after_read(&mut self, slot: usize, mut st: std::sync::MutexGuard<'_, ConnState>) {
        let Some(entry) = self.conns.get(slot).and_then(|e| e.as_ref()) else {
            return;
        };
        let conn = entry.conn.clone();
        if st.busy {
            return;
        }
        if st.closed {
            drop(st);
            self.close(slot);
            return;
        }
        if !st.close_after_flush && !st.queue.is_empty() {
            st.busy = true;
            drop(st);
            self.ready.push(conn);
            return;
        }
        if !st.close_after_flush {
            if let Some(err) = st.error.take() {
                // Nothing ahead of it: answer the parse error here, no worker needed.
                let bytes = err.to_response(self.config.ident.as_deref(), date::http_date().as_str());
                st.close_after_flush = true;
                st.queue.clear();
                st = match conn.send(st, &[&bytes]) {
                    Ok(st) => st,
                    Err(_) => {
                        self.close(slot);
                        return;
                    }
                };
            } else if st.eof || self.drain_deadline.is_some() {
                // The peer is done, or the server is stopping: nothing more will be served.
                st.close_after_flush = true;
            }
        }
        if st.close_after_flush && st.out.is_empty() {
            drop(st);
            self.close(slot);
        }
    }

    fn on_writable(&mut self, slot: usize) {
        let Some(entry) = self.conns.get(slot).and_then(|e| e.as_ref()) else {
            return;
        };
        let conn = entry.conn.clone();
        let mut st = conn.lock();
        if st.out.is_empty() {
            return;
        }
        match st.out.flush_to(&conn.stream) {
            Ok(_) => {}
            Err(_) => {
                st.closed = true;
                st.out.clear();
            }
        }
        conn.drained.notify_all();
        if let Some(e) = self.conns[slot].as_mut() {
            e.last_activity = Instant::now();
        }
        self.after_read(slot, st);
    }

    fn drain_msgs(&mut self) {
        let msgs = std::mem::take(&mut *self.notifier.msgs.lock().unwrap_or_else(|p| p.into_inner()));
        for msg in msgs {
            let (conn, resume) = match msg {
                Msg::Close(c) => (c, false),
                Msg::Resume(c) => (c, true),
            };
            let slot = conn.token.0;
            let same = matches!(self.conns.get(slot), Some(Some(e)) if Arc::ptr_eq(&e.conn, &conn));
            if !same {
                continue;
            }
            if resume {
                if let Some(e) = self.conns[slot].as_mut() {
                    e.paused = false;
                    e.last_activity = Instant::now();
                }
                self.on_readable(slot, true);
            } else {
                let st = conn.lock();
                if let Some(e) = self.conns[slot].as_mut() {
                    e.last_activity = Instant::now();
                }
                self.after_read(slot, st);
            }
        }
    }

    /// Closes connections idle for longer than `channel_timeout`; reports the connections closed
    /// to make room at the connection limit since the last time.
    fn cleanup(&mut self, now: Instant) {
        if self.evicted > 0 {
            let n = std::mem::take(&mut self.evicted);
            self.log.log(
                LOG_INFO,
                &format!("connection limit reached: closed {n} idle connection(s) to accept new ones"),
            );
        }
        let timeout = self.config.channel_timeout;
        for slot in 0..self.conns.len() {
            let idle = match &self.conns[slot] {
                Some(e) => {
                    let st = e.conn.lock();
                    !st.busy && st.queue.is_empty() && now.duration_since(e.last_activity) > timeout
                }
                None => false,
            };
            if idle {
                self.close(slot);
            }
        }
    }

    fn close(&mut self, slot: usize) {
        let Some(entry) = self.conns.get_mut(slot).and_then(|e| e.take()) else {
            return;
        };
        {
            let mut st = entry.conn.lock();
            st.closed = true;
            st.queue.clear();
            st.out.clear();
        }
        entry.conn.drained.notify_all();
        // The socket itself goes at the end of the round (see `release_closed`).
        self.closed.push(entry.conn);
        self.free.push(slot);
        self.open -= 1;
        if !self.accepting && self.drain_deadline.is_none() && self.open < self.config.connection_limit {
            self.accepting = true;
            if std::mem::take(&mut self.limit_warned) {
                self.log.log(
                    LOG_INFO,
                    "total open connections dropped below the connection limit, listening again",
                );
            }
            // Accept from the loop, not from here: accepting can close a dead connection,
            // which would come back here (unbounded recursion under a connect/RST storm).
            self.accept_resume = true;
        }
    }

    /// Lets go of the connections closed this round. One that nobody else holds any more is
    /// dropped, which closes its socket (and so takes it out of epoll): one system call. One that a
    /// worker still holds is taken out of epoll and shut down, so that the worker's next write
    /// fails; its descriptor is closed when the worker lets go.
    fn release_closed(&mut self) {
        for conn in self.closed.drain(..) {
            if let Err(conn) = Arc::try_unwrap(conn) {
                let _ = deregister(self.poll.registry(), conn.stream.raw_fd());
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Whether a client waits in `listener`'s backlog (poll(2) with no wait; POLLIN on a listening
/// socket means accept() would not block).
fn has_pending(listener: &Listener) -> bool {
    let fd = match listener {
        Listener::Tcp(l) => l.as_raw_fd(),
        Listener::Unix(l) => l.as_raw_fd(),
    };
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLIN != 0
}

fn deregister(registry: &Registry, fd: RawFd) -> io::Result<()> {
    registry.deregister(&mut SourceFd(&fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// Log lines, kept for the tests to look at.
    #[derive(Default)]
    struct Lines(Mutex<Vec<(u8, String)>>);

    impl Log for Lines {
        fn log(&self, level: u8, msg: &str) {
            self.0.lock().unwrap().push((level, msg.to_string()));
        }
    }

    impl Lines {
        fn count(&self, level: u8, part: &str) -> usize {
            let lines = self.0.lock().unwrap();
            lines.iter().filter(|(l, m)| *l == level && m.contains(part)).count()
        }
    }

    /// A reactor on a loopback listener with room for `limit` connections.
    fn reactor(limit: usize) -> (Reactor, Arc<Lines>, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Lines::default());
        let config = LoopConfig {
            limits: Limits::default(),
            recv_bytes: 8192,
            connection_limit: limit,
            channel_timeout: Duration::from_secs(60),
            cleanup_interval: Duration::from_secs(60),
            ident: None,
            outbuf_overflow: 1 << 20,
            shutdown_timeout: Duration::from_secs(1),
        };
        let listeners = vec![(Listener::Tcp(mio::net::TcpListener::from_std(listener)), true)];
        let reactor = Reactor::new(listeners, lines.clone(), config).unwrap();
        (reactor, lines, addr)
    }

    /// Runs rounds until `done` (at most 2 s).
    fn rounds_until(r: &mut Reactor, mut done: impl FnMut(&Reactor) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !done(r) {
            assert!(Instant::now() < deadline, "condition not reached");
            r.round(Duration::from_millis(10)).unwrap();
        }
    }

    /// Runs a round as if the tick were due (when the loop looks again at the limit).
    fn tick(r: &mut Reactor) {
        r.last_tick = Instant::now() - TICK;
        r.round(Duration::from_millis(10)).unwrap();
    }

    /// Connects a client and runs the loop until it is accepted; returns it with its slot.
    fn connect(r: &mut Reactor, addr: std::net::SocketAddr) -> (TcpStream, usize) {
        let before = r.open;
        let client = TcpStream::connect(addr).unwrap();
        rounds_until(r, |r| r.open > before);
        let peer = client.local_addr().unwrap().port().to_string();
        let slot = (0..r.conns.len())
            .find(|&s| r.conns[s].as_ref().is_some_and(|e| e.conn.peer.port == peer))
            .unwrap();
        // Past the writable edge of its registration.
        r.round(Duration::from_millis(5)).unwrap();
        (client, slot)
    }

    /// Makes the connection in `slot` look idle for the last `secs` seconds.
    fn idle_for(r: &mut Reactor, slot: usize, secs: f64) {
        let e = r.conns[slot].as_mut().unwrap();
        e.last_activity = Instant::now() - Duration::from_secs_f64(secs);
    }

    /// Whether the server closed the client's connection: EOF or a reset within 1 s, where an
    /// open connection times out.
    fn closed_by_server(client: &mut TcpStream) -> bool {
        use std::io::Read;
        client.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        match client.read(&mut [0u8; 16]) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    /// Whether the server still holds the client's connection open (nothing to read, no EOF).
    fn open(client: &mut TcpStream) -> bool {
        use std::io::Read;
        client.set_nonblocking(true).unwrap();
        let res = client.read(&mut [0u8; 1]);
        client.set_nonblocking(false).unwrap();
        matches!(res, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    #[test]
    fn at_the_limit_the_connection_idle_longest_makes_room() {
        let (mut r, lines, addr) = reactor(3);
        let (mut a, a_slot) = connect(&mut r, addr);
        let (mut b, b_slot) = connect(&mut r, addr);
        let (mut c, c_slot) = connect(&mut r, addr);
        idle_for(&mut r, a_slot, 5.0);
        idle_for(&mut r, b_slot, 9.0);
        idle_for(&mut r, c_slot, 7.0);
        // Nobody waits: nothing is closed, even when the loop looks on a tick.
        tick(&mut r);
        assert_eq!((r.open, r.evicted), (3, 0));
        // A fourth client: b, idle longest, is closed and the newcomer accepted in its place.
        let mut d = TcpStream::connect(addr).unwrap();
        rounds_until(&mut r, |r| r.evicted == 1);
        assert_eq!(r.open, 3);
        assert!(closed_by_server(&mut b));
        assert!(open(&mut a) && open(&mut c) && open(&mut d));
        // Then c, idle longer than a.
        let _e = TcpStream::connect(addr).unwrap();
        rounds_until(&mut r, |r| r.evicted == 2);
        assert!(closed_by_server(&mut c));
        assert!(open(&mut a) && open(&mut d));
        assert_eq!(
            lines.count(LOG_WARNING, "connection limit"),
            0,
            "room was made: no warning"
        );
    }

    #[test]
    fn a_connection_a_worker_just_handed_back_is_not_idle() {
        let (mut r, _lines, addr) = reactor(2);
        let (mut a, a_slot) = connect(&mut r, addr);
        let (mut b, b_slot) = connect(&mut r, addr);
        // a was last read from 10 s ago, but a worker finished answering it just now.
        idle_for(&mut r, a_slot, 10.0);
        idle_for(&mut r, b_slot, 2.0);
        r.notifier.set_clock(Instant::now());
        r.conns[a_slot].as_ref().unwrap().conn.lock().handed_back = r.notifier.coarse_now();
        let _c = TcpStream::connect(addr).unwrap();
        rounds_until(&mut r, |r| r.evicted == 1);
        assert!(closed_by_server(&mut b));
        assert!(open(&mut a));
    }

    #[test]
    fn connections_with_work_are_never_closed_to_make_room() {
        use std::io::Write;
        let (mut r, lines, addr) = reactor(4);
        r.evict_after = Duration::from_secs(10);
        // A partial request; a complete one (with a worker); output the socket has not taken
        // yet; and a connection idle for less than `evict_after` (10 s here).
        let (mut partial, p) = connect(&mut r, addr);
        partial.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
        rounds_until(&mut r, |r| r.conns[p].as_ref().unwrap().filled > 0);
        let (mut full, f) = connect(&mut r, addr);
        full.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        rounds_until(&mut r, |r| !r.ready.is_empty());
        let mut work = VecDeque::new();
        r.take_ready(&mut work);
        let (mut unsent, u) = connect(&mut r, addr);
        r.conns[u]
            .as_ref()
            .unwrap()
            .conn
            .lock()
            .out
            .push(b"not sent yet")
            .unwrap();
        let (mut recent, _) = connect(&mut r, addr);
        for slot in [p, f, u] {
            idle_for(&mut r, slot, 30.0);
        }
        // A fifth client waits: nobody can make room. Warned once, however often the loop looks.
        let mut waiting = TcpStream::connect(addr).unwrap();
        for _ in 0..3 {
            tick(&mut r);
        }
        assert_eq!((r.open, r.evicted), (4, 0));
        assert!(open(&mut partial) && open(&mut full) && open(&mut unsent) && open(&mut recent));
        assert!(open(&mut waiting), "not accepted, so not answered either");
        assert_eq!(lines.count(LOG_WARNING, "reached the connection limit"), 1);
        // Once that output is gone (here: dropped), its connection is idle and makes room.
        r.conns[u].as_ref().unwrap().conn.lock().out.clear();
        tick(&mut r);
        assert_eq!((r.open, r.evicted), (4, 1));
        assert!(closed_by_server(&mut unsent));
        assert!(open(&mut partial) && open(&mut full) && open(&mut recent));
        assert_eq!(lines.count(LOG_INFO, "dropped below the connection limit"), 1);
    }
}
