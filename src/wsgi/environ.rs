//! Builds the WSGI environ of a request (reference §4.1) from the parsed head, in Rust, with
//! shared strings for everything that does not change between requests.

use std::sync::{Arc, Weak};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::input::InputStream;
use super::Ctx;
use crate::channel::Conn;
use crate::http::{RequestHead, Version};

/// Decodes bytes as latin-1 (PEP 3333's "bytes as str" tunnelling).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyAny> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return PyString::new(py, unsafe { std::str::from_utf8_unchecked(bytes) }).into_any();
    }
    // SAFETY: PyUnicode_DecodeLatin1 cannot fail for any input (every byte maps to a code point)
    // except on memory exhaustion, which from_owned_ptr turns into a panic caught by PyO3.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), bytes.len() as ffi::Py_ssize_t, std::ptr::null());
        Bound::from_owned_ptr(py, ptr)
    }
}

/// `PATH_INFO` after `url_prefix` (Waitress's rules, including keeping a non-matching path whole).
fn path_info<'a>(path: &'a [u8], prefix: &[u8]) -> &'a [u8] {
    if prefix.is_empty() {
        return path;
    }
    if path == prefix {
        return b"";
    }
    if path.len() > prefix.len() && path.starts_with(prefix) && path[prefix.len()] == b'/' {
        return &path[prefix.len()..];
    }
    path
}

/// Room in a base environ for the keys of a request: the ~13 set per request, the headers.
const ROOM: usize = 40;

/// The part of the environ that is the same for every request on one listener, which each
/// request's environ starts as a copy of (one copy instead of a dozen insertions). Made with room
/// for a request's other keys, so that filling in a copy does not resize it. The keys, like all
/// the environ's fixed keys, are interned strings: the app's own constants (`"SERVER_NAME"`) are
/// the same objects, so its lookups match without comparing text.
pub fn bases(py: Python<'_>, ctx: &Ctx) -> PyResult<Vec<Py<PyDict>>> {
    ctx.server_ports
        .iter()
        .map(|port| {
            // SAFETY: _PyDict_NewPresized returns a new reference to a dict (or NULL with an
            // exception set, which from_owned_ptr_or_err turns into an error).
            let base = unsafe {
                let ptr = ffi::_PyDict_NewPresized(ROOM as ffi::Py_ssize_t);
                Bound::from_owned_ptr_or_err(py, ptr)?.downcast_into_unchecked::<PyDict>()
            };
            base.set_item(pyo3::intern!(py, "SERVER_PORT"), port.bind(py))?;
            base.set_item(pyo3::intern!(py, "SERVER_NAME"), ctx.server_name.bind(py))?;
            base.set_item(pyo3::intern!(py, "SERVER_SOFTWARE"), ctx.server_software.bind(py))?;
            base.set_item(pyo3::intern!(py, "SCRIPT_NAME"), ctx.script_name.bind(py))?;
            base.set_item(pyo3::intern!(py, "wsgi.url_scheme"), ctx.url_scheme.bind(py))?;
            base.set_item(pyo3::intern!(py, "wsgi.version"), ctx.wsgi_version.bind(py))?;
            base.set_item(pyo3::intern!(py, "wsgi.multithread"), true)?;
            base.set_item(pyo3::intern!(py, "wsgi.multiprocess"), false)?;
            base.set_item(pyo3::intern!(py, "wsgi.run_once"), false)?;
            base.set_item(pyo3::intern!(py, "wsgi.file_wrapper"), ctx.file_wrapper.bind(py))?;
            base.set_item(pyo3::intern!(py, "wsgi.input_terminated"), true)?;
            Ok(base.unbind())
        })
        .collect()
}

pub fn build<'py>(
    py: Python<'py>,
    ctx: &Arc<Ctx>,
    conn: &Arc<Conn>,
    head: &RequestHead,
    input: &Bound<'py, InputStream>,
    overrides: &[(&'static str, String)],
) -> PyResult<Bound<'py, PyDict>> {
    // A copy of the keys that do not change: the listener's, and from a connection's second
    // request on, the connection's own base (the listener's plus the client's address), one copy
    // instead of a dozen insertions. The first request fills the client keys in itself, so a
    // connection that serves one request pays for no second dict.
    let (objects, first) = conn_objects(py, conn)?;
    let with_conn_keys = || -> PyResult<Bound<'py, PyDict>> {
        let dict = copy_dict(ctx.environ_base[conn.listener].bind(py))?;
        objects.fill(py, &dict)?;
        Ok(dict)
    };
    let env = if first {
        with_conn_keys()?
    } else {
        let base = match objects.base.get() {
            Some(base) => base.bind(py).clone(),
            None => {
                let base = with_conn_keys()?;
                // Only the worker serving the connection gets here, so no other value was set.
                let _ = objects.base.set(base.clone().unbind());
                base
            }
        };
        copy_dict(&base)?
    };
    macro_rules! set {
        ($k:literal, $v:expr) => {
            env.set_item(pyo3::intern!(py, $k), $v)?
        };
    }
    set!("REQUEST_METHOD", method(py, &head.method));
    set!(
        "SERVER_PROTOCOL",
        match head.version {
            Version::Http10 => ctx.proto_10.bind(py),
            Version::Http11 => ctx.proto_11.bind(py),
        }
    );
    let path = path_info(&head.path, &ctx.url_prefix);
    let path_str = latin1(py, path);
    // The same str for both when they are equal (`/`, most paths without a query).
    let uri_str = match head.request_uri == path {
        true => path_str.clone(),
        false => latin1(py, &head.request_uri),
    };
    set!("PATH_INFO", path_str);
    set!("REQUEST_URI", uri_str);
    set!("QUERY_STRING", latin1(py, &head.query));
    // sys.stderr from the module's dict (a plain lookup; the attribute path if it is missing).
    let sys = ctx.sys.bind(py);
    let stderr = match sys.dict().get_item(pyo3::intern!(py, "stderr"))? {
        Some(stderr) => stderr,
        None => sys.getattr(pyo3::intern!(py, "stderr"))?,
    };
    set!("wsgi.errors", stderr);
    set!("wsgi.input", input);
    for h in &head.headers {
        // The reader merged repeated headers, and no HTTP_* key clashes with the keys above.
        env.set_item(header_key(py, &h.key), latin1(py, &h.value))?;
    }
    // What trusted proxy headers say (REMOTE_ADDR, wsgi.url_scheme, HTTP_HOST, ...).
    for (key, value) in overrides {
        env.set_item(PyString::new(py, key), PyString::new(py, value))?;
    }
    Ok(env)
}

/// The environ key of a header: a shared string for the common ones, a new one otherwise.
fn header_key<'py>(py: Python<'py>, key: &str) -> Bound<'py, PyString> {
    macro_rules! shared {
        ($(($name:literal, $k:literal),)*) => {
            match key {
                $($k => pyo3::intern!(py, $k).clone(),)*
                _ => PyString::new(py, key),
            }
        };
    }
    crate::http::names::common_headers!(shared)
}

fn method<'py>(py: Python<'py>, m: &str) -> Bound<'py, PyString> {
    macro_rules! shared {
        ($(($bytes:literal, $m:literal),)*) => {
            match m {
                $($m => pyo3::intern!(py, $m).clone(),)*
                _ => PyString::new(py, m),
            }
        };
    }
    crate::http::names::common_methods!(shared)
}

/// A new dict with the items of `dict` (the same size of table, so there is room for what is
/// added to it).
fn copy_dict<'py>(dict: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    // SAFETY: PyDict_Copy returns a new reference to a dict (or NULL with an exception set,
    // which from_owned_ptr_or_err turns into an error).
    unsafe {
        let copy = Bound::from_owned_ptr_or_err(dict.py(), ffi::PyDict_Copy(dict.as_ptr()))?;
        Ok(copy.downcast_into_unchecked::<PyDict>())
    }
}

/// The environ values that are the same for every request on a connection.
#[derive(Debug)]
pub struct ConnObjects {
    remote_addr: Py<PyString>,
    remote_port: Py<PyString>,
    disconnected: Py<ClientDisconnectedCheck>,
    /// The listener's base environ with the keys above, made by the connection's second request.
    base: std::sync::OnceLock<Py<PyDict>>,
}

impl ConnObjects {
    /// Sets the connection's keys in `env`.
    fn fill(&self, py: Python<'_>, env: &Bound<'_, PyDict>) -> PyResult<()> {
        env.set_item(pyo3::intern!(py, "REMOTE_ADDR"), self.remote_addr.bind(py))?;
        env.set_item(pyo3::intern!(py, "REMOTE_HOST"), self.remote_addr.bind(py))?;
        env.set_item(pyo3::intern!(py, "REMOTE_PORT"), self.remote_port.bind(py))?;
        env.set_item(
            pyo3::intern!(py, "waitress.client_disconnected"),
            self.disconnected.bind(py),
        )?;
        env.set_item(
            pyo3::intern!(py, "maitre.client_disconnected"),
            self.disconnected.bind(py),
        )
    }
}

/// The connection's [`ConnObjects`], made by its first request (`true` when made now).
fn conn_objects<'a>(py: Python<'_>, conn: &'a Arc<Conn>) -> PyResult<(&'a ConnObjects, bool)> {
    let mine = |conn: &'a Arc<Conn>| conn.ext.get().and_then(|ext| ext.downcast_ref::<ConnObjects>());
    if let Some(objects) = mine(conn) {
        return Ok((objects, false));
    }
    let objects = ConnObjects {
        remote_addr: PyString::new(py, &conn.peer.addr).unbind(),
        remote_port: PyString::new(py, &conn.peer.port).unbind(),
        disconnected: Py::new(
            py,
            ClientDisconnectedCheck {
                conn: Arc::downgrade(conn),
            },
        )?,
        base: std::sync::OnceLock::new(),
    };
    // Only the worker serving the connection gets here, so no other value can have been set.
    let _ = conn.ext.set(Box::new(objects));
    match mine(conn) {
        Some(objects) => Ok((objects, true)),
        None => Err(pyo3::exceptions::PyRuntimeError::new_err(
            "maitre: the connection holds data of another layer",
        )),
    }
}

/// `environ["waitress.client_disconnected"]()`: True once the client has gone away. It does
/// not keep the connection alive (the connection holds it).
#[pyclass(module = "maitre._core")]
pub struct ClientDisconnectedCheck {
    conn: Weak<Conn>,
}

#[pymethods]
impl ClientDisconnectedCheck {
    fn __call__(&self) -> bool {
        match self.conn.upgrade() {
            Some(conn) => {
                let st = conn.lock();
                st.closed || st.eof
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::path_info;

    #[test]
    fn url_prefix_rules() {
        assert_eq!(path_info(b"/app", b"/app"), b"");
        assert_eq!(path_info(b"/app/x", b"/app"), b"/x");
        assert_eq!(path_info(b"/application", b"/app"), b"/application");
        assert_eq!(path_info(b"/x", b""), b"/x");
    }
}
