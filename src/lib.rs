//! maitre's engine: a Waitress-compatible HTTP/1.x server for WSGI applications.
//!
//! Layout:
//! - [`http`]: sans-IO HTTP/1.x (parsing, body decoding, error responses). No sockets, no Python.
//! - [`buffers`]: pending output (memory, spill file, file ranges) and how it is sent.
//! - [`channel`]: one connection's shared state and output path.
//! - [`reactor`]: the event loop (accept, read, parse, write, close, limits, timeouts).
//! - `dispatch`, `wsgi`, `server` (with the `python` feature): the worker pool, the WSGI glue and
//!   the `maitre._core.Engine` class.
//! - `testkit` (with the `testkit` feature): the split-input harness of the tests and fuzz targets.

// The unit tests are built with the dev-dependencies too (the crate itself with `testkit`, for
// the integration tests), which they do not use.
#![cfg_attr(test, allow(unused_crate_dependencies))]

pub mod buffers;
pub mod channel;
pub mod http;
pub mod log;
pub mod net;
pub mod reactor;
pub mod sched;

#[cfg(feature = "python")]
pub mod dispatch;
#[cfg(feature = "python")]
pub mod server;
#[cfg(feature = "python")]
pub mod wsgi;

#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "python")]
mod module {
    use pyo3::prelude::*;

    #[pymodule]
    fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // Built with the fault-injection hooks the test suite uses (the `test-hooks` feature).
        m.add("TEST_HOOKS", cfg!(feature = "test-hooks"))?;
        m.add_class::<crate::server::Engine>()?;
        m.add_class::<crate::wsgi::file_wrapper::FileWrapper>()?;
        m.add_class::<crate::wsgi::input::InputStream>()?;
        m.add(
            "ClientDisconnected",
            m.py().get_type::<crate::wsgi::ClientDisconnected>(),
        )?;
        Ok(())
    }
}
