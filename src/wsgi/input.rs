//! `wsgi.input`: a read-only file over the buffered request body (memory or temporary file),
//! which never reads past the end of the body.

use std::os::unix::fs::FileExt;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::http::body::{self, Body};

#[pyclass(module = "maitre._core")]
pub struct InputStream {
    body: Body,
    pos: u64,
}

impl Drop for InputStream {
    fn drop(&mut self) {
        self.refill(Body::Empty);
    }
}

impl InputStream {
    pub fn new(body: Body) -> Self {
        InputStream { body, pos: 0 }
    }

    /// Lets go of the body (a memory buffer goes back for reuse, a file is closed) and reads
    /// `body` from its start instead.
    pub fn refill(&mut self, body: Body) {
        if let Body::Memory(buf) = std::mem::replace(&mut self.body, body) {
            body::recycle(buf);
        }
        self.pos = 0;
    }

    fn len(&self) -> u64 {
        self.body.len()
    }

    /// Up to `n` bytes from the current position, as a new `bytes` (filled in place: no
    /// intermediate copy).
    fn take<'py>(&mut self, py: Python<'py>, n: u64) -> PyResult<Bound<'py, PyBytes>> {
        let n = n.min(self.len().saturating_sub(self.pos)) as usize;
        let start = self.pos;
        let bytes = PyBytes::new_with(py, n, |out| {
            match &self.body {
                Body::Empty => {}
                Body::Memory(v) => out.copy_from_slice(&v[start as usize..start as usize + n]),
                Body::File { file, .. } => file
                    .read_exact_at(out, start)
                    .map_err(|e| PyOSError::new_err(e.to_string()))?,
            }
            Ok(())
        })?;
        self.pos += n as u64;
        Ok(bytes)
    }

    /// The length of the next line (up to and including `\n`), at most `limit` bytes.
    fn line_len(&self, limit: u64) -> PyResult<u64> {
        let avail = self.len().saturating_sub(self.pos).min(limit);
        match &self.body {
            Body::Empty => Ok(0),
            Body::Memory(v) => {
                let s = &v[self.pos as usize..(self.pos + avail) as usize];
                Ok(s.iter().position(|&b| b == b'\n').map_or(avail, |i| i as u64 + 1))
            }
            Body::File { file, .. } => {
                let mut scanned = 0u64;
                let mut buf = [0u8; 8192];
                while scanned < avail {
                    let want = (avail - scanned).min(buf.len() as u64) as usize;
                    file.read_exact_at(&mut buf[..want], self.pos + scanned)
                        .map_err(|e| PyOSError::new_err(e.to_string()))?;
                    if let Some(i) = buf[..want].iter().position(|&b| b == b'\n') {
                        return Ok(scanned + i as u64 + 1);
                    }
                    scanned += want as u64;
                }
                Ok(avail)
            }
        }
    }
}

fn limit(size: Option<i64>) -> u64 {
    match size {
        Some(n) if n >= 0 => n as u64,
        _ => u64::MAX,
    }
}

#[pymethods]
impl InputStream {
    #[pyo3(signature = (size=-1))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        self.take(py, limit(size))
    }

    #[pyo3(signature = (size=-1))]
    fn readline<'py>(&mut self, py: Python<'py>, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let n = self.line_len(limit(size))?;
        self.take(py, n)
    }

    #[pyo3(signature = (hint=-1))]
    fn readlines<'py>(&mut self, py: Python<'py>, hint: Option<i64>) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint);
        let lines = PyList::empty(py);
        let mut total = 0u64;
        while self.pos < self.len() {
            let n = self.line_len(u64::MAX)?;
            let line = self.take(py, n)?;
            total += line.as_bytes().len() as u64;
            lines.append(line)?;
            if hint != u64::MAX && total >= hint {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if self.pos >= self.len() {
            return Ok(None);
        }
        self.readline(py, None).map(Some)
    }

    #[pyo3(signature = (offset, whence=0))]
    fn seek(&mut self, offset: i64, whence: i32) -> PyResult<u64> {
        let base = match whence {
            0 => 0i128,
            1 => self.pos as i128,
            2 => self.len() as i128,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "invalid whence ({whence}, should be 0, 1 or 2)"
                )))
            }
        };
        let target = base + offset as i128;
        if target < 0 {
            return Err(PyValueError::new_err(format!("negative seek value {target}")));
        }
        self.pos = target as u64;
        Ok(self.pos)
    }

    fn tell(&self) -> u64 {
        self.pos
    }

    fn readable(&self) -> bool {
        true
    }

    fn seekable(&self) -> bool {
        true
    }

    fn writable(&self) -> bool {
        false
    }

    fn close(&mut self) {}

    #[getter]
    fn closed(&self) -> bool {
        false
    }
}
