//! The pool of Python worker threads (`threads`): each takes a connection with queued requests,
//! runs the app for them in order under the GIL, and writes the responses.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::channel::{Conn, ConnState, Disconnected, Item};
use crate::http::date;
use crate::reactor::{Dispatch, Notifier};
use crate::wsgi::{self, Ctx, Outcome};

/// Resume a paused connection once its queue is this short.
const RESUME_BELOW: usize = 16;
/// How long the active workers may go without finishing a request before an idle one steps in.
const HELP_AFTER: Duration = Duration::from_millis(2);

/// The worker pool; also the event loop's [`Dispatch`].
pub struct Pool {
    /// Connections with work.
    queue: Mutex<VecDeque<Arc<Conn>>>,
    /// Requests finished so far (how an idle worker tells a busy pool from a stuck one).
    progress: AtomicU64,
    ready: Condvar,
    /// Workers running the app (or about to).
    active: AtomicUsize,
    /// Workers blocked on `ready` (changed only under the queue lock).
    waiting: AtomicUsize,
    shutdown: AtomicBool,
    ctx: Arc<Ctx>,
    notifier: OnceLock<Arc<Notifier>>,
    /// An exception raised by a signal handler while the loop ran (KeyboardInterrupt).
    pub pending_error: Mutex<Option<PyErr>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub fn new(ctx: Arc<Ctx>) -> Arc<Pool> {
        Arc::new(Pool {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            active: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            ctx,
            notifier: OnceLock::new(),
            pending_error: Mutex::new(None),
            handles: Mutex::new(Vec::new()),
        })
    }

    /// Starts `n` worker threads. Called from `run()`, never at import (tests fork after import).
    pub fn start(self: &Arc<Self>, n: usize, notifier: Arc<Notifier>) {
        let _ = self.notifier.set(notifier);
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

    /// Stops the workers: they finish the request they are running and exit. Waits up to
    /// `timeout` for them; a worker stuck in the app is left behind, as Waitress leaves it.
    pub fn stop(&self, timeout: Duration) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.ready.notify_all();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = Instant::now() + timeout;
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }

    fn notifier(&self) -> &Arc<Notifier> {
        self.notifier.get().expect("pool started")
    }

    /// Takes the next connection without waiting.
    fn try_next(&self) -> Option<Arc<Conn>> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.pop_front()
    }

    /// Waits for work (without the GIL). While another worker is running the app, queued work
    /// is left to it as long as it makes progress: one worker serving a fast app back to back
    /// beats several fighting over the GIL. When no request has finished for [`HELP_AFTER`]
    /// (the app is slow or blocked), an idle worker steps in, so a slow request never holds up
    /// other connections.
    fn next(&self) -> Option<Arc<Conn>> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        // The progress count when this worker started watching a busy pool.
        let mut watching: Option<u64> = None;
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return None;
            }
            if q.is_empty() {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                watching = None;
                continue;
            }
            let now = self.progress.load(Ordering::SeqCst);
            if self.active.load(Ordering::SeqCst) == 0 || watching == Some(now) {
                // Nobody is serving, or nobody finished a request for HELP_AFTER: step in.
                self.active.fetch_add(1, Ordering::SeqCst);
                let conn = q.pop_front();
                if !q.is_empty() {
                    // Still more: another idle worker keeps watch in turn.
                    self.ready.notify_one();
                }
                return conn;
            }
            // Another worker is serving and made progress: leave the work to it for now.
            watching = Some(now);
            q = self
                .ready
                .wait_timeout(q, HELP_AFTER)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn work(self: Arc<Self>) {
        let _batch = crate::sched::BatchGuard::enter();
        // One Python thread state for the worker's whole life; the GIL is released only while
        // waiting for work.
        Python::with_gil(|py| {
            while let Some(mut conn) = py.allow_threads(|| self.next()) {
                loop {
                    self.serve(py, &conn);
                    match self.try_next() {
                        Some(c) => conn = c,
                        None => break,
                    }
                }
                self.active.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }

    /// Serves `conn`'s queue until it is empty or the connection must close. Every exit hands
    /// the connection back under the same lock that decided it, so nothing the event loop queues
    /// meanwhile is lost.
    fn serve(&self, py: Python<'_>, conn: &Arc<Conn>) {
        let notifier = self.notifier();
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
        if close {
            st.close_after_flush = true;
            st.queue.clear();
            st.error = None;
        }
        drop(st);
        if close {
            self.notifier().close(conn.clone());
        }
    }
}

impl Dispatch for Pool {
    fn dispatch(&self, conns: &mut Vec<Arc<Conn>>) {
        if conns.is_empty() {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = q.is_empty();
        q.extend(conns.drain(..));
        // Nobody is serving: wake a worker. Somebody is: wake one only when the queue was
        // empty, to keep watch in case the active worker is stuck in a slow app.
        // (The count is read under the queue lock waiters take, so no wake-up is lost; skipping
        // notify when nobody waits saves a futex syscall per round.)
        let wake = was_empty || self.active.load(Ordering::SeqCst) == 0;
        if wake && self.waiting.load(Ordering::SeqCst) > 0 {
            self.ready.notify_one();
        }
        drop(q);
    }

    fn tick(&self) -> bool {
        Python::with_gil(|py| match py.check_signals() {
            Ok(()) => true,
            Err(e) => {
                *self.pending_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                false
            }
        })
    }

    fn log(&self, level: u8, msg: &str) {
        Python::with_gil(|py| self.ctx.log(py, level, msg));
    }
}
