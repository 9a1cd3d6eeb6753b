//! The `maitre._core.Engine` Python class: takes the listening sockets Python bound, builds the
//! shared context, runs the event loop on the calling thread and the worker pool beside it.

use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::dispatch::Pool;
use crate::http::proxy::{ProxyConfig, TrustedHeaders};
use crate::http::Limits;
use crate::reactor::{LoopConfig, Notifier, Reactor};
use crate::wsgi::file_wrapper::FileWrapper;
use crate::wsgi::Ctx;

/// At least this long for the workers to exit once the loop is over.
const STOP_GRACE: Duration = Duration::from_millis(100);

#[pyclass(module = "maitre._core")]
pub struct Engine {
    /// (duplicated fd, is_unix) for each listener; the Python socket objects keep their own fds.
    listeners: Vec<Listener>,
    ctx: Arc<Ctx>,
    threads: usize,
    loop_config: LoopConfig,
    notifier: Mutex<Option<Arc<Notifier>>>,
    closed: AtomicBool,
    running: AtomicBool,
    /// `abort()` was called: the last `run()` stopped without waiting for requests.
    aborted: AtomicBool,
    /// Worker threads the last `run()` left in the app when its shutdown bound expired.
    abandoned: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// One listening socket the engine was given: our own duplicate of its descriptor.
struct Listener {
    fd: i32,
    unix: bool,
    /// The server bound it (stopping shuts it down; see `Reactor::owned`).
    owned: bool,
}

fn get<'py, T: FromPyObject<'py>>(config: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    config
        .get_item(key)?
        .ok_or_else(|| PyValueError::new_err(format!("missing engine setting {key}")))?
        .extract()
}

/// A size or count setting: an int of 0 or more (one too large for this machine is as good as
/// no limit). A negative one is refused with a message naming the setting.
fn size<T: TryFrom<u64> + Bounded>(config: &Bound<'_, PyDict>, key: &str) -> PyResult<T> {
    let value = config
        .get_item(key)?
        .ok_or_else(|| PyValueError::new_err(format!("missing engine setting {key}")))?;
    if let Ok(n) = value.extract::<u64>() {
        return Ok(T::try_from(n).unwrap_or(T::MAX));
    }
    if value.lt(0)? {
        return Err(PyValueError::new_err(format!("{key} must be 0 or more, not {value}")));
    }
    // An int beyond u64 (or not an int at all: the extraction's own error).
    value.downcast::<pyo3::types::PyInt>()?;
    Ok(T::MAX)
}

/// The largest value of a size type.
trait Bounded {
    const MAX: Self;
}

impl Bounded for usize {
    const MAX: usize = usize::MAX;
}

impl Bounded for u64 {
    const MAX: u64 = u64::MAX;
}

/// A time setting in seconds as a Duration: negative or NaN is zero, and anything beyond a
/// century is a century (so that deadlines computed from it never overflow).
fn seconds(value: f64) -> Duration {
    const CENTURY: f64 = 100.0 * 365.25 * 86_400.0;
    if value.is_nan() || value <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(value.min(CENTURY))
}

/// The proxy-header rules, or None when no proxy is trusted and nothing is cleared or logged.
fn proxy_config(config: &Bound<'_, PyDict>) -> PyResult<Option<ProxyConfig>> {
    let trusted_proxy: Option<String> = get(config, "trusted_proxy")?;
    let count: Option<i64> = get(config, "trusted_proxy_count")?;
    let names: Vec<String> = get(config, "trusted_proxy_headers")?;
    let clear_untrusted: bool = get(config, "clear_untrusted_proxy_headers")?;
    let log_untrusted: bool = get(config, "log_untrusted_proxy_headers")?;
    if trusted_proxy.is_none() && !clear_untrusted && !log_untrusted {
        return Ok(None);
    }
    let trusted_headers = TrustedHeaders::from_names(names.iter()).map_err(PyValueError::new_err)?;
    Ok(Some(ProxyConfig {
        trusted_proxy,
        trusted_proxy_count: count.unwrap_or(1).max(0) as usize,
        trusted_headers,
        clear_untrusted,
        log_untrusted,
    }))
}

#[pymethods]
impl Engine {
    /// `listeners`: `(fd, "tcp" | "unix", server_port, owned)` for each bound, listening socket;
    /// `owned`: the server bound it itself (not handed in with `sockets=`).
    #[new]
    fn new(
        py: Python<'_>,
        app: PyObject,
        listeners: Vec<(i32, String, String, bool)>,
        config: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        if listeners.is_empty() {
            return Err(PyValueError::new_err("no listeners"));
        }
        let mut fds = Vec::new();
        let mut ports = Vec::new();
        for (fd, kind, port, owned) in &listeners {
            // SAFETY: dup of a descriptor the caller owns; we own the duplicate.
            let dup = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                return Err(PyOSError::new_err(std::io::Error::last_os_error().to_string()));
            }
            fds.push(Listener {
                fd: dup,
                unix: kind == "unix",
                owned: *owned,
            });
            ports.push(PyString::new(py, port).unbind());
        }
        let ident: Option<String> = get(config, "ident")?;
        let url_prefix: String = get(config, "url_prefix")?;
        let logging = py.import("logging")?;
        let mut ctx = Ctx {
            app,
            logger: logging.call_method1("getLogger", ("maitre",))?.unbind(),
            ident: ident.clone(),
            expose_tracebacks: get(config, "expose_tracebacks")?,
            proxy: proxy_config(config)?,
            url_scheme_str: get(config, "url_scheme")?,
            outbuf_high_watermark: size(config, "outbuf_high_watermark")?,
            url_prefix: url_prefix.chars().map(|c| c as u32 as u8).collect(),
            script_name: PyString::new(py, &url_prefix).unbind(),
            server_name: PyString::new(py, &get::<String>(config, "server_name")?).unbind(),
            server_software: match &ident {
                Some(i) => PyString::new(py, i).into_any().unbind(),
                None => py.None(),
            },
            url_scheme: PyString::new(py, &get::<String>(config, "url_scheme")?).unbind(),
            server_ports: ports,
            environ_base: Vec::new(),
            wsgi_version: PyTuple::new(py, [1, 0])?.unbind(),
            file_wrapper: py.get_type::<FileWrapper>().unbind(),
            proto_10: PyString::new(py, "HTTP/1.0").unbind(),
            proto_11: PyString::new(py, "HTTP/1.1").unbind(),
            sys: py.import("sys")?.unbind(),
            #[cfg(feature = "test-hooks")]
            test_panic_path: std::env::var_os("MAITRE_TEST_PANIC_PATH").map(|p| p.into_encoded_bytes()),
        };
        ctx.environ_base = crate::wsgi::environ::bases(py, &ctx)?;
        let loop_config = LoopConfig {
            limits: Limits {
                max_request_header_size: size(config, "max_request_header_size")?,
                max_request_body_size: size(config, "max_request_body_size")?,
                inbuf_overflow: size(config, "inbuf_overflow")?,
            },
            // Bytes asked of each read; the read buffer is this large (at least 1 KiB), so a
            // value beyond 16 MiB is taken as 16 MiB.
            recv_bytes: size::<usize>(config, "recv_bytes")?.min(16 << 20),
            connection_limit: size(config, "connection_limit")?,
            channel_timeout: seconds(get(config, "channel_timeout")?),
            cleanup_interval: seconds(get::<f64>(config, "cleanup_interval")?.max(0.05)),
            ident,
            outbuf_overflow: size(config, "outbuf_overflow")?,
            shutdown_timeout: seconds(get(config, "shutdown_timeout")?),
        };
        Ok(Engine {
            listeners: fds,
            ctx: Arc::new(ctx),
            threads: size(config, "threads")?,
            loop_config,
            notifier: Mutex::new(None),
            closed: AtomicBool::new(false),
            running: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            abandoned: Mutex::new(Vec::new()),
        })
    }

    /// Serves until `close()` or `abort()` is called or a signal handler raises
    /// (KeyboardInterrupt). `signal_fd`: the read end of Python's `signal.set_wakeup_fd`, so that
    /// signal handlers run as soon as a signal arrives.
    #[pyo3(signature = (signal_fd=None))]
    fn run(&self, py: Python<'_>, signal_fd: Option<i32>) -> PyResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(PyRuntimeError::new_err("the server is already running"));
        }
        self.aborted.store(false, Ordering::SeqCst);
        // A panic outside the per-request and per-round guards must not reach Python as a
        // PanicException (a BaseException).
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve(py, signal_fd)));
        *self.notifier.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.running.store(false, Ordering::SeqCst);
        match res {
            Ok(res) => res,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let what = format!("the server failed (panic: {msg})");
                self.ctx.log(py, crate::log::LOG_ERROR, &what);
                Err(PyRuntimeError::new_err(format!("maitre: {what}")))
            }
        }
    }

    /// Stops the server: `run()` returns once the requests already received are done (at most
    /// `shutdown_timeout` later). Safe from any thread; idempotent.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(n) = self.notifier.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            n.stop();
        }
    }

    /// Stops the server at once, without waiting for the requests in progress (a second Ctrl-C).
    fn abort(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.aborted.store(true, Ordering::SeqCst);
        if let Some(n) = self.notifier.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            n.abort();
        }
    }

    /// The last `run()` was cut short by `abort()` or a second signal.
    #[getter]
    fn aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// How many worker threads that `run()` left in the app (its shutdown bound expired) are
    /// still there. The interpreter must not finalize while any is: a thread that takes the GIL
    /// back during finalization is ended by CPython with a forced unwind, which aborts the
    /// process when it meets Rust's unwinding guards.
    #[getter]
    fn threads_in_app(&self) -> usize {
        let mut left = self.abandoned.lock().unwrap_or_else(|p| p.into_inner());
        left.retain(|h| !h.is_finished());
        left.len()
    }

    #[getter]
    fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

impl Engine {
    /// The body of `run()`.
    fn serve(&self, py: Python<'_>, signal_fd: Option<i32>) -> PyResult<()> {
        let mut listeners = Vec::new();
        for l in &self.listeners {
            // SAFETY: `l.fd` is our own duplicate, used by nothing else; ownership of a second
            // duplicate moves into the std listener, made non-blocking for mio.
            unsafe {
                let dup = libc::fcntl(l.fd, libc::F_DUPFD_CLOEXEC, 0);
                if dup < 0 {
                    return Err(PyOSError::new_err(std::io::Error::last_os_error().to_string()));
                }
                let socket = if l.unix {
                    let s = std::os::unix::net::UnixListener::from_raw_fd(dup);
                    s.set_nonblocking(true)?;
                    crate::net::Listener::Unix(mio::net::UnixListener::from_std(s))
                } else {
                    let s = std::net::TcpListener::from_raw_fd(dup);
                    s.set_nonblocking(true)?;
                    crate::net::Listener::Tcp(mio::net::TcpListener::from_std(s))
                };
                listeners.push((socket, l.owned));
            }
        }
        let log: Arc<dyn crate::log::Log> = self.ctx.clone();
        let mut reactor = Reactor::new(listeners, log, self.loop_config.clone())?;
        if let Some(fd) = signal_fd {
            reactor.watch_signals(fd)?;
        }
        let notifier = reactor.notifier();
        *self.notifier.lock().unwrap_or_else(|p| p.into_inner()) = Some(notifier.clone());
        if self.aborted.load(Ordering::SeqCst) {
            notifier.abort();
        } else if self.closed.load(Ordering::SeqCst) {
            notifier.stop();
        }
        let pool = Pool::new(self.ctx.clone(), reactor);
        pool.start(self.threads);
        pool.supervise(py);
        if notifier.aborted() {
            self.aborted.store(true, Ordering::SeqCst);
        }
        let abandoned = py.allow_threads(|| {
            // The workers may go on until the graceful stop's bound (the loop has already waited
            // that long when it expired); after an abort, not at all.
            let mut deadline = Instant::now() + self.loop_config.shutdown_timeout;
            if let Some(mut reactor) = pool.take_reactor() {
                if let Some(d) = reactor.drain_deadline() {
                    deadline = d;
                }
                reactor.shutdown();
            }
            // Idle workers exit at once; give them a moment to (a thread still in the app past
            // this is left behind).
            deadline = deadline.max(Instant::now() + STOP_GRACE);
            if notifier.aborted() {
                deadline = Instant::now();
            }
            pool.stop(deadline)
        });
        self.abandoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(abandoned);
        if let Some(err) = pool.pending_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(err);
        }
        match pool.loop_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for l in &self.listeners {
            // SAFETY: our own duplicates, closed once.
            unsafe { libc::close(l.fd) };
        }
    }
}
