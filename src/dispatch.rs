//! The worker pool (`threads`) and who runs the event loop.
//!
//! The event loop ([`Reactor`]) belongs to no thread. A worker with nothing to serve takes it and
//! runs rounds of it (without the GIL) until a round leaves connections with work; it puts the
//! loop back and serves that work itself, under the GIL, then goes back to the loop. On a busy
//! server one worker thus reads, runs the app and writes back to back, as a single-threaded
//! server would: no hand-off between threads, no context switch per batch of requests.
//!
//! The other workers wait. The main thread ([`Pool::supervise`]) keeps watch: it handles Python's
//! signals, and when no request has finished for [`HELP_AFTER`] (the app is slow or blocked) it
//! lets an idle worker take queued work or the loop, or runs the loop itself when every worker is
//! in the app. So a slow request never holds up other connections, reading, accepting, timeouts,
//! or the noticing of a client that went away.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::channel::{Conn, ConnState, Disconnected, Item};
use crate::http::date;
use crate::log::{Log, LOG_ERROR};
use crate::reactor::{Notifier, Reactor, TICK};
use crate::wsgi::{self, Ctx, Outcome};

/// Resume a paused connection once its queue is this short.
const RESUME_BELOW: usize = 16;
/// How long the pool may go without finishing a request before the watch steps in.
const HELP_AFTER: Duration = Duration::from_millis(2);

/// What the pool's threads share, behind one lock.
struct State {
    /// Connections with work, waiting for a worker.
    queue: VecDeque<Arc<Conn>>,
    /// The event loop; `None` while a thread runs a round of it.
    reactor: Option<Box<Reactor>>,
    /// Workers running the app (or about to).
    active: usize,
    /// Workers waiting on `Pool::idle`.
    idle: usize,
    /// No request finished for a while: the next idle worker may take queued work even though
    /// another one is active.
    help: bool,
    /// The loop is over (stopped and drained, or failed): workers exit.
    finished: bool,
    /// The watch is in its long (idle) wait: a worker starting on work wakes it.
    watch_idle: bool,
}

/// The worker pool.
pub struct Pool {
    state: Mutex<State>,
    /// Idle workers wait here.
    idle: Condvar,
    /// The supervisor (main thread) waits here.
    watch: Condvar,
    /// Requests finished so far (how the watch tells a busy pool from a stuck one).
    progress: AtomicU64,
    ctx: Arc<Ctx>,
    notifier: Arc<Notifier>,
    /// An exception raised by a signal handler while the server ran (KeyboardInterrupt).
    pub pending_error: Mutex<Option<PyErr>>,
    /// The error that ended the loop, if one did (an I/O error, or a panic in the engine).
    loop_error: Mutex<Option<PyErr>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// What the watch does after a turn.
enum Watch {
    /// Keep watching.
    On,
    /// A signal arrived: run Python's handlers now.
    Signal,
    /// The loop is over.
    Over,
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// What an idle worker does next.
enum Job {
    Serve(Arc<Conn>),
    Exit,
}

impl Pool {
    pub fn new(ctx: Arc<Ctx>, reactor: Reactor) -> Arc<Pool> {
        let notifier = reactor.notifier();
        Arc::new(Pool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                reactor: Some(Box::new(reactor)),
                active: 0,
                idle: 0,
                help: false,
                finished: false,
                watch_idle: false,
            }),
            idle: Condvar::new(),
            watch: Condvar::new(),
            progress: AtomicU64::new(0),
            ctx,
            notifier,
            pending_error: Mutex::new(None),
            loop_error: Mutex::new(None),
            handles: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `n` worker threads. Called from `run()`, never at import (tests fork after import).
    pub fn start(self: &Arc<Self>, n: usize) {
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..n.max(1) {
            let pool = self.clone();
            let h = std::thread::Builder::new()
                .name(format!("maitre-{i}"))
                .spawn(move || pool.work())
                .expect("spawn worker thread");
            handles.push(h);
        }
    }

    /// Runs on the main thread until the loop is over: handles signals (a first
    /// KeyboardInterrupt stops gracefully, a second one at once) and keeps watch over the
    /// workers (see the module documentation).
    pub fn supervise(&self, py: Python<'_>) {
        let _batch = crate::sched::BatchGuard::enter();
        let mut seen = self.progress.load(Ordering::SeqCst);
        loop {
            // Watch without the GIL; take it only to run signal handlers: every TICK, or at once
            // when the loop saw a signal arrive.
            let over = py.allow_threads(|| {
                let since = Instant::now();
                loop {
                    match self.keep_watch(&mut seen) {
                        Watch::Over => return true,
                        Watch::Signal => return false,
                        Watch::On if since.elapsed() >= TICK => return false,
                        Watch::On => {}
                    }
                }
            });
            if over {
                return;
            }
            if let Err(e) = py.check_signals() {
                *self.pending_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                if self.notifier.stopping() {
                    self.notifier.abort();
                } else {
                    self.notifier.stop();
                }
            }
        }
    }

    /// One turn of the watch (without the GIL).
    fn keep_watch(&self, seen: &mut u64) -> Watch {
        let mut st = self.lock();
        if st.finished {
            return Watch::Over;
        }
        if self.notifier.take_signal() {
            return Watch::Signal;
        }
        // Nothing running and nothing finished since the last look: the server is idle; look
        // again in a while (a worker starting on work cuts the wait short).
        let now = self.progress.load(Ordering::SeqCst);
        let idle = now == *seen && st.active == 0 && st.queue.is_empty();
        st.watch_idle = idle;
        let timeout = if idle { TICK } else { HELP_AFTER };
        st = self
            .watch
            .wait_timeout(st, timeout)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        st.watch_idle = false;
        if st.finished {
            return Watch::Over;
        }
        if self.notifier.take_signal() {
            return Watch::Signal;
        }
        let now = self.progress.load(Ordering::SeqCst);
        let stalled = now == *seen;
        *seen = now;
        if stalled && st.active > 0 && !st.queue.is_empty() {
            // The active workers are stuck: queued work goes to an idle one.
            st.help = true;
        }
        let vacant = st.reactor.is_some();
        let nobody_loops = vacant && (stalled || st.active == 0 || self.notifier.stopping());
        if st.idle > 0 && (nobody_loops || st.help) {
            self.idle.notify_one();
        } else if nobody_loops {
            // Every worker is in the app: run the loop here meanwhile.
            if let Some(reactor) = st.reactor.take() {
                st = self.run_round(st, reactor, Duration::ZERO);
                if !st.queue.is_empty() && st.idle > 0 {
                    self.idle.notify_one();
                }
            }
        }
        if st.finished {
            Watch::Over
        } else {
            Watch::On
        }
    }

    /// Runs one round of the loop taken out of `st`, without the pool's lock, and puts it back
    /// with the work it found; ends the pool if the loop is over. A panic in the round ends the
    /// pool too (logged at ERROR; `run()` then raises): the loop's state cannot be trusted after
    /// it, and a supervisor restarts a process that exits with an error, where a server that
    /// hangs stays down.
    fn run_round<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
        mut reactor: Box<Reactor>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        drop(st);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let res = reactor.round(timeout);
            (reactor, res)
        }));
        let mut st = self.lock();
        match res {
            Ok((reactor, res)) => self.put_back(&mut st, reactor, res),
            Err(panic) => {
                drop(st);
                self.fail(&format!("the event loop failed (panic: {})", panic_message(&*panic)));
                st = self.lock();
            }
        }
        st
    }

    /// Ends the pool after a failure of the engine itself: logs `what` at ERROR and makes it the
    /// error `run()` raises. Call without the pool's lock.
    fn fail(&self, what: &str) {
        Log::log(&*self.ctx, LOG_ERROR, what);
        let mut err = self.loop_error.lock().unwrap_or_else(|p| p.into_inner());
        err.get_or_insert_with(|| pyo3::exceptions::PyRuntimeError::new_err(format!("maitre: {what}")));
        drop(err);
        // Whatever the loop's round left behind is gone with it; nothing can be served.
        self.notifier.abort();
        let mut st = self.lock();
        st.finished = true;
        st.queue.clear();
        self.idle.notify_all();
        self.watch.notify_all();
    }

    fn put_back(&self, st: &mut State, mut reactor: Box<Reactor>, res: io::Result<bool>) {
        reactor.take_ready(&mut st.queue);
        st.reactor = Some(reactor);
        let over = match res {
            Ok(more) => !more,
            Err(e) => {
                let mut err = self.loop_error.lock().unwrap_or_else(|p| p.into_inner());
                err.get_or_insert_with(|| pyo3::exceptions::PyOSError::new_err(e.to_string()));
                true
            }
        };
        if over {
            st.finished = true;
            self.idle.notify_all();
            self.watch.notify_all();
        } else if st.watch_idle && self.notifier.signal_pending() {
            self.watch.notify_one();
        }
    }

    /// Takes the event loop back once the pool is over (to close what is left).
    pub fn take_reactor(&self) -> Option<Box<Reactor>> {
        self.lock().reactor.take()
    }

    /// The error that ended the loop, if one did.
    pub fn loop_error(&self) -> Option<PyErr> {
        self.loop_error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Stops the workers: they finish the request they are running and exit. Waits for them
    /// until `deadline`; a worker still in the app then is left behind, as a daemon thread
    /// (Waitress leaves its threads likewise). Returns the threads left behind.
    pub fn stop(&self, deadline: Instant) -> Vec<JoinHandle<()>> {
        self.lock().finished = true;
        self.idle.notify_all();
        self.watch.notify_all();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        let mut left = Vec::new();
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                left.push(h);
            }
        }
        left
    }

    /// Without the GIL: runs the event loop while it is free, until there is work this worker
    /// may take. `done_one`: the worker just stopped serving (it still counts as active).
    fn next_job(&self, done_one: bool) -> Job {
        let mut st = self.lock();
        if done_one {
            st.active -= 1;
        }
        loop {
            if st.finished {
                return Job::Exit;
            }
            if st.active == 0 || st.help {
                // Nobody is serving, or the watch asked for help: take the work.
                if let Some(conn) = st.queue.pop_front() {
                    st.help = false;
                    st.active += 1;
                    if std::mem::take(&mut st.watch_idle) {
                        self.watch.notify_one();
                    }
                    return Job::Serve(conn);
                }
            }
            if let Some(reactor) = st.reactor.take() {
                // Work queued but left to another worker: poll briefly, to look again soon.
                let others = !st.queue.is_empty();
                let before = self.progress.load(Ordering::SeqCst);
                let started = Instant::now();
                st = self.run_round(st, reactor, if others { HELP_AFTER } else { TICK });
                if others
                    && st.active > 0
                    && !st.queue.is_empty()
                    && self.progress.load(Ordering::SeqCst) == before
                    && started.elapsed() >= HELP_AFTER
                {
                    // The active worker finished nothing meanwhile: step in.
                    st.help = true;
                }
                continue;
            }
            st.idle += 1;
            st = self.idle.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
        }
    }

    fn work(self: Arc<Self>) {
        let pool = self.clone();
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.work_until_done())) {
            // Panics while serving a request are caught per request (`wsgi::serve_request`):
            // this one is in the pool itself, whose counts can no longer be trusted.
            pool.fail(&format!("a worker failed (panic: {})", panic_message(&*panic)));
        }
    }

    fn work_until_done(self: Arc<Self>) {
        let _batch = crate::sched::BatchGuard::enter();
        // One Python thread state for the worker's whole life; the GIL is released while the
        // worker runs the event loop or waits.
        Python::with_gil(|py| {
            let mut job = py.allow_threads(|| self.next_job(false));
            while let Job::Serve(conn) = job {
                self.serve(py, &conn);
                // Let go of the connection before waiting: the loop closes its socket when the
                // last reference goes.
                drop(conn);
                // More queued work: serve it back to back, keeping the GIL.
                let next = self.lock().queue.pop_front();
                job = match next {
                    Some(c) => Job::Serve(c),
                    None => py.allow_threads(|| self.next_job(true)),
                };
            }
        });
    }

    /// Serves `conn`'s queue until it is empty or the connection must close. Every exit hands
    /// the connection back under the same lock that decided it, so nothing the event loop queues
    /// meanwhile is lost.
    fn serve(&self, py: Python<'_>, conn: &Arc<Conn>) {
        let notifier = &self.notifier;
        loop {
            let mut st = conn.lock();
            if st.closed {
                // The loop saw the peer go while we were busy; it waits for us to let go.
                return self.finish(conn, st, true);
            }
            if st.read_paused && st.queue.len() < RESUME_BELOW {
                st.read_paused = false;
                notifier.resume(conn.clone());
            }
            match st.queue.pop_front() {
                Some(Item::Continue) => {
                    if let Err(Disconnected) = conn.send(st, &[b"HTTP/1.1 100 Continue\r\n\r\n"]) {
                        return self.finish(conn, conn.lock(), true);
                    }
                }
                Some(Item::Request(req)) => {
                    st.serving.set(&req.head.method, &req.head.request_uri);
                    drop(st);
                    let (outcome, spent) = wsgi::serve_request(py, &self.ctx, conn, req);
                    self.progress.fetch_add(1, Ordering::Relaxed);
                    let mut st = conn.lock();
                    st.spent.push(spent);
                    if outcome == Outcome::Close {
                        return self.finish(conn, st, true);
                    }
                }
                None => {
                    if let Some(err) = st.error.take() {
                        let bytes = err.to_response(self.ctx.ident.as_deref(), date::http_date().as_str());
                        let st = conn.send(st, &[&bytes]).unwrap_or_else(|Disconnected| conn.lock());
                        return self.finish(conn, st, true);
                    }
                    // Done for now. Close if the peer is done sending or the server is stopping.
                    let close = st.eof || notifier.draining();
                    return self.finish(conn, st, close);
                }
            }
        }
    }

    /// Gives the connection back to the event loop; with `close`, to be closed after its output.
    fn finish(&self, conn: &Arc<Conn>, mut st: MutexGuard<'_, ConnState>, close: bool) {
        st.busy = false;
        st.serving.clear();
        // Idle from now on (for the connection limit's choice of whom to close).
        st.handed_back = self.notifier.coarse_now();
        if close {
            st.close_after_flush = true;
            st.queue.clear();
            st.error = None;
            if st.out.is_empty() && !st.closed {
                // Everything is sent: the FIN goes now, right behind the response, not when the
                // loop gets to closing the socket. The server is then the side that closes
                // first, so the TIME_WAIT is its own and not the client's (a client that
                // reconnects, like a load balancer or wrk, otherwise pays for it in connect()).
                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            }
        }
        drop(st);
        if close {
            self.notifier.close(conn.clone());
        }
    }
}
