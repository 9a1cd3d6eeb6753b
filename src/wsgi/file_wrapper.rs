//! `wsgi.file_wrapper`: wraps a file-like object so the server can send it efficiently.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[pyclass(module = "maitre._core")]
pub struct FileWrapper {
    file: PyObject,
    block_size: usize,
}

impl FileWrapper {
    /// Bytes left to send from the current position, at most `cl`; 0 when the file cannot seek
    /// (it is then sent by iteration).
    pub fn prepare(&self, py: Python<'_>, cl: Option<u64>) -> PyResult<u64> {
        let f = self.file.bind(py);
        let seekable = match f.getattr("seekable") {
            Ok(m) => m.call0()?.is_truthy()?,
            Err(_) => f.hasattr("seek")? && f.hasattr("tell")?,
        };
        if !seekable {
            return Ok(0);
        }
        let start: u64 = f.call_method0("tell")?.extract()?;
        f.call_method1("seek", (0, 2))?;
        let end: u64 = f.call_method0("tell")?.extract()?;
        f.call_method1("seek", (start,))?;
        let size = end.saturating_sub(start);
        Ok(match cl {
            Some(cl) => size.min(cl),
            None => size,
        })
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
