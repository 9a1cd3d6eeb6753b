"""``wsgi.input`` answers every call as ``io.BytesIO`` over the same body, over a real socket.

The property test sends a body (Content-Length or chunked, 0 B to 70 KB) with a random sequence
of calls in a header; the app makes those calls on ``wsgi.input`` (the only way it sees the body)
and answers what each returned or raised, which must be what the same calls on
``io.BytesIO(body)`` give here. One server keeps bodies in memory, the other spools any body over
1000 bytes to a temporary file. Both run one worker thread, so every request gets the stream the
previous one used (closed, or left anywhere), refilled.

maitre's stream is read-only (``writable()`` False; ``write``, ``writelines`` and ``truncate``
raise ``io.UnsupportedOperation``), where BytesIO is writable: those calls are tested on their
own, not compared.
"""

from __future__ import annotations

import array
import hashlib
import io
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.http import Conn
from support.server import IS_WAITRESS, start_server

# inbuf_overflow of the "spooled" server: bodies above it are in a temporary file.
SPOOL_AT = 1000


class Index:
    """Not an int, but has ``__index__`` (accepted as a size by read(), not by readlines())."""

    def __index__(self):
        return 3


# Arguments that JSON cannot carry, by name.
SPECIAL_ARGS = {"float": 1.5, "text": "x", "index": Index()}


def argument(value):
    return SPECIAL_ARGS.get(value, value) if isinstance(value, str) else value


def make_buffer(kind, size):
    if kind == "bytearray":
        return bytearray(size)
    if kind == "memoryview":
        return memoryview(bytearray(size))
    if kind == "array":  # 4-byte items: readinto counts bytes, not items
        return array.array("i", [0] * size)
    if kind == "strided":  # not contiguous: a TypeError
        return memoryview(bytearray(2 * size))[::2]
    if kind == "bytes":  # read-only: a TypeError
        return bytes(size)
    raise ValueError(kind)


def call(stream, name, args):
    if name in ("readinto", "readinto1"):
        buf = make_buffer(*args)
        n = getattr(stream, name)(buf)
        return [n, bytes(buf)]
    if name == "next":
        return next(stream)
    if name == "iter":
        return iter(stream)
    if name == "list":
        return list(stream)
    if name == "closed":
        return stream.closed
    if name == "exit":
        return stream.__exit__(None, None, None)
    if name == "read_kw":
        return stream.read(size=1)
    if name == "id":  # not drawn by the property test: BytesIO's would differ
        return ["id", id(stream)]
    return getattr(stream, name)(*[argument(a) for a in args])


def describe(value, stream):
    """A JSON value for a call's result (bytes as their length and a digest)."""
    if value is stream:
        return "the stream"
    if isinstance(value, (bytes, bytearray)):
        return ["bytes", len(value), hashlib.blake2b(value, digest_size=8).hexdigest()]
    if isinstance(value, (list, tuple)):
        return [describe(v, stream) for v in value]
    if value is None or isinstance(value, (bool, int)):
        return value
    return ["unexpected", type(value).__name__]


def run(stream, ops):
    """Each call's result, or the name of the exception it raised (any: a PanicException too)."""
    outcomes = []
    for name, *args in ops:
        try:
            outcomes.append(describe(call(stream, name, args), stream))
        except BaseException as exc:  # noqa: BLE001 - the kind of failure is the result
            outcomes.append(["raised", type(exc).__name__])
    return outcomes


def ops_app(environ, start_response):
    ops = json.loads(environ.get("HTTP_X_OPS", "[]"))
    body = json.dumps(run(environ["wsgi.input"], ops)).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(scope="module")
def servers():
    handles = {
        "memory": start_server(ops_app, threads=1),
        "spooled": start_server(ops_app, threads=1, inbuf_overflow=SPOOL_AT),
    }
    yield handles
    for h in handles.values():
        h.stop()


def server(servers, where):
    if IS_WAITRESS and where == "spooled":
        # Checked: Waitress's BytesIO bodies answer as this file expects, but a body spooled to a
        # temporary file is a real file, which differs from BytesIO (fileno() works, a relative
        # seek before the start is an OSError, seek(2**63 - 1, 1) too); maitre follows BytesIO.
        pytest.skip("Waitress's spooled body is a real file, not BytesIO")
    return servers[where]


def request(body, ops, chunk_size=None):
    """A POST of ``body`` with ``ops`` in X-Ops: chunked in ``chunk_size`` pieces if given."""
    head = b"POST /ops HTTP/1.1\r\nHost: t\r\nX-Ops: " + json.dumps(ops).encode() + b"\r\n"
    if chunk_size is None:
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    wire = [head, b"Transfer-Encoding: chunked\r\n\r\n"]
    for i in range(0, len(body), chunk_size):
        part = body[i : i + chunk_size]
        wire.append(b"%x\r\n" % len(part) + part + b"\r\n")
    wire.append(b"0\r\n\r\n")
    return b"".join(wire)


def served(srv, body, ops, chunk_size=None):
    with Conn(srv.addr, timeout=30) as c:
        resp = c.request(request(body, ops, chunk_size))
    assert resp.status == 200, resp
    return resp.json()


def expected(body, ops):
    return json.loads(json.dumps(run(io.BytesIO(body), ops)))


def make_body(size, seed, newline_share):
    """``size`` random bytes, about ``newline_share``/256 of them newlines."""
    rng = random.Random(seed)
    table = bytearray(range(256))
    for b in rng.sample(range(256), newline_share):
        table[b] = ord("\n")
    return rng.randbytes(size).translate(table)


# -- the property test ----------------------------------------------------------------------------

SIZES = st.one_of(
    st.sampled_from([0, 1, 10, SPOOL_AT - 1, SPOOL_AT, SPOOL_AT + 1, 65_537, 70_000]),
    st.integers(0, 3 * SPOOL_AT),
    st.integers(0, 70_000),
)
BAD_SIZES = st.sampled_from([None, True, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, "float", "text", "index"])
WHENCES = st.one_of(st.sampled_from([0, 1, 2]), st.sampled_from([0, 1, 2]), st.sampled_from([3, -1, 2**31, 2**64, None, True, "float"]))
BUFFER_KINDS = st.sampled_from(["bytearray", "bytearray", "memoryview", "array", "strided", "bytes"])


# Calls by how often they are drawn; the ones after None end up in one draw out of ten.
READS = ["read", "read", "read1", "readline", "readline", "readlines"]
RARE = ["readable", "seekable", "isatty", "flush", "fileno", "detach", "closed", "iter", "__enter__",
        "read_kw", "close", "exit"]


@st.composite
def cases(draw):
    size = draw(SIZES)
    body = make_body(size, draw(st.integers(0, 2**32)), draw(st.sampled_from([0, 1, 4, 32])))
    chunk_size = draw(st.one_of(st.none(), st.integers(1, 20_000)))
    # Sizes and offsets: small, around the body's length, now and then a bad one.
    near = st.one_of(st.integers(-3, 12), st.integers(-size - 20, size + 20))
    count = st.one_of(near, near, near, BAD_SIZES)
    offset = st.one_of(near, near, near, BAD_SIZES)

    def call():
        kind = draw(st.integers(0, 9))
        if kind == 0:
            return [draw(st.sampled_from(RARE))]
        if kind <= 4:
            name = draw(st.sampled_from(READS))
            return [name] if draw(st.booleans()) else [name, draw(count)]
        if kind <= 6:
            whence = draw(st.one_of(st.none(), WHENCES))  # None here: no whence argument
            return ["seek", draw(offset)] + ([] if whence is None else [whence])
        if kind == 7:
            name = draw(st.sampled_from(["readinto", "readinto", "readinto1"]))
            return [name, draw(BUFFER_KINDS), draw(st.integers(0, size + 20))]
        return [draw(st.sampled_from(["tell", "next", "next", "list"]))]

    return body, chunk_size, [call() for _ in range(draw(st.integers(1, 25)))]


@pytest.mark.parametrize("where", ["memory", "spooled"])
@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_calls_answer_as_bytesio(servers, where, case):
    body, chunk_size, ops = case
    assert served(server(servers, where), body, ops, chunk_size) == expected(body, ops)


# -- explicit cases -------------------------------------------------------------------------------

BODY = b"0123456789"


@pytest.mark.parametrize("where", ["memory", "spooled"])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_reads_past_the_end_return_nothing(servers, where, chunk_size):
    """The reported bug: seek(1000) on a 10-byte body, then read() panicked in the engine."""
    body = BODY * (1 if where == "memory" else 200)  # the spooled server's copy is on disk
    ops = [
        ["seek", 1000 * len(body)],
        ["read"],
        ["tell"],
        ["read", 5],
        ["readline"],
        ["readlines"],
        ["readinto", "bytearray", 4],
        ["next"],
        ["list"],
        ["seek", -1, 1],
        ["read"],
        ["seek", -len(body) - 5, 2],
        ["tell"],
    ]
    far = 1000 * len(body)
    assert served(server(servers, where), body, ops, chunk_size) == [
        far,
        describe(b"", None),
        far,
        describe(b"", None),
        describe(b"", None),
        [],
        [0, describe(bytes(4), None)],
        ["raised", "StopIteration"],
        [],
        far - 1,
        describe(b"", None),
        0,  # relative seeks before the start land on 0, as in BytesIO
        0,
    ]


@pytest.mark.parametrize("where", ["memory", "spooled"])
def test_positions_beyond_any_file(servers, where):
    body = BODY * (1 if where == "memory" else 200)
    ops = [
        ["seek", 5],
        ["seek", 2**63 - 1, 1],  # past the largest position
        ["tell"],
        ["seek", 2**63 - 1],
        ["read"],
        ["seek", 2**63],
        ["seek", -1],
        ["seek", 0, 3],
        ["seek", 0, 2**40],
        ["seek", 0, None],
        ["read", 2**63],
        ["read", "float"],
        ["readlines", "index"],
        ["tell"],
    ]
    assert served(server(servers, where), body, ops) == [
        5,
        ["raised", "OverflowError"],
        5,
        2**63 - 1,
        describe(b"", None),
        ["raised", "OverflowError"],
        ["raised", "ValueError"],
        ["raised", "ValueError"],
        ["raised", "OverflowError"],
        ["raised", "TypeError"],
        ["raised", "OverflowError"],
        ["raised", "TypeError"],
        ["raised", "TypeError"],
        2**63 - 1,
    ]


CLOSED_CALLS = [
    ["read"],
    ["read1"],
    ["readline"],
    ["readlines"],
    ["readinto", "bytearray", 2],
    ["seek", 0],
    ["tell"],
    ["next"],
    ["readable"],
    ["seekable"],
    ["isatty"],
    ["flush"],
    ["__enter__"],
]


@pytest.mark.parametrize("where", ["memory", "spooled"])
def test_use_after_close(servers, where):
    body = b"line one\nline two\n" * (1 if where == "memory" else 100)
    ops = [["id"], ["readline"], ["close"], ["closed"], *CLOSED_CALLS, ["fileno"], ["close"], ["exit"], ["closed"]]
    first_id, *got = served(server(servers, where), body, ops)
    assert got[:3] == [describe(b"line one\n", None), None, True]
    assert got[3 : 3 + len(CLOSED_CALLS)] == [["raised", "ValueError"]] * len(CLOSED_CALLS)
    assert got[3 + len(CLOSED_CALLS) :] == [["raised", "UnsupportedOperation"], None, None, True]
    # The same (only) worker serves the next request: its stream is open and reads its own body.
    again = b"next body\n"
    second_id, *got = served(server(servers, where), again, [["id"], ["closed"], ["read"], ["tell"]])
    assert got == [False, describe(again, None), len(again)]
    if not IS_WAITRESS:
        assert second_id == first_id, "maitre hands the worker's next request the same (reopened) stream"


def file_app(environ, start_response):
    """What a framework might do with the stream: isinstance checks, a text wrapper."""
    inp = environ["wsgi.input"]
    checks = {
        "buffered": isinstance(inp, io.BufferedIOBase),
        "iobase": isinstance(inp, io.IOBase),
        "text": io.TextIOWrapper(inp, encoding="utf-8", newline="").readlines(),
    }
    body = json.dumps(checks).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_is_a_binary_file(serve):
    srv = serve(file_app)
    with Conn(srv.addr) as c:
        resp = c.request(request("héllo\r\nwörld\n".encode(), []))
    assert resp.json() == {"buffered": True, "iobase": True, "text": ["héllo\r\n", "wörld\n"]}


@pytest.mark.skipif(IS_WAITRESS, reason="Waitress's body buffer is a writable BytesIO or temporary file")
@pytest.mark.parametrize("where", ["memory", "spooled"])
def test_read_only(servers, where):
    body = BODY * (1 if where == "memory" else 200)
    ops = [
        ["writable"],
        ["write", "text"],
        ["writelines", []],
        ["truncate"],
        ["truncate", 0],
        ["read"],
        ["close"],
        ["writable"],
        ["write", "text"],
    ]
    unsupported = ["raised", "UnsupportedOperation"]
    assert served(server(servers, where), body, ops) == [
        False,
        unsupported,
        unsupported,
        unsupported,
        unsupported,
        describe(body, None),  # untouched
        None,
        ["raised", "ValueError"],
        unsupported,
    ]
