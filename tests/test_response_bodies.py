"""Response bodies the socket cannot take at once, over a real socket.

The client asks, then waits before reading, so most of the body has to wait in the server: the
kernel takes little of it (TCP_NOTSENT_LOWAT), large pieces of the app's ``bytes`` wait by
reference, the rest as copies in memory and, past ``outbuf_overflow``, in a temporary file. What
arrives must be exactly what the app produced, in order, and the app's objects must be let go
once they are sent.
"""

from __future__ import annotations

import hashlib
import io
import sys
import time

import pytest
from support.http import Conn, request_bytes
from support.server import IS_WAITRESS

MiB = 1024 * 1024


def pieces():
    """Distinct pieces of many sizes (each side of the 4 KiB by-reference threshold)."""
    sizes = [10, 4095, 4096, 70_000, 1, 300_000, 65_536, 8_000, 1_000_000, 17]
    out = []
    for round_ in range(3):
        for i, n in enumerate(sizes):
            seed = round_ * 16 + i
            out.append(bytes((k * 7 + seed) % 251 for k in range(min(n, 4096))) * (n // 4096 + 1))
            out[-1] = out[-1][:n]
    return out


PIECES = pieces()
WHOLE = b"".join(PIECES)


def body_app(environ, start_response):
    how = environ["PATH_INFO"].strip("/")
    if how == "generator":  # chunked, one piece at a time
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return iter(PIECES)
    if how == "length":  # the same pieces under a Content-Length
        start_response("200 OK", [("Content-Length", str(len(WHOLE)))])
        return iter(PIECES)
    if how == "one-block":  # one large block, handed to the kernel whole
        start_response("200 OK", [("Content-Length", str(len(WHOLE)))])
        return [WHOLE]
    if how == "write":  # the write() callable, then the app_iter
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        half = len(PIECES) // 2
        for p in PIECES[:half]:
            write(p)
        return iter(PIECES[half:])
    if how == "file-like":  # file_wrapper over something that is not a real file
        start_response("200 OK", [("Content-Length", str(len(WHOLE)))])
        return environ["wsgi.file_wrapper"](io.BytesIO(WHOLE), 100_000)
    raise ValueError(how)


@pytest.mark.parametrize("how", ["generator", "length", "one-block", "write", "file-like"])
def test_a_body_that_waits_for_the_reader_arrives_whole(serve, how):
    srv = serve(body_app)
    # With a Content-Length, twice on one connection: the second response follows the first
    # one's queued tail. A chunked response closes the connection (as Waitress does).
    times = 1 if how in ("generator", "write") else 2
    with Conn(srv.addr) as c:
        c.send(request_bytes(f"/{how}") * times)
        time.sleep(0.5)
        for _ in range(times):
            resp = c.read_response()
            assert resp.status == 200
            assert len(resp.body) == len(WHOLE)
            assert hashlib.sha256(resp.body).digest() == hashlib.sha256(WHOLE).digest()
        assert c.is_closed() == (times == 1)


CHUNK = bytes(range(256)) * 256  # 64 KiB, yielded many times by the app below


def refcount_app(environ, start_response):
    if environ["PATH_INFO"] == "/count":
        body = str(sys.getrefcount(CHUNK)).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Length", str(64 * len(CHUNK)))])
    return (CHUNK for _ in range(64))


def count(srv):
    with Conn(srv.addr) as c:
        return int(c.request(request_bytes("/count")).body)


def test_pieces_kept_by_reference_are_let_go_once_sent(serve):
    srv = serve(refcount_app)
    baseline = count(srv)
    with Conn(srv.addr) as c:
        c.send(request_bytes("/stream"))
        time.sleep(0.5)  # the app has finished; most of its 4 MiB waits in the server
        waiting = count(srv)
        if not IS_WAITRESS:  # Waitress copies every piece
            assert waiting > baseline, "large pieces wait by reference, not as copies"
        resp = c.read_response()
        assert resp.status == 200 and resp.body == CHUNK * 64
    deadline = time.monotonic() + 5
    while (now := count(srv)) != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert now == baseline, f"{now - baseline} references to the app's bytes were never let go"
