"""Stopping the server (issue 7, item 5).

- SIGINT (Ctrl-C) to ``maitre-serve``: stops and exits 0, as Waitress's runner does (it catches
  KeyboardInterrupt, shuts the dispatcher down and returns 0).
- SIGTERM: stops accepting, lets the requests already received finish, closes idle connections,
  then exits 0 (Waitress installs no handler and dies of the signal: a deliberate difference).
- ``server.close()`` from another thread makes ``run()`` return (in a forked child, bounded).
- A Unix socket file is removed on a clean exit (Waitress leaves it behind).
"""

import multiprocessing
import os
import signal
import socket
import threading
import time

import pytest
from support.hostile import CliServer
from support.http import Conn, get
from support.server import IS_WAITRESS, free_port, impl

maitre_only = pytest.mark.skipif(IS_WAITRESS, reason="a deliberate difference from Waitress")

APP = '''
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/sleep/"):
        time.sleep(float(path[7:]))
    body = b"done " + path.encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def app(environ, start_response):
    """The same app, for in-process servers."""
    path = environ["PATH_INFO"]
    if path.startswith("/sleep/"):
        time.sleep(float(path[7:]))
    body = b"done " + path.encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "maitre_shutdown_app.py").write_text(APP)
    return tmp_path


@pytest.fixture
def cli(app_dir):
    started = []

    def _start(*args):
        srv = CliServer(list(args) + ["maitre_shutdown_app:app"], cwd=app_dir)
        started.append(srv)
        return srv

    yield _start
    for srv in started:
        srv.kill()


def _connect_refused_or_unserved(addr):
    """True if a new connection is refused, reset or closed without any response."""
    try:
        s = socket.create_connection(addr, timeout=2)
    except OSError:
        return True
    with s:
        try:
            s.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(6)
            return s.recv(100) == b""
        except OSError:
            return True


# -- SIGINT -------------------------------------------------------------------------------------
def test_sigint_exits_0(cli):
    port = free_port()
    srv = cli(f"--listen=127.0.0.1:{port}", "--threads=2")
    assert get(("127.0.0.1", port), "/x").body == b"done /x"
    srv.proc.send_signal(signal.SIGINT)
    rc = srv.wait(10)
    out = srv.output()
    assert rc == 0, out
    assert "Traceback" not in out, out
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


@maitre_only
def test_sigint_lets_request_in_flight_finish(cli):
    """maitre drains on Ctrl-C as on SIGTERM (Waitress drops the response on the floor)."""
    port = free_port()
    srv = cli(f"--listen=127.0.0.1:{port}", "--threads=2")
    with Conn(("127.0.0.1", port), timeout=10) as c:
        c.send(b"GET /sleep/1.0 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGINT)
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"done /sleep/1.0"
    assert srv.wait(10) == 0, srv.output()


# -- SIGTERM ------------------------------------------------------------------------------------
@maitre_only
def test_sigterm_drains_then_exits_0(cli):
    port = free_port()
    addr = ("127.0.0.1", port)
    srv = cli(f"--listen=127.0.0.1:{port}", "--threads=2")
    idle = Conn(addr)
    assert idle.request(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").body == b"done /first"
    busy = Conn(addr, timeout=10)
    busy.send(b"GET /sleep/1.0 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)  # the app is running
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the engine looks at signals every 100 ms
    # Stops accepting: a new connection gets no response.
    assert _connect_refused_or_unserved(addr)
    # The idle keep-alive connection is closed at once, without a response.
    assert idle.is_closed(2)
    # The request already received finishes, whole.
    resp = busy.read_response()
    assert resp.status == 200 and resp.body == b"done /sleep/1.0"
    assert busy.is_closed(2)
    rc = srv.wait(10)
    elapsed = time.monotonic() - t0
    out = srv.output()
    assert rc == 0, out
    assert "Traceback" not in out, out
    assert elapsed < 7, f"exit took {elapsed:.1f} s"  # shutdown_timeout is 5 s
    idle.close()
    busy.close()


@maitre_only
def test_sigterm_exits_once_requests_are_done(cli):
    port = free_port()
    srv = cli(f"--listen=127.0.0.1:{port}", "--threads=2")
    with Conn(("127.0.0.1", port), timeout=10) as busy:
        busy.send(b"GET /sleep/0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        srv.proc.send_signal(signal.SIGTERM)
        resp = busy.read_response()
        assert resp.status == 200 and resp.body == b"done /sleep/0.5"
        t0 = time.monotonic()
        assert busy.is_closed(1.5), "connection still open after its request finished"
        assert srv.wait(8) == 0, srv.output()
        assert time.monotonic() - t0 < 1.5


@maitre_only
def test_sigterm_idle_exits_promptly(cli):
    port = free_port()
    srv = cli(f"--listen=127.0.0.1:{port}")
    conns = [Conn(("127.0.0.1", port)) for _ in range(5)]
    assert conns[0].request(b"GET /ka HTTP/1.1\r\nHost: x\r\n\r\n").status == 200
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait(10) == 0, srv.output()
    assert time.monotonic() - t0 < 2.0
    for c in conns:
        assert c.is_closed(1)
        c.close()


# -- close() from another thread ------------------------------------------------------------------
def _close_child(q, go, run_on_main, unix_path):
    """Serve; once the parent sets ``go``, close() from the other thread; report how long after
    close() run() returned."""
    try:
        kw = {"unix_socket": unix_path} if unix_path else {"host": "127.0.0.1", "port": 0}
        srv = impl().create_server(app, threads=2, **kw)
        q.put(unix_path or int(srv.effective_port))
        closed_at = []

        def closer():
            go.wait(20)
            closed_at.append(time.monotonic())
            srv.close()

        if run_on_main:
            threading.Thread(target=closer, daemon=True).start()
            srv.run()
        else:
            t = threading.Thread(target=srv.run)
            t.start()
            closer()
            t.join(10)
            if t.is_alive():
                q.put(("still running", None))
                os._exit(3)
        q.put(("returned", time.monotonic() - closed_at[0]))
    except BaseException as e:
        q.put(("error", repr(e)))
        raise


@maitre_only
@pytest.mark.parametrize("run_on_main", [True, False], ids=["run-on-main", "run-on-thread"])
@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_close_from_another_thread(run_on_main, unix, tmp_sock_path):
    """close() from another thread: the request in flight finishes, run() returns within a
    bound, the listener is closed (and a Unix socket file removed)."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    go = ctx.Event()
    unix_path = tmp_sock_path if unix else None
    proc = ctx.Process(target=_close_child, args=(q, go, run_on_main, unix_path), daemon=True)
    proc.start()
    try:
        where = q.get(timeout=10)
        addr = where if unix else ("127.0.0.1", where)
        assert get(addr, "/before").body == b"done /before"
        busy = Conn(addr, timeout=10)
        busy.send(b"GET /sleep/0.7 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        go.set()
        resp = busy.read_response()
        assert resp.status == 200 and resp.body == b"done /sleep/0.7"
        busy.close()
        what, after = q.get(timeout=10)
        assert what == "returned", (what, after)
        assert after < 3.0, f"run() returned {after:.1f} s after close()"
        proc.join(10)
        assert proc.exitcode == 0
        family = socket.AF_UNIX if unix else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s, pytest.raises(OSError):
            s.settimeout(1)
            s.connect(addr)
        if unix:
            assert not os.path.exists(unix_path), "socket file left behind"
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        q.close()
        q.join_thread()


# -- the Unix socket file -------------------------------------------------------------------------
@maitre_only
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_unix_socket_removed_on_exit(cli, tmp_sock_path, sig):
    srv = cli(f"--unix-socket={tmp_sock_path}")
    assert os.path.exists(tmp_sock_path)
    assert get(tmp_sock_path, "/u").body == b"done /u"
    srv.proc.send_signal(sig)
    assert srv.wait(10) == 0, srv.output()
    assert not os.path.exists(tmp_sock_path), "socket file left behind"
