//! The `maitre._core.Engine` Python class: takes the listening sockets Python bound, builds the
//! shared context, runs the event loop on the calling thread and the worker pool beside it.

use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::dispatch::Pool;
use crate::http::proxy::{ProxyConfig, TrustedHeaders};
use crate::http::Limits;
use crate::reactor::{Listener, LoopConfig, Notifier, Reactor};
use crate::wsgi::file_wrapper::FileWrapper;
use crate::wsgi::Ctx;

/// How long `run()` waits for workers to finish their request when the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[pyclass(module = "maitre._core")]
pub struct Engine {
    /// (duplicated fd, is_unix) for each listener; the Python socket objects keep their own fds.
    listeners: Vec<(i32, bool)>,
    ctx: Arc<Ctx>,
    threads: usize,
    loop_config: LoopConfig,
    notifier: Mutex<Option<Arc<Notifier>>>,
    closed: AtomicBool,
    running: AtomicBool,
}

fn get<'py, T: FromPyObject<'py>>(config: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    config
        .get_item(key)?
        .ok_or_else(|| PyValueError::new_err(format!("missing engine setting {key}")))?
        .extract()
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
    /// `listeners`: `(fd, "tcp" | "unix", server_port)` for each bound, listening socket.
    #[new]
    fn new(
        py: Python<'_>,
        app: PyObject,
        listeners: Vec<(i32, String, String)>,
        config: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        if listeners.is_empty() {
            return Err(PyValueError::new_err("no listeners"));
        }
        let mut fds = Vec::new();
        let mut ports = Vec::new();
        for (fd, kind, port) in &listeners {
            // SAFETY: dup of a descriptor the caller owns; we own the duplicate.
            let dup = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                return Err(PyOSError::new_err(std::io::Error::last_os_error().to_string()));
            }
            fds.push((dup, kind == "unix"));
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
            server_port_strs: listeners.iter().map(|(_, _, port)| port.clone()).collect(),
            outbuf_high_watermark: get(config, "outbuf_high_watermark")?,
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
            test_panic_path: std::env::var_os("MAITRE_TEST_PANIC_PATH").map(|p| p.into_encoded_bytes()),
        };
        ctx.environ_base = crate::wsgi::environ::bases(py, &ctx)?;
        let secs = |v: f64| Duration::from_secs_f64(v.max(0.0));
        let loop_config = LoopConfig {
            limits: Limits {
                max_request_header_size: get(config, "max_request_header_size")?,
                max_request_body_size: get(config, "max_request_body_size")?,
                inbuf_overflow: get(config, "inbuf_overflow")?,
            },
            recv_bytes: get(config, "recv_bytes")?,
            connection_limit: get(config, "connection_limit")?,
            channel_timeout: secs(get(config, "channel_timeout")?),
            cleanup_interval: secs(get::<f64>(config, "cleanup_interval")?.max(0.05)),
            ident,
            outbuf_overflow: get(config, "outbuf_overflow")?,
            shutdown_timeout: secs(get(config, "shutdown_timeout")?),
        };
        Ok(Engine {
            listeners: fds,
            ctx: Arc::new(ctx),
            threads: get(config, "threads")?,
            loop_config,
            notifier: Mutex::new(None),
            closed: AtomicBool::new(false),
            running: AtomicBool::new(false),
        })
    }

    /// Serves until `close()` is called or a signal handler raises (KeyboardInterrupt).
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(PyRuntimeError::new_err("the server is already running"));
        }
        let mut listeners = Vec::new();
        for &(fd, unix) in &self.listeners {
            // SAFETY: `fd` is our own duplicate, used by nothing else; ownership moves into
            // the std listener and the duplicate is made non-blocking for mio.
            unsafe {
                let dup = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0);
                if dup < 0 {
                    return Err(PyOSError::new_err(std::io::Error::last_os_error().to_string()));
                }
                if unix {
                    let l = std::os::unix::net::UnixListener::from_raw_fd(dup);
                    l.set_nonblocking(true)?;
                    listeners.push(Listener::Unix(mio::net::UnixListener::from_std(l)));
                } else {
                    let l = std::net::TcpListener::from_raw_fd(dup);
                    l.set_nonblocking(true)?;
                    listeners.push(Listener::Tcp(mio::net::TcpListener::from_std(l)));
                }
            }
        }
        let log: Arc<dyn crate::reactor::Log> = self.ctx.clone();
        let reactor = Reactor::new(listeners, log, self.loop_config.clone())?;
        let notifier = reactor.notifier();
        *self.notifier.lock().unwrap_or_else(|p| p.into_inner()) = Some(notifier.clone());
        if self.closed.load(Ordering::SeqCst) {
            notifier.stop();
        }
        let pool = Pool::new(self.ctx.clone(), reactor);
        pool.start(self.threads);
        pool.supervise(py);
        py.allow_threads(|| {
            if let Some(mut reactor) = pool.take_reactor() {
                reactor.shutdown();
            }
            pool.stop(SHUTDOWN_GRACE);
        });
        *self.notifier.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.running.store(false, Ordering::SeqCst);
        if let Some(err) = pool.pending_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(err);
        }
        match pool.loop_error() {
            Some(e) => Err(PyOSError::new_err(e.to_string())),
            None => Ok(()),
        }
    }

    /// Stops the server: `run()` returns soon after. Safe from any thread; idempotent.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(n) = self.notifier.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            n.stop();
        }
    }

    #[getter]
    fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for &(fd, _) in &self.listeners {
            // SAFETY: our own duplicates, closed once.
            unsafe { libc::close(fd) };
        }
    }
}
