"""serve() / create_server() basics and the command line, over real sockets."""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
from apps.wire import make_app
from support.http import Conn, exchange, get, wait_until
from support.server import (
    IMPL,
    IS_WAITRESS,
    expect,
    free_port,
    ipv6_loopback_works,
    wait_for_port,
)

HERE = os.path.dirname(os.path.abspath(__file__))


def slow_app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(2.0)
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_serve_logs_serving_on(tmp_path, serve):
    log = tmp_path / "log.txt"
    h = serve(make_app(), use_serve=True, log_file=str(log), host="127.0.0.1", port=0)
    assert wait_until(lambda: log.exists() and "Serving on" in log.read_text(), 10)
    text = log.read_text()
    m = re.search(rf"INFO:{IMPL}:Serving on http://127\.0\.0\.1:(\d+)$", text, re.MULTILINE)
    assert m, text
    port = int(m.group(1))
    resp = get(("127.0.0.1", port), "/served")
    assert resp.status == 200 and resp.json()["PATH_INFO"] == "/served"
    assert h.alive()


def test_create_server_effective_port_is_str(serve):
    h = serve(make_app())
    assert h.info["effective_port_type"] == "str"
    assert h.info["host"] == "127.0.0.1"
    resp = get(h.addr, "/x")
    assert resp.json()["SERVER_PORT"] == str(h.port)


def test_two_listeners(serve):
    if ipv6_loopback_works():
        listen = "127.0.0.1:0 [::1]:0"
        hosts = ["127.0.0.1", "::1"]
    else:
        listen = "127.0.0.1:0 127.0.0.1:0"
        hosts = ["127.0.0.1", "127.0.0.1"]
    h = serve(make_app(), listen=listen)
    assert [host for host, _ in h.listen] == hosts
    for host, port in h.listen:
        resp = get((host, port), "/l")
        assert resp.status == 200, (host, port)
        assert resp.json()["PATH_INFO"] == "/l"


def test_unix_socket(serve, tmp_sock_path):
    h = serve(make_app(), unix_socket=tmp_sock_path, unix_socket_perms="660")
    mode = os.stat(tmp_sock_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660
    resp, _ = exchange(tmp_sock_path, b"GET /u HTTP/1.1\r\nHost: a\r\n\r\n")
    assert resp.status == 200
    env = resp.json()
    assert env["PATH_INFO"] == "/u"
    assert env["REMOTE_ADDR"] == "localhost"
    h.stop()
    # maitre removes the socket file on a clean shutdown; Waitress leaves it behind
    # (SIGTERM is a clean shutdown for maitre: it drains, then exits).
    assert wait_until(lambda: not os.path.exists(tmp_sock_path), 2) == expect(False, True)


def test_threads_slow_request_does_not_block(serve):
    h = serve(slow_app, threads=2)
    results = {}

    def slow():
        results["slow"] = get(h.addr, "/slow").body

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    fast = get(h.addr, "/fast")
    elapsed = time.monotonic() - t0
    t.join(10)
    assert fast.body == b"/fast"
    assert elapsed < 1.0, f"a fast request waited {elapsed:.2f} s behind a slow one"
    assert results["slow"] == b"/slow"


@pytest.mark.parametrize("threads", [1, 2])
def test_every_thread_busy_the_server_still_answers(serve, threads):
    """With every worker in a slow app, the server still accepts and reads: a malformed request
    on a new connection gets its 400 at once, and a good one is served as soon as a worker is
    free (not after all the slow ones)."""
    h = serve(slow_app, threads=threads)
    slow = [threading.Thread(target=get, args=(h.addr, "/slow")) for _ in range(threads)]
    for t in slow:
        t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    resp, closed = exchange(h.addr, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
    elapsed = time.monotonic() - t0
    assert resp.status == 400 and closed
    assert elapsed < 1.0, f"a bad request waited {elapsed:.2f} s for a busy worker"
    t0 = time.monotonic()
    fast = get(h.addr, "/fast")
    elapsed = time.monotonic() - t0
    assert fast.body == b"/fast"
    assert elapsed < 3.0, f"a request waited {elapsed:.2f} s: more than one slow request"
    for t in slow:
        t.join(10)


def head_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "1000")])
    # As werkzeug does: no body for HEAD, the Content-Length of the GET.
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"x" * 1000]


def test_head_without_body_keeps_the_connection(serve):
    """A HEAD response owes no body, so an app that returns none for HEAD (werkzeug, Flask) does
    not cost the connection (Waitress closes it: a deliberate difference)."""
    h = serve(head_app)
    with Conn(h.addr) as c:
        c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = c.read_response(method="HEAD")
        assert head.status == 200 and head.header("Content-Length") == "1000" and head.body == b""
        assert head.header("Connection") is None
        if IS_WAITRESS:
            assert c.is_closed()
            return
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().body == b"x" * 1000


def _sched_policy(pid, tid):
    # Field 41 of /proc/PID/task/TID/stat (after the parenthesised command name: index 38).
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[38])


@pytest.mark.skipif(IS_WAITRESS or not sys.platform.startswith("linux"), reason="maitre on Linux")
def test_engine_threads_run_under_sched_batch(serve):
    """The event loop and the workers run under SCHED_BATCH (3) while serving (see src/sched.rs)."""
    h = serve(make_app(), threads=3)
    assert get(h.addr, "/x").status == 200
    policies = {}
    for tid in os.listdir(f"/proc/{h.pid}/task"):
        with open(f"/proc/{h.pid}/task/{tid}/comm") as f:
            name = f.read().strip()
        policies[name if name.startswith("maitre-") else tid] = _sched_policy(h.pid, tid)
    workers = {k: v for k, v in policies.items() if k.startswith("maitre-")}
    assert sorted(workers) == ["maitre-0", "maitre-1", "maitre-2"]
    assert set(workers.values()) == {3}, policies
    # The thread that called run() (the process's main thread) keeps watch over the workers.
    assert policies[str(h.pid)] == 3, policies


def test_expose_tracebacks(serve):
    h = serve(make_app(), expose_tracebacks=True)
    resp, closed = exchange(h.addr, b"GET /error HTTP/1.1\r\nHost: a\r\n\r\n")
    assert resp.status == 500
    text = resp.body.decode()
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: boom from /error" in text
    assert closed


def test_no_tracebacks_by_default(serve):
    h = serve(make_app())
    resp, _ = exchange(h.addr, b"GET /error HTTP/1.1\r\nHost: a\r\n\r\n")
    assert resp.status == 500
    assert b"boom" not in resp.body


@pytest.mark.parametrize("path,script_name,path_info", [
    ("/app", "/app", ""),
    ("/app/x/y", "/app", "/x/y"),
    ("/application", "/app", "/application"),  # Waitress quirk, kept
])
def test_url_prefix(serve, path, script_name, path_info):
    h = serve(make_app(), url_prefix="app/")
    env = get(h.addr, path).json()
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (script_name, path_info)


def test_ident_and_server_name(serve):
    h = serve(make_app(), ident="custom-ident", server_name="example.test")
    resp = get(h.addr, "/")
    assert resp.header("Server") == "custom-ident"
    env = resp.json()
    assert env["SERVER_SOFTWARE"] == "custom-ident"
    assert env["SERVER_NAME"] == "example.test"


def test_string_adjustments(serve):
    h = serve(make_app(), threads="3", expose_tracebacks="false", channel_timeout="60")
    assert get(h.addr, "/s").status == 200


def mutating_app(environ, start_response):
    """Reports some environ values, then changes the environ the way an app may."""
    keys = ("REMOTE_ADDR", "REMOTE_HOST", "REMOTE_PORT", "SERVER_NAME", "PATH_INFO", "mine")
    body = json.dumps({k: environ.get(k) for k in keys}).encode()
    environ["REMOTE_ADDR"] = "10.9.9.9"
    environ["mine"] = environ["PATH_INFO"]
    del environ["REMOTE_PORT"]
    if environ["PATH_INFO"] == "/clear":
        environ.clear()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_every_request_on_a_connection_gets_a_fresh_environ(serve):
    """What an app does to its environ stays with that request, however many requests a
    connection carries (the keys that do not change are copied from one dict)."""
    srv = serve(mutating_app)
    with Conn(srv.addr) as c:
        port = str(c.sock.getsockname()[1])
        for path in ["/a", "/b", "/clear", "/c", "/d"]:
            resp = c.request(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert resp.status == 200
            assert resp.json() == {"REMOTE_ADDR": "127.0.0.1", "REMOTE_HOST": "127.0.0.1",
                                   "REMOTE_PORT": port, "SERVER_NAME": "waitress.invalid",
                                   "PATH_INFO": path, "mine": None}


def test_keepalive_many_requests(serve):
    h = serve(make_app())
    with Conn(h.addr) as c:
        for i in range(20):
            r = c.request(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            assert r.json()["PATH_INFO"] == f"/{i}"
        assert not c.is_closed(0.1)


# -- command line ---------------------------------------------------------------------------------
def _cli_commands():
    cmds = [("python -m", [sys.executable, "-m", IMPL])]
    script = os.path.join(os.path.dirname(sys.executable), IMPL + "-serve")
    cmds.append(("console script", [script] if os.path.exists(script) else None))
    return cmds


@pytest.fixture
def app_dir(tmp_path):
    shutil.copy(os.path.join(HERE, "apps", "cli_app.py"), tmp_path / "maitre_cli_testapp.py")
    return tmp_path


def _env():
    return dict(os.environ)


@pytest.mark.parametrize("kind,cmd", _cli_commands(), ids=[c[0] for c in _cli_commands()])
def test_cli_serves_app(app_dir, kind, cmd):
    if cmd is None:
        pytest.skip(f"{IMPL}-serve is not installed next to {sys.executable}")
    port = free_port()
    proc = subprocess.Popen(
        cmd + [f"--listen=127.0.0.1:{port}", "--threads=2", "maitre_cli_testapp:app"],
        cwd=str(app_dir), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=10)
        resp = get(("127.0.0.1", port), "/cli")
        assert resp.status == 200
        assert resp.body == b"cli app: /cli"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
    text = (out + err).decode("utf-8", "replace")
    assert f"Serving on http://127.0.0.1:{port}" in text, text
    # Waitress has no SIGTERM handler and dies of the signal; maitre drains and exits 0.
    assert proc.returncode == expect(-signal.SIGTERM, 0), text


@pytest.mark.parametrize("kind,cmd", _cli_commands(), ids=[c[0] for c in _cli_commands()])
def test_cli_bad_option(app_dir, kind, cmd):
    if cmd is None:
        pytest.skip(f"{IMPL}-serve is not installed next to {sys.executable}")
    proc = subprocess.run(cmd + ["--bad-opt"], check=False, cwd=str(app_dir), env=_env(),
                          capture_output=True, timeout=30)
    assert proc.stderr.decode().startswith("Error: option --bad-opt not recognized")
    # `python -m waitress` ignores the runner's result and exits 0; maitre exits with it.
    want = 0 if (IS_WAITRESS and kind == "python -m") else 1
    assert proc.returncode == want


def test_cli_help(app_dir):
    proc = subprocess.run([sys.executable, "-m", IMPL, "--help"], check=False, cwd=str(app_dir), env=_env(),
                          capture_output=True, timeout=30)
    assert proc.returncode == 0
    assert proc.stdout.decode().startswith("Usage:\n\n    ")


def test_sockets_closed_after_stop(serve):
    h = serve(make_app())
    h.stop()
    with pytest.raises(OSError), socket.create_connection(h.addr, timeout=1):
        pass
