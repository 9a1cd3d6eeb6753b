//! maitre's engine: a Waitress-compatible HTTP/1.x server for WSGI applications.
//!
//! Layout:
//! - [`http`]: sans-IO HTTP/1.x (parsing, body decoding, error responses). No sockets, no Python.
//! - `server`, `reactor`, `channel`, `dispatch`, `wsgi`: the event loop, connections, the Python
//!   worker pool and the WSGI glue (built with the `python` feature).

pub mod http;
