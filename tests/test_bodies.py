"""Request bodies of every size class, over a real socket: what the app reads is what was sent.

The engine reads a large Content-Length body straight into the body's own buffer, a small one
through its read buffer, a chunked one through the decoder, and one over ``inbuf_overflow`` into a
temporary file. These tests send bodies on each side of each boundary, in one write with more
requests pipelined behind them and dribbled in small pieces, and read them back through every
``wsgi.input`` method.
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from support.http import Conn


def digest_app(environ, start_response):
    """Reads the body the way ``?how=`` says and answers its length and SHA-256."""
    inp = environ["wsgi.input"]
    how = environ.get("QUERY_STRING", "") or "read"
    if how == "read":
        data = inp.read()
    elif how == "sized":
        parts = []
        while True:
            part = inp.read(7000)
            if not part:
                break
            parts.append(part)
        data = b"".join(parts)
    elif how == "lines":
        data = b"".join(inp)
    elif how == "readlines":
        data = b"".join(inp.readlines())
    else:
        raise ValueError(how)
    assert inp.read() == b"", "nothing past the end of the body"
    body = json.dumps(
        {
            "len": len(data),
            "sha": hashlib.sha256(data).hexdigest(),
            "content_length": environ.get("CONTENT_LENGTH"),
            "path": environ["PATH_INFO"],
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def payload(n, seed=0):
    """``n`` bytes with line breaks here and there (for readline), different for each seed."""
    block = bytes((i * 31 + seed) % 256 for i in range(4096))
    data = (block * (n // len(block) + 1))[:n]
    return data


def post(path, data, chunked=False):
    if chunked:
        body = b""
        step = 10_000
        for i in range(0, len(data), step):
            part = data[i : i + step]
            body += b"%x\r\n" % len(part) + part + b"\r\n"
        body += b"0\r\n\r\n"
        framing = b"Transfer-Encoding: chunked\r\n"
    else:
        body = data
        framing = b"Content-Length: %d\r\n" % len(data)
    return b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n" + body


def check(resp, path, data):
    assert resp.status == 200, resp
    got = resp.json()
    assert got["path"] == path.split("?")[0]
    assert got["len"] == len(data)
    assert got["sha"] == hashlib.sha256(data).hexdigest()
    assert got["content_length"] == str(len(data))


# Each side of the direct-read threshold (16 KiB), a typical upload, each side of the default
# inbuf_overflow (512 KiB, past which the body goes to a file).
SIZES = [100, 16_383, 16_384, 65_536, 300_001, 524_288, 524_289, 2_000_000]


@pytest.mark.parametrize("how", ["read", "sized", "lines", "readlines"])
def test_bodies_pipelined_in_one_write(serve, how):
    srv = serve(digest_app)
    requests = []
    wire = b""
    for i, n in enumerate(SIZES):
        for chunked in (False, True):
            data = payload(n, seed=i * 2 + chunked)
            path = f"/b{i}{'c' if chunked else ''}?{how}"
            requests.append((path, data))
            wire += post(path, data, chunked)
            # A bodiless request right behind each body: its bytes arrive with the body's end.
            requests.append((f"/after{i}{chunked}?{how}", b""))
            wire += f"GET /after{i}{chunked}?{how} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    with Conn(srv.addr, timeout=60) as c:
        c.send(wire)
        for path, data in requests:
            resp = c.read_response()
            if data:
                check(resp, path, data)
            else:
                assert resp.status == 200
                assert resp.json()["len"] == 0


@pytest.mark.parametrize("n", [16_384, 65_536, 524_288])
def test_body_dribbled_in_small_pieces(serve, n):
    srv = serve(digest_app)
    data = payload(n, seed=n)
    wire = post("/slow", data) + b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n"
    with Conn(srv.addr, timeout=60) as c:
        # The head alone first (so the body starts on an empty read buffer), then uneven pieces
        # with pauses, so the body is read in many short reads.
        head_end = wire.index(b"\r\n\r\n") + 4
        c.send(wire[:head_end])
        time.sleep(0.05)
        pos = head_end
        step = 1
        while pos < len(wire):
            size = min(len(wire) - pos, 997 * step)
            c.send(wire[pos : pos + size])
            pos += size
            step = step % 40 + 1
            if step % 10 == 0:
                time.sleep(0.01)
        check(c.read_response(), "/slow", data)
        assert c.read_response().json()["len"] == 0


def test_many_bodies_on_many_connections(serve):
    """Bodies read concurrently on several connections (buffers are shared between them)."""
    srv = serve(digest_app, threads=4)
    conns = [Conn(srv.addr, timeout=60) for _ in range(8)]
    try:
        for round_ in range(5):
            sent = []
            for i, c in enumerate(conns):
                data = payload(40_000 + 1000 * i + round_, seed=i + round_)
                c.send(post(f"/c{i}", data))
                sent.append(data)
            for i, (c, data) in enumerate(zip(conns, sent)):
                check(c.read_response(), f"/c{i}", data)
    finally:
        for c in conns:
            c.close()
