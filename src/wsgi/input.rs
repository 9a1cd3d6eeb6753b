//! `wsgi.input`: a read-only binary file over the buffered request body (memory or temporary
//! file), which answers every call as `io.BytesIO` over the same bytes would.
//!
//! Waitress hands the app the body's own buffer: a `BytesIO`, or a temporary file opened `w+b`
//! above `inbuf_overflow`. This stream is one object for both, and follows `BytesIO` in every
//! detail an app can see: positions past the end (reads there return `b""`), relative seeks
//! before the start (position 0), the exception types of bad arguments and their order against
//! the closed check, `readlines(hint)`, `readinto` into any writable buffer, `ValueError` after
//! `close()`, `io.UnsupportedOperation` from `fileno()`.
//!
//! One deliberate difference: the stream is read-only, as a file opened `rb` is (PEP 3333 gives
//! `wsgi.input` read methods only). `writable()` is False and `write`, `writelines` and
//! `truncate` raise `io.UnsupportedOperation` (a `ValueError` and an `OSError`), where `BytesIO`
//! and Waitress's buffers would let the app overwrite the body it was sent. The rest of BytesIO's
//! own API (`getvalue`, `getbuffer`) is left out: a file has neither (Waitress's spooled body
//! neither).
//!
//! A caller's mistake gets the exception `BytesIO` raises, never a Rust panic: positions are
//! checked against the body before any slice is taken.

use std::os::unix::fs::FileExt;

use pyo3::exceptions::{PyOSError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList};

use crate::http::body::{self, Body};

pyo3::import_exception!(io, UnsupportedOperation);

#[pyclass(module = "maitre._core")]
pub struct InputStream {
    body: Body,
    /// The position, which may lie past the end of the body (as in `BytesIO`); at most
    /// `isize::MAX`, the largest position a Python file can have.
    pos: u64,
    /// Set by `close()`; `refill` opens the stream again for the next request.
    closed: bool,
}

impl Drop for InputStream {
    fn drop(&mut self) {
        self.refill(Body::Empty);
    }
}

impl InputStream {
    pub fn new(body: Body) -> Self {
        InputStream {
            body,
            pos: 0,
            closed: false,
        }
    }

    /// Lets go of the body (a memory buffer goes back for reuse, a file is closed) and reads
    /// `body` from its start instead, open.
    pub fn refill(&mut self, body: Body) {
        if let Body::Memory(buf) = std::mem::replace(&mut self.body, body) {
            body::recycle(buf);
        }
        self.pos = 0;
        self.closed = false;
    }

    fn len(&self) -> u64 {
        self.body.len()
    }

    /// The bytes left from the position (0 when it lies past the end).
    fn remaining(&self) -> u64 {
        self.len().saturating_sub(self.pos)
    }

    fn check_open(&self) -> PyResult<()> {
        if self.closed {
            return Err(closed_error());
        }
        Ok(())
    }

    /// Fills `out` with the body's bytes from offset `start`; `out` must lie within the body.
    fn copy_at(&self, start: u64, out: &mut [u8]) -> PyResult<()> {
        if out.is_empty() {
            return Ok(());
        }
        match &self.body {
            Body::Empty => Err(out_of_body()),
            Body::Memory(v) => {
                let src = usize::try_from(start)
                    .ok()
                    .and_then(|s| v.get(s..s.checked_add(out.len())?))
                    .ok_or_else(out_of_body)?;
                out.copy_from_slice(src);
                Ok(())
            }
            Body::File { file, .. } => file
                .read_exact_at(out, start)
                .map_err(|e| PyOSError::new_err(e.to_string())),
        }
    }

    /// Up to `n` bytes from the position, as a new `bytes` (filled in place: no intermediate
    /// copy); the position moves past them.
    fn take<'py>(&mut self, py: Python<'py>, n: u64) -> PyResult<Bound<'py, PyBytes>> {
        let n = n.min(self.remaining());
        if n == 0 {
            return Ok(PyBytes::new(py, b""));
        }
        let start = self.pos;
        let bytes = PyBytes::new_with(py, n as usize, |out| self.copy_at(start, out))?;
        self.pos += n;
        Ok(bytes)
    }

    /// Fills the start of `out` from the position; returns how many bytes that was.
    fn fill(&mut self, out: &mut [u8]) -> PyResult<usize> {
        let n = (out.len() as u64).min(self.remaining()) as usize;
        if let Some(out) = out.get_mut(..n) {
            self.copy_at(self.pos, out)?;
            self.pos += n as u64;
        }
        Ok(n)
    }

    /// The length of the next line (up to and including `\n`), at most `limit` bytes; 0 at or
    /// past the end.
    fn line_len(&self, limit: u64) -> PyResult<u64> {
        let avail = self.remaining().min(limit);
        if avail == 0 {
            return Ok(0);
        }
        match &self.body {
            Body::Empty => Ok(0),
            Body::Memory(v) => {
                // `avail` > 0 means the position lies within the body.
                let start = self.pos as usize;
                let s = v.get(start..start + avail as usize).ok_or_else(out_of_body)?;
                Ok(memchr::memchr(b'\n', s).map_or(avail, |i| i as u64 + 1))
            }
            Body::File { file, .. } => {
                let mut scanned = 0u64;
                let mut buf = [0u8; 8192];
                while scanned < avail {
                    let want = (avail - scanned).min(buf.len() as u64) as usize;
                    let part = &mut buf[..want];
                    file.read_exact_at(part, self.pos + scanned)
                        .map_err(|e| PyOSError::new_err(e.to_string()))?;
                    if let Some(i) = memchr::memchr(b'\n', part) {
                        return Ok(scanned + i as u64 + 1);
                    }
                    scanned += want as u64;
                }
                Ok(avail)
            }
        }
    }

    /// `readinto` and `readinto1` (which are the same for a body that is all there).
    fn read_into(&mut self, buffer: &Bound<'_, PyAny>, method: &str) -> PyResult<usize> {
        let mut view = WritableBuffer::get(buffer, method)?;
        self.check_open()?;
        self.fill(view.as_mut_slice())
    }
}

fn closed_error() -> PyErr {
    PyValueError::new_err("I/O operation on closed file.")
}

/// Cannot happen (every caller stays within the body); an exception rather than a panic.
#[cold]
fn out_of_body() -> PyErr {
    PyOSError::new_err("request body read out of range")
}

fn read_only(method: &str) -> PyErr {
    UnsupportedOperation::new_err(format!("{method}: wsgi.input is read-only"))
}

/// `obj.__index__()` as a `Py_ssize_t` (OverflowError when it does not fit, TypeError when
/// `obj` is not an integer), the conversion `BytesIO` applies to sizes and positions.
fn as_ssize(obj: &Bound<'_, PyAny>) -> PyResult<isize> {
    // SAFETY: `obj` is a live object and the GIL is held; PyExc_OverflowError is a static
    // exception type. A result of -1 with an exception set is an error, taken below.
    let n = unsafe { ffi::PyNumber_AsSsize_t(obj.as_ptr(), ffi::PyExc_OverflowError) };
    if n == -1 {
        if let Some(err) = PyErr::take(obj.py()) {
            return Err(err);
        }
    }
    Ok(n)
}

/// A size argument of `read`, `read1` and `readline`: an integer or None; None or a negative
/// size means no limit (u64::MAX).
fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
    let size = match size {
        Some(size) if !size.is_none() => size,
        _ => return Ok(u64::MAX),
    };
    // SAFETY: `size` is a live object; PyIndex_Check only looks at its type.
    if unsafe { ffi::PyIndex_Check(size.as_ptr()) } == 0 {
        return Err(PyTypeError::new_err(format!(
            "argument should be integer or None, not '{}'",
            size.get_type().name()?
        )));
    }
    Ok(u64::try_from(as_ssize(size)?).unwrap_or(u64::MAX))
}

/// The hint of `readlines`: an `int` (not any `__index__` object, as in `BytesIO`) or None;
/// 0 when there is no limit (None, 0 or negative).
fn hint_arg(hint: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
    let hint = match hint {
        Some(hint) if !hint.is_none() => hint,
        _ => return Ok(0),
    };
    if !hint.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "integer argument expected, got '{}'",
            hint.get_type().name()?
        )));
    }
    let hint: isize = hint.extract()?;
    Ok(u64::try_from(hint).unwrap_or(0))
}

/// The position of `seek`: an integer that fits a `Py_ssize_t`. (Arguments are converted in
/// their order, as PyO3 extracts them: `seek(None, 2**40)` is the TypeError, as in `BytesIO`.)
struct Ssize(isize);

impl<'py> FromPyObject<'py> for Ssize {
    fn extract_bound(pos: &Bound<'py, PyAny>) -> PyResult<Self> {
        as_ssize(pos).map(Ssize)
    }
}

/// The `whence` of `seek`: an integer that fits a C int (None is a TypeError, not the default).
struct Whence(i32);

impl<'py> FromPyObject<'py> for Whence {
    fn extract_bound(whence: &Bound<'py, PyAny>) -> PyResult<Self> {
        i32::try_from(as_ssize(whence)?)
            .map(Whence)
            .map_err(|_| PyOverflowError::new_err("Python int too large to convert to C int"))
    }
}

/// A writable, C-contiguous buffer of a Python object (bytearray, memoryview, array, mmap...),
/// held until dropped.
struct WritableBuffer {
    view: Box<ffi::Py_buffer>,
}

impl WritableBuffer {
    /// The buffer of `obj`, or the TypeError `BytesIO.readinto` raises for anything that is not
    /// a writable, contiguous bytes-like object.
    fn get(obj: &Bound<'_, PyAny>, method: &str) -> PyResult<Self> {
        let not_writable = |what: &str| -> PyResult<PyErr> {
            Ok(PyTypeError::new_err(format!(
                "{method}() argument must be {what}, not {}",
                obj.get_type().name()?
            )))
        };
        let mut view = Box::new(ffi::Py_buffer::new());
        // SAFETY: `view` is a zeroed Py_buffer that lives (boxed, never moved) until it is
        // released in Drop; the GIL is held. On failure nothing is held and the exception set
        // is replaced by our TypeError.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, ffi::PyBUF_WRITABLE) } != 0 {
            drop(PyErr::take(obj.py()));
            return Err(not_writable("read-write bytes-like object")?);
        }
        let buffer = WritableBuffer { view };
        // SAFETY: the view was filled in by PyObject_GetBuffer above.
        if unsafe { ffi::PyBuffer_IsContiguous(&*buffer.view, b'C' as std::os::raw::c_char) } == 0 {
            return Err(not_writable("contiguous buffer")?);
        }
        Ok(buffer)
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = usize::try_from(self.view.len).unwrap_or(0);
        if self.view.buf.is_null() || len == 0 {
            return &mut [];
        }
        // SAFETY: a writable, contiguous buffer of `len` bytes at `buf`, exported to us and kept
        // alive until `self` is dropped; `&mut self` makes this the only slice over it.
        unsafe { std::slice::from_raw_parts_mut(self.view.buf.cast::<u8>(), len) }
    }
}

impl Drop for WritableBuffer {
    fn drop(&mut self) {
        // SAFETY: the view holds an exported buffer (only successful exports are wrapped), and
        // whoever drops it holds the GIL (it never leaves a method called from Python).
        unsafe { ffi::PyBuffer_Release(&mut *self.view) };
    }
}

/// Every method takes its arguments positionally only, as `BytesIO`'s do, and converts them
/// (raising TypeError or OverflowError) before it checks that the stream is open, in the same
/// order as `BytesIO`.
#[pymethods]
impl InputStream {
    #[pyo3(signature = (size=None, /))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyBytes>> {
        let n = size_arg(size)?;
        self.check_open()?;
        self.take(py, n)
    }

    /// The same as `read` (the whole body is already there).
    #[pyo3(signature = (size=None, /))]
    fn read1<'py>(&mut self, py: Python<'py>, size: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyBytes>> {
        self.read(py, size)
    }

    #[pyo3(signature = (buffer, /))]
    fn readinto(&mut self, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.read_into(buffer, "readinto")
    }

    #[pyo3(signature = (buffer, /))]
    fn readinto1(&mut self, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.read_into(buffer, "readinto1")
    }

    #[pyo3(signature = (size=None, /))]
    fn readline<'py>(&mut self, py: Python<'py>, size: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size)?;
        self.check_open()?;
        let n = self.line_len(limit)?;
        self.take(py, n)
    }

    /// Lines until the end, or until they add up to at least `hint` bytes when `hint` > 0.
    #[pyo3(signature = (hint=None, /))]
    fn readlines<'py>(&mut self, py: Python<'py>, hint: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyList>> {
        // BytesIO checks for a closed stream before it looks at the hint.
        self.check_open()?;
        let hint = hint_arg(hint)?;
        let lines = PyList::empty(py);
        let mut total = 0u64;
        loop {
            let n = self.line_len(u64::MAX)?;
            if n == 0 {
                break;
            }
            lines.append(self.take(py, n)?)?;
            total += n;
            if hint > 0 && total >= hint {
                break;
            }
        }
        Ok(lines)
    }

    /// The stream itself, even once closed (as `BytesIO`; `next` then raises).
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.check_open()?;
        let n = self.line_len(u64::MAX)?;
        if n == 0 {
            return Ok(None);
        }
        self.take(py, n).map(Some)
    }

    /// `BytesIO.seek`: a negative absolute position is a ValueError, a relative one that lands
    /// before the start goes to 0, and any position past the end is kept.
    #[pyo3(signature = (pos, whence=Whence(0), /))]
    fn seek(&mut self, pos: Ssize, whence: Whence) -> PyResult<u64> {
        let (Ssize(offset), Whence(whence)) = (pos, whence);
        let offset = offset as i128;
        self.check_open()?;
        if offset < 0 && whence == 0 {
            return Err(PyValueError::new_err(format!("negative seek value {offset}")));
        }
        let base = match whence {
            0 => 0,
            1 => self.pos as i128,
            2 => self.len() as i128,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "invalid whence ({whence}, should be 0, 1 or 2)"
                )))
            }
        };
        let target = base + offset;
        if target > isize::MAX as i128 {
            return Err(PyOverflowError::new_err("new position too large"));
        }
        self.pos = target.max(0) as u64;
        Ok(self.pos)
    }

    fn tell(&self) -> PyResult<u64> {
        self.check_open()?;
        Ok(self.pos)
    }

    fn readable(&self) -> PyResult<bool> {
        self.check_open()?;
        Ok(true)
    }

    fn seekable(&self) -> PyResult<bool> {
        self.check_open()?;
        Ok(true)
    }

    /// False: the stream is read-only (see the module's documentation).
    fn writable(&self) -> PyResult<bool> {
        self.check_open()?;
        Ok(false)
    }

    fn isatty(&self) -> PyResult<bool> {
        self.check_open()?;
        Ok(false)
    }

    fn flush(&self) -> PyResult<()> {
        self.check_open()
    }

    /// No descriptor, as `BytesIO` (even when the body is in a temporary file, whose
    /// descriptor is the server's).
    fn fileno(&self) -> PyResult<()> {
        Err(UnsupportedOperation::new_err("fileno"))
    }

    fn detach(&self) -> PyResult<()> {
        Err(UnsupportedOperation::new_err("detach"))
    }

    #[pyo3(signature = (_data, /))]
    fn write(&self, _data: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(read_only("write"))
    }

    #[pyo3(signature = (_lines, /))]
    fn writelines(&self, _lines: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(read_only("writelines"))
    }

    #[pyo3(signature = (_size=None, /))]
    fn truncate(&self, _size: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        Err(read_only("truncate"))
    }

    /// Closes the stream and lets go of the body at once; closing again does nothing.
    fn close(&mut self) {
        self.refill(Body::Empty);
        self.closed = true;
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        slf.check_open()?;
        Ok(slf)
    }

    #[pyo3(signature = (*_exc_info))]
    fn __exit__(&mut self, _exc_info: &Bound<'_, pyo3::types::PyTuple>) {
        self.close();
    }
}
