//! `wsgi.file_wrapper`: wraps a file-like object so the server can send it efficiently.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[pyclass(module = "maitre._core")]
pub struct FileWrapper {
    file: PyObject,
    block_size: usize,
}

impl FileWrapper {
    /// The current position and the bytes left to send from it, at most `cl`; size 0 when the
    /// file cannot seek (it is then sent by iteration).
    pub fn prepare(&self, py: Python<'_>, cl: Option<u64>) -> PyResult<(u64, u64)> {
        let f = self.file.bind(py);
        let seekable = match f.getattr("seekable") {
            Ok(m) => m.call0()?.is_truthy()?,
            Err(_) => f.hasattr("seek")? && f.hasattr("tell")?,
        };
        if !seekable {
            return Ok((0, 0));
        }
        let start: u64 = f.call_method0("tell")?.extract()?;
        f.call_method1("seek", (0, 2))?;
        let end: u64 = f.call_method0("tell")?.extract()?;
        f.call_method1("seek", (start,))?;
        let size = end.saturating_sub(start);
        let size = match cl {
            Some(cl) => size.min(cl),
            None => size,
        };
        Ok((start, size))
    }

    /// A duplicate of the file's descriptor when it is a regular file (for sendfile); None for
    /// file-likes without one (BytesIO, sockets, pipes), which are read block by block.
    pub fn dup_fd(&self, py: Python<'_>) -> Option<Arc<File>> {
        let fd: i32 = self.file.bind(py).call_method0("fileno").ok()?.extract().ok()?;
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor the app owns gives us our own descriptor.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return None;
        }
        // SAFETY: `dup` is a fresh descriptor owned by nothing else.
        let file = unsafe { File::from_raw_fd(dup) };
        let meta = file.metadata().ok()?;
        meta.is_file().then(|| Arc::new(file))
    }

    /// Reads the next block (at most `remain` bytes); None at end of file.
    pub fn read_block(&self, py: Python<'_>, remain: u64) -> PyResult<Option<Py<PyBytes>>> {
        let n = (self.block_size as u64).min(remain);
        let data = self.file.bind(py).call_method1("read", (n,))?;
        let data = data.downcast_into::<PyBytes>()?;
        if data.as_bytes().is_empty() {
            Ok(None)
        } else {
            Ok(Some(data.unbind()))
        }
    }
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (file, block_size=32768))]
    fn new(file: PyObject, block_size: usize) -> Self {
        FileWrapper {
            file,
            block_size: block_size.max(1),
        }
    }

    #[getter]
    fn file(&self, py: Python<'_>) -> PyObject {
        self.file.clone_ref(py)
    }

    #[getter]
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        let data = self.file.bind(py).call_method1("read", (self.block_size,))?;
        if data.is_truthy()? {
            Ok(Some(data.unbind()))
        } else {
            Ok(None)
        }
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.file.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}
