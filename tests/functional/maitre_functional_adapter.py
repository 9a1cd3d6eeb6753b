"""pytest plugin: run Waitress 3.0.2's ``tests/test_functional.py`` against another implementation.

Loaded with ``-p maitre_functional_adapter`` inside the unpacked Waitress sdist. It replaces the
``server`` class attribute of ``TcpTests``/``UnixTests`` (reference §6.2) so that every server the
suite starts is built by ``<impl>.create_server``. ``impl`` is the module named by
``MAITRE_TEST_IMPL`` (``maitre`` by default). Only construction changes: no assertion is edited or
skipped. ``ident="waitress"`` is passed because the suite asserts ``Server: waitress``.
"""

import importlib
import logging
import os
import socket

import tests.test_functional as tf

IMPL_NAME = os.environ.get("MAITRE_TEST_IMPL", "maitre")
impl = importlib.import_module(IMPL_NAME)


def _quiet():
    # The suite silences the "waitress" logger in the child; do the same for ours.
    logging.getLogger(IMPL_NAME).addHandler(logging.NullHandler())
    logging.getLogger(IMPL_NAME).propagate = False


class TcpFixture:
    family = socket.AF_INET

    def __new__(cls, app, queue, **kw):
        _quiet()
        kw.setdefault("ident", "waitress")
        srv = impl.create_server(app, host="127.0.0.1", port=0, **kw)
        queue.put(("127.0.0.1", int(srv.effective_port)))
        return srv


class UnixFixture:
    family = socket.AF_UNIX

    def __new__(cls, app, queue, **kw):
        _quiet()
        kw.setdefault("ident", "waitress")
        path = f"/tmp/{IMPL_NAME}.test-{os.getpid()}.sock"
        srv = impl.create_server(app, unix_socket=path, **kw)
        queue.put(path)
        return srv


tf.TcpTests.server = TcpFixture
if hasattr(tf, "UnixTests"):
    tf.UnixTests.server = UnixFixture
