"""``wsgiref.validate.validator`` around a test app, run by the server under test.

Anything the validator complains about in the server child — an ``AssertionError`` raised while
calling, iterating or closing the app, a ``WSGIWarning``, or an exception in ``__del__`` (an
iterator that was never closed) — is appended to a report file that the test reads back.
"""

import json
import os
import sys
import tempfile
import warnings
from wsgiref.validate import validator

import pytest
from support.http import Conn
from support.server import start_server


def inner_app(environ, start_response):
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    if path == "/warn":  # deliberately invalid status: proves the capture works
        start_response("200", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/generator":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"alpha,"
            yield b""
            yield b"beta,"
            yield b"gamma"
        return gen()
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain"),
                                          ("Content-Length", "10")])
        write(b"hello")
        write(b"world")
        return []
    if path == "/write-chunked":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"via-write;")
        return [b"via-iter"]
    if method == "POST":
        inp = environ["wsgi.input"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        first = inp.readline()  # the validator wants read() with a size argument
        body = first + inp.read(length - len(first))
    else:
        body = b""
    out = json.dumps({"method": method, "len": len(body), "body": body.decode("latin-1")})
    out = out.encode("ascii")
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]


class _Recorder:
    """Wraps the validated app; records every exception it raises and passes it on."""

    def __init__(self, app, report):
        self.app = app
        self.report = report

    def note(self, what):
        with open(self.report, "a") as f:
            f.write(what.rstrip() + "\n---\n")

    def __call__(self, environ, start_response):
        try:
            it = self.app(environ, start_response)
        except BaseException as exc:
            self.note(f"call: {exc!r}")
            raise
        return _RecordingIter(it, self)


class _RecordingIter:
    def __init__(self, it, rec):
        self.it = iter(it)
        self.inner = it
        self.rec = rec

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self.it)
        except StopIteration:
            raise
        except BaseException as exc:
            self.rec.note(f"iterate: {exc!r}")
            raise

    def close(self):
        try:
            self.inner.close()
        except BaseException as exc:
            self.rec.note(f"close: {exc!r}")
            raise


def make_app(report):
    def app(environ, start_response):
        # installed lazily in the server child (the parent's hooks stay untouched)
        if not getattr(app, "hooked", False):
            app.hooked = True

            def showwarning(message, category, filename, lineno, file=None, line=None):
                rec.note(f"warning: {category.__name__}: {message}")
            warnings.showwarning = showwarning
            warnings.simplefilter("always")

            def unraisable(u):
                rec.note(f"unraisable: {u.exc_value!r} in {u.object!r}")
            sys.unraisablehook = unraisable
        return rec(environ, start_response)

    rec = _Recorder(validator(inner_app), report)
    return app


@pytest.fixture(scope="module")
def server():
    fd, report = tempfile.mkstemp(prefix="maitre-validate-")
    os.close(fd)
    handle = start_server(make_app(report), threads=2)

    def read_report():
        import gc

        gc.collect()
        with open(report) as f:
            return f.read()

    def reset():
        open(report, "w").close()

    handle.read_report = read_report
    handle.reset = reset
    yield handle
    handle.stop()
    os.unlink(report)


def _run(server, data, method="GET"):
    server.reset()
    with Conn(server.addr) as c:
        resp = c.request(data, method=method)
        c.is_closed(0.2)
    # let the server finish closing the app_iter after the response went out
    import time

    time.sleep(0.2)
    return resp, server.read_report()


def test_get(server):
    resp, report = _run(server, b"GET /?q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert resp.status == 200 and resp.json()["method"] == "GET"
    assert report == ""


def test_post(server):
    resp, report = _run(server, b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
                                b"Content-Length: 11\r\n\r\nline1\nrest!", "POST")
    assert resp.status == 200 and resp.json()["body"] == "line1\nrest!"
    assert report == ""


def test_chunked_post(server):
    resp, report = _run(server, b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                b"5\r\nline1\r\n6\r\n\nrest!\r\n0\r\n\r\n", "POST")
    assert resp.status == 200 and resp.json()["body"] == "line1\nrest!"
    assert report == ""


def test_generator_response(server):
    resp, report = _run(server, b"GET /generator HTTP/1.1\r\nHost: a\r\n\r\n")
    assert resp.status == 200 and resp.body == b"alpha,beta,gamma"
    assert report == ""


def test_write_callable(server):
    resp, report = _run(server, b"GET /write HTTP/1.1\r\nHost: a\r\n\r\n")
    assert resp.status == 200 and resp.body == b"helloworld"
    assert report == ""


def test_write_then_iterable(server):
    resp, report = _run(server, b"GET /write-chunked HTTP/1.1\r\nHost: a\r\n\r\n")
    assert resp.status == 200 and resp.body == b"via-write;via-iter"
    assert report == ""


def test_http10_get(server):
    resp, report = _run(server, b"GET / HTTP/1.0\r\n\r\n")
    assert resp.status == 200
    assert report == ""


def test_capture_works(server):
    """The validator's complaints do reach the report: a bad status string warns."""
    _resp, report = _run(server, b"GET /warn HTTP/1.1\r\nHost: a\r\n\r\n")
    assert "WSGIWarning" in report and "status string" in report, report
