//! The response side of a request: `start_response`, `write()`, the response head (Waitress's
//! rules for Content-Length, keep-alive, chunking, Server/Date), and sending the app_iter.

use std::sync::Arc;

use pyo3::exceptions::{PyAssertionError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString, PyTuple};
use smallvec::SmallVec;

use super::file_wrapper::FileWrapper;
use super::{ClientDisconnected, Ctx, Outcome};
use crate::buffers::Shared;
use crate::channel::{Conn, Keep};
use crate::http::response::{build_head_in, chunk_size_line, plain_decimal, status_has_body, HeadSpec, NotLatin1};
use crate::http::{date, error, RequestHead, Version};

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A CR or LF in `s` (as a byte: in UTF-8 they are never part of another character). Header
/// names and values are short: every byte is looked at, with no early exit, which the compiler
/// turns into a few vector operations.
fn has_cr_or_lf(s: &str) -> bool {
    s.bytes().fold(false, |found, b| found | (b == b'\r') | (b == b'\n'))
}

thread_local! {
    /// A buffer for response heads, reused by each response this thread writes.
    static HEAD_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A head buffer larger than this is not kept.
const HEAD_BUF_KEEP: usize = 8 * 1024;

/// The state of one response.
pub struct Response {
    ctx: Arc<Ctx>,
    conn: Arc<Conn>,
    version: Version,
    head_request: bool,
    req_close: bool,
    req_keep_alive: bool,
    force_close: bool,
    status: Option<String>,
    /// The app's headers as it gave them (validated `str`s; read without copying when the head
    /// is built).
    headers: SmallVec<[(Py<PyString>, Py<PyString>); 8]>,
    content_length: Option<u64>,
    started: bool,
    wrote_header: bool,
    chunked: bool,
    close_on_finish: bool,
    /// Body bytes counted against the Content-Length: those within it (sent, or withheld on HEAD)
    /// and those dropped for a bodiless status. Bytes sent chunked, or unframed before any
    /// Content-Length was known, are not counted (as in Waitress).
    written: u64,
    logged_excess: bool,
    logged_no_body: bool,
}

impl Response {
    pub fn new(ctx: Arc<Ctx>, conn: Arc<Conn>, head: &RequestHead) -> Response {
        Response {
            ctx,
            conn,
            version: head.version,
            head_request: head.method == "HEAD",
            req_close: head.connection_close,
            req_keep_alive: head.connection_keep_alive,
            force_close: head.force_close,
            status: None,
            headers: SmallVec::new(),
            content_length: None,
            started: false,
            wrote_header: false,
            chunked: false,
            close_on_finish: false,
            written: 0,
            logged_excess: false,
            logged_no_body: false,
        }
    }

    /// The connection the response goes to.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    pub fn wrote_header(&self) -> bool {
        self.wrote_header
    }

    pub fn outcome(&self) -> Outcome {
        if self.close_on_finish || self.force_close {
            Outcome::Close
        } else {
            Outcome::KeepAlive
        }
    }

    /// 1xx, 204 and 304 responses have no body.
    fn has_body(&self) -> bool {
        self.status.as_deref().is_none_or(status_has_body)
    }

    fn start(&mut self, py: Python<'_>, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let Ok(status) = status.downcast::<PyString>() else {
            return Err(PyAssertionError::new_err(format!(
                "status {} is not a string",
                status.str()?
            )));
        };
        let status = status.to_str()?;
        if has_cr_or_lf(status) {
            return Err(PyValueError::new_err(
                "carriage return/line feed character present in status",
            ));
        }
        // Added in place; taken back out if a later header is invalid.
        let before = self.headers.len();
        let checked = self.add_headers(py, headers);
        if checked.is_err() {
            self.headers.truncate(before);
        }
        self.content_length = checked?;
        self.status = Some(status.to_owned());
        self.started = true;
        Ok(())
    }

    /// Validates the app's headers and appends them; returns the Content-Length they set.
    fn add_headers(&mut self, py: Python<'_>, headers: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        let mut content_length = self.content_length;
        for item in headers.try_iter()? {
            let item = item?;
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            let pair = || PyTuple::new(py, [&k, &v]).and_then(|t| t.repr()).map(|r| r.to_string());
            let Ok(name_str) = k.downcast::<PyString>() else {
                return Err(PyAssertionError::new_err(format!(
                    "Header name {} is not a string in {}",
                    k.repr()?,
                    pair()?
                )));
            };
            let Ok(value_str) = v.downcast::<PyString>() else {
                return Err(PyAssertionError::new_err(format!(
                    "Header value {} is not a string in {}",
                    v.repr()?,
                    pair()?
                )));
            };
            let (name, value) = (name_str.to_str()?, value_str.to_str()?);
            if has_cr_or_lf(value) {
                return Err(PyValueError::new_err(
                    "carriage return/line feed character present in header value",
                ));
            }
            if has_cr_or_lf(name) {
                return Err(PyValueError::new_err(
                    "carriage return/line feed character present in header name",
                ));
            }
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(match plain_decimal(value) {
                    Some(n) => n,
                    // Anything else is parsed as Waitress parses it: Python's int().
                    None => py.get_type::<pyo3::types::PyInt>().call1((value,))?.extract()?,
                });
            } else if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                return Err(PyAssertionError::new_err(format!(
                    "{name} is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)"
                )));
            }
            self.headers
                .push((name_str.clone().unbind(), value_str.clone().unbind()));
        }
        Ok(content_length)
    }

    /// The response head (sans-IO rules in `http::response`); records chunking and keep-alive.
    fn build_head(&mut self, py: Python<'_>) -> PyResult<Vec<u8>> {
        let now = date::http_date();
        // Borrowed views of the app's strings: on the stack for the usual handful of headers.
        let mut few = [("", ""); 16];
        let many: Vec<(&str, &str)>;
        let headers: &[(&str, &str)] = if self.headers.len() <= few.len() {
            for (slot, (k, v)) in few.iter_mut().zip(&self.headers) {
                *slot = (k.bind(py).to_str()?, v.bind(py).to_str()?);
            }
            &few[..self.headers.len()]
        } else {
            many = self
                .headers
                .iter()
                .map(|(k, v)| Ok((k.bind(py).to_str()?, v.bind(py).to_str()?)))
                .collect::<PyResult<_>>()?;
            &many
        };
        let spec = HeadSpec {
            version: self.version,
            status: self.status.as_deref().unwrap_or("200 OK"),
            headers,
            content_length: self.content_length,
            request_close: self.req_close,
            request_keep_alive: self.req_keep_alive,
            // close_on_finish before the head: the app's body fell short of its Content-Length
            // with nothing sent yet (`check_length`), which the head must announce.
            force_close: self.force_close || self.close_on_finish,
            ident: self.ctx.ident.as_deref(),
            date: now.as_str(),
        };
        let head = build_head_in(&spec, HEAD_BUF.take()).map_err(|NotLatin1(c)| {
            PyValueError::new_err(format!(
                "'latin-1' codec can't encode character '\\u{:04x}': ordinal not in range(256)",
                c as u32
            ))
        })?;
        self.chunked = head.chunked;
        if head.close {
            self.close_on_finish = true;
        }
        Ok(head.bytes)
    }

    /// `write(data)`: the headers first (once), then the body bytes framed as the head says.
    pub fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.started {
            return Err(PyRuntimeError::new_err(
                "start_response was not called before body written",
            ));
        }
        if let Ok(b) = data.downcast::<PyBytes>() {
            return self.write_pybytes(py, b);
        }
        if let Ok(b) = data.downcast::<PyByteArray>() {
            let v = b.to_vec();
            return self.write_bytes(py, &v);
        }
        // Waitress sends the headers before it looks at the data.
        self.write_bytes(py, b"")?;
        Err(PyTypeError::new_err(format!(
            "a bytes-like object is required, not '{}'",
            data.get_type().name()?
        )))
    }

    pub fn write_bytes(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.write_data(py, data, None)
    }

    /// `write_bytes` for the bytes of a `bytes` object: if the socket cannot take them at once,
    /// the object is kept until they are sent instead of copying them.
    pub fn write_pybytes(&mut self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<()> {
        self.write_data(py, data.as_bytes(), Some(data))
    }

    fn write_data(&mut self, py: Python<'_>, data: &[u8], owner: Option<&Bound<'_, PyBytes>>) -> PyResult<()> {
        if !self.started {
            return Err(PyRuntimeError::new_err(
                "start_response was not called before body written",
            ));
        }
        let head = if self.wrote_header {
            None
        } else {
            let h = self.build_head(py)?;
            self.wrote_header = true;
            Some(h)
        };
        let mut size_line = [0u8; 20];
        let mut parts: [&[u8]; 4] = [b""; 4];
        let mut n = 0;
        // Where `data` (or the part of it that is sent) sits in `parts`.
        let mut data_at = None;
        if let Some(h) = &head {
            parts[0] = h;
            n = 1;
        }
        if !data.is_empty() && self.has_body() {
            if self.chunked {
                if !self.head_request {
                    let len = chunk_size_line(&mut size_line, data.len());
                    parts[n] = &size_line[..len];
                    parts[n + 1] = data;
                    data_at = Some(n + 1);
                    parts[n + 2] = b"\r\n";
                    n += 3;
                }
            } else if let Some(cl) = self.content_length {
                let room = cl.saturating_sub(self.written);
                let take = (data.len() as u64).min(room) as usize;
                if take < data.len() && !self.logged_excess {
                    self.logged_excess = true;
                    self.ctx.log(
                        py,
                        crate::log::LOG_WARNING,
                        &format!(
                            "application-written content exceeded the number of bytes specified by Content-Length header ({cl})"
                        ),
                    );
                }
                self.written += take as u64;
                if take > 0 && !self.head_request {
                    parts[n] = &data[..take];
                    data_at = Some(n);
                    n += 1;
                }
            } else if !self.head_request {
                // Not counted in `written`, which counts against a Content-Length: one may still
                // come (a one-item app_iter after write()), and it frames only what follows.
                parts[n] = data;
                data_at = Some(n);
                n += 1;
            }
        } else if !data.is_empty() {
            self.written += data.len() as u64;
            if !self.logged_no_body {
                self.logged_no_body = true;
                let status = self.status.clone().unwrap_or_default();
                self.ctx.log(
                    py,
                    crate::log::LOG_WARNING,
                    &format!(
                        "application-written content was ignored due to HTTP response that may not contain a message-body: ({status})"
                    ),
                );
            }
        }
        let sent = match owner.zip(data_at) {
            Some((owner, at)) => {
                let hold = |part: &[u8]| {
                    // SAFETY: `part` lies within the bytes of `owner`, an immutable `bytes`
                    // object, which the reference kept here keeps alive.
                    unsafe { Shared::new(Box::new(owner.clone().unbind()), part) }
                };
                self.send(py, &parts[..n], Some((at, &hold)))
            }
            None => self.send(py, &parts[..n], None),
        };
        // The head was copied out (to the socket or the connection's buffer): its buffer serves
        // this thread's next response.
        if let Some(head) = head.filter(|h| h.capacity() <= HEAD_BUF_KEEP) {
            HEAD_BUF.set(head);
        }
        sent
    }

    fn send(&self, py: Python<'_>, parts: &[&[u8]], keep: Keep<'_>) -> PyResult<()> {
        if parts.iter().all(|p| p.is_empty()) {
            return Ok(());
        }
        let conn = &self.conn;
        let st = conn.lock();
        let st = conn
            .send_keeping(st, parts, keep)
            .map_err(|_| ClientDisconnected::new_err("Client disconnected"))?;
        let limit = self.ctx.outbuf_high_watermark;
        if st.out.held() > limit as u64 {
            drop(st);
            py.allow_threads(|| conn.wait_below(conn.lock(), limit).map(drop))
                .map_err(|_| ClientDisconnected::new_err("Client disconnected"))?;
        }
        Ok(())
    }

    /// Answers without the app: `status`, a text/plain body, no Content-Length (as Waitress's
    /// proxy middleware does through the app path).
    pub fn respond(mut self, py: Python<'_>, status: &str, body: &[u8]) -> Outcome {
        self.status = Some(status.to_owned());
        self.headers.push((
            PyString::new(py, "Content-Type").unbind(),
            PyString::new(py, "text/plain; charset=utf-8").unbind(),
        ));
        self.started = true;
        if self.write_bytes(py, body).and_then(|()| self.finish(py)).is_err() {
            return Outcome::Close;
        }
        self.outcome()
    }

    /// Sends `len` bytes of `file` from `offset` as the body (file_wrapper over a real file).
    fn send_file(&mut self, file: std::sync::Arc<std::fs::File>, offset: u64, len: u64) -> PyResult<()> {
        self.written += len;
        if self.head_request || !self.has_body() {
            return Ok(());
        }
        let conn = &self.conn;
        let st = conn.lock();
        let st = conn
            .send_file(st, file, offset, len)
            .map_err(|_| ClientDisconnected::new_err("Client disconnected"))?;
        drop(st);
        Ok(())
    }

    /// After the app_iter: send the headers if nothing was written, and the last chunk.
    pub fn finish(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.wrote_header {
            self.write_bytes(py, b"")?;
        }
        if self.chunked && !self.head_request {
            self.send(py, &[b"0\r\n\r\n"], None)?;
        }
        Ok(())
    }

    /// Answers with an error response (500 from a failing app) and marks the connection to close.
    pub fn send_error(&mut self, code: u16, detail: &str) {
        let bytes = error::error_response(
            self.version,
            code,
            detail,
            self.ctx.ident.as_deref(),
            date::http_date().as_str(),
        );
        self.wrote_header = true;
        self.close_on_finish = true;
        let st = self.conn.lock();
        drop(self.conn.send(st, &[&bytes]));
    }

    /// The too-few-bytes rule after the app_iter is exhausted: the client is still waiting for
    /// the rest of the body, so the connection closes. Not after HEAD, whose response has no
    /// body (Waitress closes then too, silently; a deliberate difference).
    fn check_length(&mut self, py: Python<'_>) {
        if self.head_request {
            return;
        }
        if let Some(cl) = self.content_length {
            if self.written != cl {
                self.close_on_finish = true;
                let msg = format!(
                    "application returned too few bytes ({}) for specified Content-Length ({cl}) via app_iter",
                    self.written
                );
                self.ctx.log(py, crate::log::LOG_WARNING, &msg);
            }
        }
    }

    fn remove_content_length(&mut self, py: Python<'_>) {
        self.headers.retain(|(k, _)| {
            !k.bind(py)
                .to_str()
                .is_ok_and(|k| k.eq_ignore_ascii_case("content-length"))
        });
    }
}

/// `start_response` handed to the app; `write` is its bound method.
///
/// One serves request after request on a worker (see `wsgi::serve`): between requests it holds
/// nothing, and while it serves one it holds the response and its own bound `write`, which
/// `start_response` returns (made once, not looked up per call).
#[pyclass(module = "maitre._core")]
pub struct StartResponse {
    /// The response being served and this object's bound `write`.
    inner: Option<(Response, Py<PyAny>)>,
}

impl StartResponse {
    /// One holding no response yet (see [`StartResponse::begin`]).
    pub fn idle() -> Self {
        StartResponse { inner: None }
    }

    /// Starts serving `resp`; `write` is this object's bound `write` method.
    pub fn begin(&mut self, resp: Response, write: Py<PyAny>) {
        self.inner = Some((resp, write));
    }

    /// Takes the response back after the app is done (and lets go of the bound `write`, which
    /// refers back to this object).
    pub fn take(&mut self) -> Response {
        self.inner.take().expect("response taken once").0
    }

    fn serving(&mut self) -> PyResult<&mut (Response, Py<PyAny>)> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("the response is already finished"))
    }

    fn get(&mut self) -> PyResult<&mut Response> {
        self.serving().map(|(resp, _)| resp)
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        mut slf: PyRefMut<'_, Self>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyObject> {
        let py = slf.py();
        let (resp, write) = slf.serving()?;
        let exc_info = exc_info.filter(|e| !e.is_none());
        match exc_info {
            None if resp.started => {
                return Err(PyAssertionError::new_err(
                    "start_response was called a second time without providing exc_info.",
                ));
            }
            Some(info) => {
                if resp.wrote_header {
                    let value = info.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                // Per PEP 3333 the headers set so far are replaced.
                resp.headers.clear();
            }
            None => {}
        }
        resp.start(py, status, headers)?;
        Ok(write.clone_ref(py))
    }

    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.get()?.write(py, data)
    }
}

/// Sends the app_iter: the file_wrapper fast path, or iteration with Waitress's rules.
pub fn send_app_iter(py: Python<'_>, sr: &Py<StartResponse>, app_iter: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(fw) = app_iter.downcast::<FileWrapper>() {
        let cl = sr.try_borrow_mut(py)?.get()?.content_length;
        let (start, size) = fw.borrow().prepare(py, cl)?;
        if size > 0 {
            let file = fw.borrow().dup_fd(py);
            // Borrowed with a check, as below: a thread the app started may be in `write()`.
            let mut guard = sr.try_borrow_mut(py)?;
            let r = guard.get()?;
            if cl != Some(size) {
                if cl.is_some() {
                    r.remove_content_length(py);
                }
                r.content_length = Some(size);
            }
            r.write_bytes(py, b"")?;
            if let Some(file) = file {
                // A real file: the kernel copies it to the socket (sendfile), from the
                // current position, without passing through Python or our memory.
                return r.send_file(file, start, size);
            }
            drop(guard);
            let mut remain = size;
            while remain > 0 {
                let block = fw.borrow().read_block(py, remain)?;
                let Some(block) = block else { break };
                let data = block.bind(py);
                remain = remain.saturating_sub(data.as_bytes().len() as u64);
                let mut guard = sr.try_borrow_mut(py)?;
                guard.get()?.write_pybytes(py, data)?;
            }
            return Ok(());
        }
    }
    let mut first = true;
    for item in app_iter.try_iter()? {
        let chunk = item?;
        let mut guard = sr.try_borrow_mut(py)?;
        let r = guard.get()?;
        if first {
            first = false;
            if r.content_length.is_none() && app_iter.len().ok() == Some(1) {
                r.content_length = Some(chunk.len()? as u64);
            }
        }
        if let Ok(b) = chunk.downcast::<PyBytes>() {
            if !b.as_bytes().is_empty() {
                r.write_pybytes(py, b)?;
            }
        } else if chunk.len()? > 0 {
            r.write(py, &chunk)?;
        }
    }
    let mut guard = sr.try_borrow_mut(py)?;
    guard.get()?.check_length(py);
    Ok(())
}
