"""Start the server under test in a forked subprocess.

``IMPL`` is ``maitre`` unless ``MAITRE_TEST_IMPL=waitress``; every test can therefore be checked
against real Waitress 3.0.2. ``expect(waitress=..., maitre=...)`` picks the expected value for the
places where maitre deliberately differs (design/architecture.md, "Decisions on Waitress quirks").
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import queue as queue_mod
import signal
import socket
import time
import traceback

IMPL = os.environ.get("MAITRE_TEST_IMPL", "maitre")
IDENT = IMPL  # default ident: "maitre" or "waitress"
IS_WAITRESS = IMPL == "waitress"

_ctx = multiprocessing.get_context("fork")


def impl():
    """The implementation module (imported lazily so collection never needs it)."""
    return importlib.import_module(IMPL)


def expect(waitress, maitre):
    """The expected value: Waitress 3.0.2's behaviour or maitre's deliberate difference."""
    return waitress if IS_WAITRESS else maitre


def ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class ServerHandle:
    """A running server child. ``info`` is what the child reported after binding."""

    def __init__(self, proc, q, info):
        self.proc = proc
        self.queue = q
        self.info = info
        self.host = info.get("host", "127.0.0.1")
        self.port = info.get("port")
        self.unix_socket = info.get("unix_socket")
        self.listen = info.get("listen", [])

    @property
    def pid(self):
        return self.proc.pid

    @property
    def addr(self):
        return self.unix_socket if self.unix_socket else (self.host, self.port)

    @property
    def family(self):
        return socket.AF_UNIX if self.unix_socket else socket.AF_INET

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def alive(self):
        return self.proc.is_alive()

    def stop(self):
        if self.proc.exitcode is None:
            self.proc.terminate()
            self.proc.join(5)
            if self.proc.exitcode is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.join(5)
        self.queue.close()
        self.queue.join_thread()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _describe(srv, kw):
    if "unix_socket" in kw:
        return {"unix_socket": kw["unix_socket"]}
    if hasattr(srv, "effective_listen"):
        return {"listen": [(h, int(p)) for h, p in srv.effective_listen]}
    port = srv.effective_port
    return {
        "host": srv.effective_host,
        "port": int(port),
        "effective_port_type": type(port).__name__,
    }


def _child(app, kw, q, log_file, use_serve):
    try:
        log = logging.getLogger(IMPL)
        if log_file:
            handler = logging.FileHandler(log_file)
            handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
        else:
            log.addHandler(logging.NullHandler())
        log.propagate = bool(use_serve)
        if use_serve:
            # serve() logs "Serving on ..."; the parent reads the port from the log file.
            q.put({"serve": True})
            impl().serve(app, **kw)
            return
        srv = impl().create_server(app, **kw)
        q.put(_describe(srv, kw))
    except BaseException:  # report start-up failures to the parent instead of hanging it
        q.put({"error": traceback.format_exc()})
        raise
    srv.run()


def start_server(app, log_file=None, use_serve=False, start_timeout=10.0, **kw):
    """Fork a child that serves ``app`` and return a ``ServerHandle`` once it listens.

    Unless ``listen``, ``unix_socket`` or ``sockets`` is given, the child binds
    ``host="127.0.0.1", port=0``.
    """
    if not ({"listen", "unix_socket", "sockets", "host", "port"} & set(kw)):
        kw["host"] = "127.0.0.1"
        kw["port"] = 0
    q = _ctx.Queue()
    proc = _ctx.Process(target=_child, args=(app, kw, q, log_file, use_serve), daemon=True)
    proc.start()
    try:
        info = q.get(timeout=start_timeout)
    except queue_mod.Empty:
        proc.kill()
        proc.join(5)
        raise RuntimeError(f"server child did not report within {start_timeout:.0f} s")
    if "error" in info:
        proc.join(5)
        raise RuntimeError("server child failed to start:\n" + info["error"])
    handle = ServerHandle(proc, q, info)
    if handle.unix_socket:
        _wait_for_unix(handle.unix_socket, start_timeout)
    return handle


def _wait_for_unix(path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        time.sleep(0.02)
    raise RuntimeError(f"unix socket {path} never appeared")


def wait_for_port(host, port, timeout=10.0, family=socket.AF_INET):
    """Poll until a TCP connect to (host, port) succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect((host, port))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid):
    """utime+stime of a process (all threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
