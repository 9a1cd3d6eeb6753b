"""``start_response``, its ``write`` and ``wsgi.input`` belong to one request, over a real socket.

maitre hands each worker's next request the same ``start_response`` object (and its bound
``write``) and the same ``wsgi.input`` object when nothing else holds them. An app that keeps
them from one request must not be able to touch a later request with them, and every request must
get objects that work as new: its own body from its first byte.
"""

from __future__ import annotations

from support.http import Conn, request_bytes
from support.server import IS_WAITRESS

KEPT = []


def keeping_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/keep":
        write = start_response("200 OK", [("Content-Length", "4")])
        KEPT[:] = [start_response, write]
        return [b"kept"]
    if path == "/use-kept":
        # The kept pair, called while this request is being served (before and after its own
        # start_response): what each call did goes back in a header.
        old_start, old_write = KEPT
        outcomes = [attempt(lambda: old_write(b"XXXX")),
                    attempt(lambda: old_start("500 Oops", [("Content-Length", "0")]))]
        write = start_response("200 OK", [("Content-Length", "2"),
                                          ("X-Outcomes", ",".join(outcomes))])
        attempt(lambda: old_write(b"YYYY"))  # after this response started: no effect either
        write(b"o")
        return [b"k"]
    body = b"plain"
    same = bool(KEPT) and start_response is KEPT[0]
    start_response("200 OK", [("Content-Length", str(len(body))), ("X-Same", str(same))])
    return [body]


def attempt(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the kind of failure is the result
        return type(exc).__name__
    return "ok"


def test_kept_start_response_cannot_touch_later_responses(serve):
    srv = serve(keeping_app, threads=1)
    with Conn(srv.addr) as c:
        assert c.request(request_bytes("/keep")).body == b"kept"
        # Later requests on the same (only) worker do not get the kept pair back.
        resp = c.request(request_bytes("/plain"))
        assert resp.status == 200 and resp.body == b"plain"
        assert resp.header("x-same") == "False"
        resp = c.request(request_bytes("/use-kept"))
        assert resp.status == 200 and resp.body == b"ok", "the kept write() reached this response"
        if not IS_WAITRESS:
            # Waitress's old write() quietly writes nothing (its Content-Length is used up);
            # maitre's kept objects refuse: that response is finished.
            assert resp.header("x-outcomes") == "RuntimeError,RuntimeError"
        # The connection is still in step: nothing stray was written after that response.
        resp = c.request(request_bytes("/plain"))
        assert resp.status == 200 and resp.body == b"plain"


KEPT_INPUT = []


def input_app(environ, start_response):
    inp = environ["wsgi.input"]
    path = environ["PATH_INFO"]
    if path == "/keep":  # keep the stream, read nothing
        KEPT_INPUT[:] = [inp]
        body = b""
    elif path == "/one-byte":  # leave most of the body unread
        body = inp.read(1)
    elif path == "/kept":  # the kept stream, after later requests
        body = KEPT_INPUT[0].read()
    else:
        body = inp.read()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_every_request_reads_its_own_body_from_the_start(serve):
    srv = serve(input_app, threads=1)
    with Conn(srv.addr) as c:
        assert c.request(request_bytes("/one-byte", b"abcdef")).body == b"a"
        assert c.request(request_bytes("/all", b"xyz")).body == b"xyz"
        assert c.request(request_bytes("/all")).body == b""
        assert c.request(request_bytes("/all", b"12345" * 1000)).body == b"12345" * 1000
        assert c.request(request_bytes("/keep", b"first")).body == b""
        assert c.request(request_bytes("/all", b"second")).body == b"second"
        assert c.request(request_bytes("/all")).body == b""
        if not IS_WAITRESS:  # Waitress closes a request's body buffer when the request ends
            assert c.request(request_bytes("/kept")).body == b"first"
