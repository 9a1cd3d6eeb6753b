"""Helpers for the hostile-client, fault and shutdown tests.

- ``Prober``: a well-behaved client in its own process (so neither the attack's GIL nor its file
  descriptors touch it) that sends a GET every few milliseconds and records each latency.
- ``fd_count``/``wait_fds``/``idle_cpu``/``rss_kb``: what a server child uses, from ``/proc``.
- ``raised_nofile``: lift RLIMIT_NOFILE (a forked server child inherits it).
- ``hello_app``/``HELLO``: the app the hostile tests serve.
- ``run_cli``: start ``maitre-serve``/``python -m maitre`` and wait for ``Serving on``.

Every loop here is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from support.server import IMPL, proc_cpu_seconds, start_server

LINGER_RST = struct.pack("ii", 1, 0)


def hello_app(environ, start_response):
    """``hello <path>``, with Content-Length; ``:<body>`` appended when there is a request body.

    ``/sleep/<seconds>`` sleeps first.
    """
    path = environ["PATH_INFO"]
    if path.startswith("/sleep/"):
        time.sleep(float(path[7:]))
    body = HELLO + path.encode("latin-1")
    data = environ["wsgi.input"].read()
    if data:
        body += b":" + data
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


HELLO = b"hello "


def start_logged(app, log_path, **kw):
    """``start_server`` with the ``maitre`` logger going to ``log_path``; the handle also gets
    ``log_path``, ``log()`` and ``base_fds`` (the idle child's fd count before any client)."""
    h = start_server(app, log_file=str(log_path), **kw)
    h.log_path = log_path
    h.log = lambda: Path(log_path).read_text()
    time.sleep(0.2)
    h.base_fds = fd_count(h.pid)
    return h


# -- /proc ------------------------------------------------------------------------------------
def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_fds(pid, target, timeout=10.0):
    """Poll until the process has ``target`` fds (or fewer); return the last count seen."""
    deadline = time.monotonic() + timeout
    n = fd_count(pid)
    while n > target and time.monotonic() < deadline:
        time.sleep(0.05)
        n = fd_count(pid)
    return n


def idle_cpu(pid, seconds=1.0):
    """Fraction of one core the process used over ``seconds``."""
    c0 = proc_cpu_seconds(pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    return (proc_cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@contextlib.contextmanager
def raised_nofile(want):
    """Raise the soft RLIMIT_NOFILE to ``want`` (capped at the hard limit); yields the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    new = max(new, soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    try:
        yield new
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def rst_close(sock):
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    sock.close()


# -- the well-behaved client ------------------------------------------------------------------
_PROBE = textwrap.dedent(r'''
    import json, select, socket, sys, time
    host, port, interval, reconnect = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    HELLO = b"hello "
    lat, errors, slow, sock, buf, n = [], [], [], None, b"", 0
    t_conn = 0.0
    deadline = time.monotonic() + 120  # never outlive a lost parent

    def one(path):
        global sock, buf, t_conn
        t_conn = 0.0
        if sock is None:
            t = time.perf_counter()
            sock = socket.create_connection((host, port), timeout=5)
            t_conn = time.perf_counter() - t
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: probe\r\n\r\n")
        while b"\r\n\r\n" not in buf:
            d = sock.recv(65536)
            if not d:
                raise ConnectionError("closed before the head")
            buf += d
        head, _, buf = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise AssertionError("bad status: %r" % head[:100])
        cl = None
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                cl = int(v)
        if cl is None:
            raise AssertionError("no content-length: %r" % head)
        while len(buf) < cl:
            d = sock.recv(65536)
            if not d:
                raise ConnectionError("closed mid-body")
            buf += d
        body, buf = buf[:cl], buf[cl:]
        if body != HELLO + path:
            raise AssertionError("bad body %r for %r" % (body, path))

    started = False
    t_start = time.monotonic()
    while time.monotonic() < deadline:
        r, _, _ = select.select([sys.stdin], [], [], interval)
        if r:
            break
        n += 1
        path = b"/probe/%d" % n
        t0 = time.perf_counter()
        try:
            one(path)
            dt = time.perf_counter() - t0
            lat.append(dt)
            if dt > 0.05:
                slow.append("#%d at %.2f s: %.1f ms (connect %.1f ms)"
                            % (n, time.monotonic() - t_start, dt * 1e3, t_conn * 1e3))
            if not started:
                started = True
                sys.stdout.write("ready\n")
                sys.stdout.flush()
        except Exception as e:
            errors.append("%s: %s (after %.3f s)" % (type(e).__name__, e, time.perf_counter() - t0))
            if sock is not None:
                sock.close()
            sock = None
        if sock is not None and n % reconnect == 0:
            sock.close()
            sock = None
    sys.stdout.write(json.dumps({"lat": lat, "errors": errors, "slow": slow}) + "\n")
''')


class ProbeResult:
    def __init__(self, lat, errors, slow=()):
        self.lat = sorted(lat)
        self.errors = errors
        self.slow = list(slow)

    @property
    def count(self):
        return len(self.lat)

    def pct(self, p):
        """The ``p``-th percentile (0 < p <= 100) by nearest rank: the smallest latency that at
        least ``p`` % of the probes did not exceed."""
        if not self.lat:
            return float("inf")
        rank = math.ceil(len(self.lat) * p / 100.0)
        return self.lat[max(rank, 1) - 1]

    @property
    def p99(self):
        """The 99th percentile; None with 100 probes or fewer, where it would be the maximum."""
        return self.pct(99) if self.count > 100 else None

    @property
    def max(self):
        return self.lat[-1] if self.lat else float("inf")

    def summary(self):
        p99 = "n/a (100 probes or fewer)" if self.p99 is None else f"{self.p99 * 1e3:.1f} ms"
        return (f"{self.count} probes, {len(self.errors)} errors, p50 {self.pct(50) * 1e3:.1f} ms, "
                f"p99 {p99}, max {self.max * 1e3:.1f} ms; "
                f"first errors: {self.errors[:3]}; slowest: {self.slow[:5]}")


class Prober:
    """A GET every ``interval`` s on a keep-alive connection, reconnecting every ``reconnect``.

    Start it before the attack opens its sockets and stop it after; ``stop()`` returns a
    ``ProbeResult``.
    """

    def __init__(self, addr, interval=0.005, reconnect=20):
        host, port = addr
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, host, str(port), str(interval), str(reconnect)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        r, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline() if r else b""
        if line.strip() != b"ready":
            self.proc.kill()
            out, err = self.proc.communicate(timeout=5)
            raise RuntimeError(f"prober did not start: {line + out!r} {err!r}")

    def stop(self):
        try:
            out, err = self.proc.communicate(b"stop\n", timeout=15)
            if not out.strip():
                raise RuntimeError(f"prober crashed: {err.decode(errors='replace')[-2000:]}")
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=5)
            raise RuntimeError("prober did not stop") from None
        data = json.loads(out.decode().strip().splitlines()[-1])
        return ProbeResult(data["lat"], data["errors"], data["slow"])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=5)


# -- the command-line runner ------------------------------------------------------------------
def cli_command():
    """``<impl>-serve`` next to this interpreter, else ``python -m <impl>``."""
    script = os.path.join(os.path.dirname(sys.executable), IMPL + "-serve")
    return [script] if os.path.exists(script) else [sys.executable, "-m", IMPL]


def _sigint_as_in_a_terminal():
    """A shell starts background jobs with SIGINT ignored, and a child inherits that through
    exec (then Python leaves it ignored, and so would the server under test). Handled here, the
    server starts with it at its default instead, as in a terminal."""
    import threading

    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class CliServer:
    """A ``maitre-serve`` process; stderr is collected by a reader thread."""

    def __init__(self, args, cwd, timeout=15.0):
        import threading

        _sigint_as_in_a_terminal()
        self.proc = subprocess.Popen(cli_command() + list(args), cwd=str(cwd),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.wait_for("Serving on", timeout):
            self.kill()
            raise RuntimeError("server did not start:\n" + self.output())

    def _read(self):
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, text, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def output(self):
        with self._cond:
            return "".join(self.lines)

    @property
    def pid(self):
        return self.proc.pid

    def wait(self, timeout):
        """Exit code, or None if it is still running after ``timeout``."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
