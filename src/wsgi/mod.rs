//! Running a WSGI application for one request: environ, start_response, app_iter, errors.

pub mod environ;
pub mod file_wrapper;
pub mod input;
pub mod response;

use std::sync::Arc;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule, PyString, PyTuple, PyType};

use crate::channel::Conn;
use crate::http::body::Body;
use crate::http::{Request, RequestHead};
use crate::log::LOG_ERROR;
use input::InputStream;
use response::{Response, StartResponse};

pyo3::create_exception!(
    _core,
    ClientDisconnected,
    PyException,
    "The client went away while the response was being written."
);

/// What the worker does with the connection after a request.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Outcome {
    KeepAlive,
    Close,
}

/// Python objects and settings shared by every request of a server, made once at start.
pub struct Ctx {
    pub app: Py<PyAny>,
    pub logger: Py<PyAny>,
    pub ident: Option<String>,
    pub expose_tracebacks: bool,
    pub outbuf_high_watermark: usize,
    pub url_prefix: Vec<u8>,
    pub script_name: Py<PyString>,
    pub server_name: Py<PyString>,
    pub server_software: Py<PyAny>,
    pub url_scheme: Py<PyString>,
    /// SERVER_PORT for each listener.
    pub server_ports: Vec<Py<PyString>>,
    /// For each listener, the environ keys that never change (see `environ::bases`).
    pub environ_base: Vec<Py<PyDict>>,
    pub wsgi_version: Py<PyTuple>,
    pub file_wrapper: Py<PyType>,
    pub proto_10: Py<PyString>,
    pub proto_11: Py<PyString>,
    /// The `sys` module (`wsgi.errors` is `sys.stderr` at request time).
    pub sys: Py<PyModule>,
    /// Proxy-header handling (None when nothing is trusted and nothing is cleared).
    pub proxy: Option<crate::http::proxy::ProxyConfig>,
    /// `url_scheme` as a Rust string (for the proxy rules).
    pub url_scheme_str: String,
    /// Test builds only: a request for exactly this path panics in the engine
    /// (`MAITRE_TEST_PANIC_PATH`).
    #[cfg(feature = "test-hooks")]
    pub test_panic_path: Option<Vec<u8>>,
}

/// The event loop logs through the server's logger.
impl crate::log::Log for Ctx {
    fn log(&self, level: u8, msg: &str) {
        Python::with_gil(|py| Ctx::log(self, py, level, msg));
    }
}

impl Ctx {
    pub fn log(&self, py: Python<'_>, level: u8, msg: &str) {
        let _ = self.logger.call_method1(py, "log", (level, msg));
    }

    fn log_exception(&self, py: Python<'_>, msg: &str, err: &PyErr) {
        let kwargs = PyDict::new(py);
        // (type, value, traceback): the value alone may not carry its traceback yet.
        let info = (err.get_type(py), err.value(py), err.traceback(py));
        let _ = kwargs.set_item("exc_info", info);
        let _ = self.logger.call_method(py, "error", (msg,), Some(&kwargs));
    }
}

/// Runs the app for `req` on `conn` and writes the response. Never raises: app errors become a
/// 500 (or a closed connection once headers went out) and an ERROR log line. A Rust panic while
/// serving costs this request a 500 (if nothing was sent yet) and the connection, never the
/// process.
///
/// The request comes back (without its body) for the caller to hand back to the event loop.
pub fn serve_request(
    py: Python<'_>,
    ctx: &Arc<Ctx>,
    conn: &Arc<Conn>,
    mut req: Box<Request>,
) -> (Outcome, Box<Request>) {
    let body = std::mem::replace(&mut req.body, Body::Empty);
    let outcome = serve_guarded(py, ctx, conn, &mut req.head, body);
    (outcome, req)
}

fn serve_guarded(py: Python<'_>, ctx: &Arc<Ctx>, conn: &Arc<Conn>, head: &mut RequestHead, body: Body) -> Outcome {
    let before = conn.lock().produced;
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(py, ctx, conn, head, body)));
    match run {
        Ok(outcome) => outcome,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let path = String::from_utf8_lossy(&head.path);
            ctx.log(
                py,
                LOG_ERROR,
                &format!("Exception while serving {path}: internal error (panic: {msg})"),
            );
            let st = conn.lock();
            if st.produced == before {
                let bytes = crate::http::error_response(
                    head.version,
                    500,
                    crate::http::error::INTERNAL_ERROR_DETAIL,
                    ctx.ident.as_deref(),
                    crate::http::date::http_date().as_str(),
                );
                drop(conn.send(st, &[&bytes]));
            }
            Outcome::Close
        }
    }
}

fn serve(py: Python<'_>, ctx: &Arc<Ctx>, conn: &Arc<Conn>, head: &mut RequestHead, body: Body) -> Outcome {
    #[cfg(feature = "test-hooks")]
    if ctx.test_panic_path.as_deref() == Some(head.path.as_slice()) {
        panic!("injected by MAITRE_TEST_PANIC_PATH");
    }
    let resp = Response::new(ctx.clone(), conn.clone(), head);
    // Proxy headers (trusted ones applied, untrusted ones removed), in the engine.
    let overrides = match &ctx.proxy {
        None => Vec::new(),
        Some(proxy) => {
            match proxy.apply(&mut head.headers, &conn.peer.addr, &ctx.url_scheme_str) {
                Ok(applied) => {
                    for w in &applied.warnings {
                        ctx.log(py, crate::log::LOG_WARNING, w);
                    }
                    applied.set
                }
                Err(e) => {
                    for w in &e.warnings {
                        ctx.log(py, crate::log::LOG_WARNING, w);
                    }
                    if e.status == 400 {
                        // As Waitress's middleware does: a 400 through the app path.
                        return resp.respond(py, "400 Bad Request", &crate::http::proxy::proxy_error_body(&e.detail));
                    }
                    let err = pyo3::exceptions::PyIndexError::new_err(e.detail);
                    return fail(py, ctx, resp, head, err);
                }
            }
        }
    };
    let input = match SPARE_INPUT.take() {
        Some(input) => {
            input.borrow_mut(py).refill(body);
            input
        }
        None => match Py::new(py, InputStream::new(body)) {
            Ok(input) => input,
            Err(e) => return fail(py, ctx, resp, head, e),
        },
    };
    let environ = match environ::build(py, ctx, conn, head, input.bind(py), &overrides) {
        Ok(e) => e,
        Err(e) => return fail(py, ctx, resp, head, e),
    };
    let (sr, write) = match SPARE_START.take() {
        Some(spare) => spare,
        None => match new_start_response(py) {
            Ok(made) => made,
            Err(e) => {
                ctx.log_exception(py, "Exception while serving", &e);
                return Outcome::Close;
            }
        },
    };
    sr.borrow_mut(py).begin(resp, write.clone_ref(py));
    let result = run_app(py, ctx, &environ, &sr);
    let taken = sr.try_borrow_mut(py).map(|mut sr| sr.take());
    let Ok(mut resp) = taken else {
        // The app returned while a thread of its own is still inside `write()` (which lets go
        // of the GIL while the socket drains): the response cannot be finished in order. Neither
        // object is reused; the connection closes once that write is done with it.
        let path = String::from_utf8_lossy(&head.path);
        ctx.log(
            py,
            LOG_ERROR,
            &format!(
                "Exception while serving {path}: the application returned while another thread was still in write()"
            ),
        );
        return Outcome::Close;
    };
    // Kept for the next request only if nothing else holds either object (the app did not keep
    // `start_response` or `write`): the write method's reference to `sr` and ours.
    if sr.get_refcnt(py) == 2 && write.get_refcnt(py) == 1 {
        SPARE_START.set(Some((sr, write)));
    }
    let outcome = match result {
        Ok(()) => match resp.finish(py) {
            Ok(()) => resp.outcome(),
            Err(e) => fail(py, ctx, resp, head, e),
        },
        Err(e) => fail(py, ctx, resp, head, e),
    };
    // Likewise wsgi.input, once the environ is gone, if the app kept neither: its body is let go
    // now, and the object serves the next request.
    drop(environ);
    if input.get_refcnt(py) == 1 {
        let emptied = input.try_borrow_mut(py).map(|mut i| i.refill(Body::Empty)).is_ok();
        if emptied {
            SPARE_INPUT.set(Some(input));
        }
    }
    outcome
}

thread_local! {
    /// This worker's `start_response` and its bound `write`, idle between requests.
    static SPARE_START: std::cell::Cell<Option<(Py<StartResponse>, Py<PyAny>)>> = const { std::cell::Cell::new(None) };
    /// This worker's `wsgi.input`, empty between requests.
    static SPARE_INPUT: std::cell::Cell<Option<Py<InputStream>>> = const { std::cell::Cell::new(None) };
}

fn new_start_response(py: Python<'_>) -> PyResult<(Py<StartResponse>, Py<PyAny>)> {
    let sr = Bound::new(py, StartResponse::idle())?;
    let write = sr.getattr(pyo3::intern!(py, "write"))?.unbind();
    Ok((sr.unbind(), write))
}

/// Calls the app and sends its app_iter; `close()` is called on the app_iter on every path.
fn run_app(py: Python<'_>, ctx: &Ctx, environ: &Bound<'_, PyDict>, sr: &Py<StartResponse>) -> PyResult<()> {
    let app_iter = ctx.app.bind(py).call1((environ, sr.clone_ref(py)))?;
    let sent = response::send_app_iter(py, sr, &app_iter);
    // Lists and tuples (most responses) have no close(); skip the failing lookup, which would
    // build an AttributeError per request.
    let plain = app_iter.is_exact_instance_of::<PyList>() || app_iter.is_exact_instance_of::<PyTuple>();
    let closed = if plain {
        Ok(())
    } else {
        match app_iter.getattr(pyo3::intern!(py, "close")) {
            Ok(close) => close.call0().map(|_| ()),
            Err(_) => Ok(()),
        }
    };
    sent?;
    closed
}

/// The app failed (or the client went away): log, answer 500 if nothing was sent yet, close.
fn fail(py: Python<'_>, ctx: &Ctx, mut resp: Response, head: &RequestHead, err: PyErr) -> Outcome {
    let path = String::from_utf8_lossy(&head.path);
    if err.is_instance_of::<ClientDisconnected>(py) {
        if resp.conn().lock().abandoned {
            // The server cut it (the shutdown bound expired) and has said so already.
            return Outcome::Close;
        }
        ctx.log(
            py,
            crate::log::LOG_INFO,
            &format!("Client disconnected while serving {path}"),
        );
        return Outcome::Close;
    }
    ctx.log_exception(py, &format!("Exception while serving {path}"), &err);
    if !resp.wrote_header() {
        let detail = if ctx.expose_tracebacks {
            format_traceback(py, &err)
        } else {
            "The server encountered an unexpected internal server error".to_owned()
        };
        resp.send_error(500, &detail);
    }
    Outcome::Close
}

fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let tb = py.import("traceback")?;
        let lines = tb.call_method1("format_exception", (err.get_type(py), err.value(py), err.traceback(py)))?;
        let joined = PyString::new(py, "").call_method1("join", (lines,))?;
        joined.extract()
    })();
    formatted.unwrap_or_else(|_| err.to_string())
}
