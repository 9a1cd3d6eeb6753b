"""create_server(): bind the listeners the adjustments describe and hand them to the engine.

Everything here runs once at start-up; the per-request path is entirely in ``maitre._core``.
"""

import atexit
import io
import logging
import os
import signal
import socket
import stat
import sys
import threading

from . import _core
from .adjustments import Adjustments
from .utilities import logger

# wsgi.input is a binary file like the BytesIO Waitress hands out: isinstance() says so too.
io.BufferedIOBase.register(_core.InputStream)

__all__ = ["MultiSocketServer", "TcpWSGIServer", "UnixWSGIServer", "WSGIServer", "create_server"]


def _engine_config(adj):
    return {
        "threads": int(adj.threads),
        "recv_bytes": int(adj.recv_bytes),
        "connection_limit": int(adj.connection_limit),
        "channel_timeout": float(adj.channel_timeout),
        "cleanup_interval": float(adj.cleanup_interval),
        "max_request_header_size": int(adj.max_request_header_size),
        "max_request_body_size": int(adj.max_request_body_size),
        "inbuf_overflow": int(adj.inbuf_overflow),
        "outbuf_high_watermark": int(adj.outbuf_high_watermark),
        "outbuf_overflow": int(adj.outbuf_overflow),
        "ident": adj.ident or None,
        "expose_tracebacks": bool(adj.expose_tracebacks),
        "url_prefix": adj.url_prefix,
        "server_name": adj.server_name,
        "url_scheme": adj.url_scheme,
        # Proxy headers are applied (or removed) by the engine, as Waitress's middleware does.
        "trusted_proxy": adj.trusted_proxy,
        "trusted_proxy_count": adj.trusted_proxy_count,
        "trusted_proxy_headers": sorted(adj.trusted_proxy_headers),
        "clear_untrusted_proxy_headers": bool(adj.clear_untrusted_proxy_headers),
        "log_untrusted_proxy_headers": bool(adj.log_untrusted_proxy_headers),
        # A graceful stop (close(), SIGTERM, Ctrl-C) waits this long for requests already
        # received; a second signal stops at once.
        "shutdown_timeout": float(adj.shutdown_timeout),
    }


class _Listener:
    """One bound listening socket and how it reports itself."""

    def __init__(self, sock, effective_host, effective_port, unix_path=None, owned=True):
        self.socket = sock
        self.effective_host = effective_host
        self.effective_port = effective_port
        self.unix_path = unix_path
        # Bound by this server (not handed in with ``sockets=``): stopping shuts it down, and a
        # Unix socket's file is removed at exit.
        self.owned = owned

    @property
    def kind(self):
        return "unix" if self.unix_path is not None else "tcp"


def _bind_tcp(adj, family, socktype, proto, sockaddr):
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(int(adj.backlog))
    except BaseException:
        sock.close()
        raise
    return _tcp_listener(sock)


def _tcp_listener(sock):
    host, port = socket.getnameinfo(
        sock.getsockname(), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    )
    return _Listener(sock, host, port)


def _cleanup_unix_socket(path):
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISSOCK(st.st_mode):
        try:
            os.remove(path)
        except OSError:  # pragma: no cover
            pass


def _bind_unix(adj):
    path = adj.unix_socket
    _cleanup_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, adj.unix_socket_perms)
        sock.listen(int(adj.backlog))
    except BaseException:
        sock.close()
        raise
    return _Listener(sock, "unix", path, unix_path=path)


def _adopt_socket(adj, sock):
    """A socket bound by someone else (``sockets=``): listen on it, never unlink it."""
    sock.listen(int(adj.backlog))
    if sock.family == socket.AF_UNIX:
        path = sock.getsockname()
        return _Listener(sock, "unix", path, unix_path=path, owned=False)
    lst = _tcp_listener(sock)
    lst.owned = False
    return lst


class _BaseServer:
    """What Waitress's server objects offer: run(), close(), print_listen()."""

    def __init__(self, application, adj, listeners):
        self.adj = adj
        self.application = application
        self._listeners = listeners
        self._engine = _core.Engine(
            application,
            [
                (lst.socket.fileno(), lst.kind, str(lst.effective_port), lst.owned)
                for lst in listeners
            ],
            _engine_config(adj),
        )
        self.logger = logger
        self._closed = False

    def run(self):
        """Serve until close() is called, or SIGTERM or Ctrl-C arrives.

        When run() is called on the main thread, SIGTERM and SIGINT (unless the application
        installed handlers of its own) stop the server gracefully: listeners are closed at once,
        the requests already received finish (for at most ``shutdown_timeout`` seconds) and
        run() returns, so the process exits 0. A second SIGTERM or SIGINT during that wait exits
        the process at once, with status 128 + the signal number (130 after Ctrl-C). Waitress
        dies on SIGTERM and drops the requests in progress on Ctrl-C.
        """
        signals = _StopSignals(self._engine) if _on_main_thread() else None
        try:
            self._engine.run(signals.wakeup_fd if signals else None)
        except (SystemExit, KeyboardInterrupt):
            pass
        finally:
            if signals is not None:
                signals.restore()
            self._cleanup()
        if signals is not None and signals.abort_signal is not None:
            _exit_now(128 + signals.abort_signal)
        if self._engine.threads_in_app:
            atexit.register(_exit_before_finalizing, self._engine)

    def threads_in_app(self):
        """How many worker threads the last run() left in the application when
        ``shutdown_timeout`` expired and are still there."""
        return self._engine.threads_in_app

    def close(self):
        """Stop serving: run() returns once the requests already being served are done."""
        self._engine.close()
        if not self._engine.running:
            self._cleanup()

    def _cleanup(self):
        if self._closed:
            return
        self._closed = True
        for lst in self._listeners:
            try:
                lst.socket.close()
            except OSError:  # pragma: no cover
                pass
            if lst.owned and lst.unix_path is not None:
                _cleanup_unix_socket(lst.unix_path)

    def log_info(self, message, type="info"):
        getattr(self.logger, type)(message)


def _on_main_thread():
    return threading.current_thread() is threading.main_thread()


class _StopSignals:
    """SIGTERM and SIGINT handlers for the time of run() (main thread only): the first signal
    stops the server gracefully, a second one stops it at once (``abort_signal`` is then set
    and run() ends the process). A signal whose handler the application replaced is left
    alone. Python's signal wakeup fd is pointed at a pipe the engine watches, so the handler
    runs as soon as the signal arrives (unless something else, such as asyncio, uses it)."""

    def __init__(self, engine):
        self._engine = engine
        self._stopping = False
        self.abort_signal = None
        self._previous = {}
        defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
        for signum, default in defaults.items():
            if signal.getsignal(signum) is default:
                self._previous[signum] = signal.signal(signum, self._handle)
        self.wakeup_fd = None
        self._pipe = None
        if self._previous:
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            if signal.set_wakeup_fd(w, warn_on_full_buffer=False) == -1:
                self._pipe = (r, w)
                self.wakeup_fd = r
            else:  # someone else's: put it back, handlers then run within 100 ms
                signal.set_wakeup_fd(signal.set_wakeup_fd(-1))
                os.close(r)
                os.close(w)

    def _handle(self, signum, frame):
        if not self._stopping:
            self._stopping = True
            self._engine.close()
            return
        self.abort_signal = signum
        logger.warning(
            "Received %s during the graceful shutdown: stopping at once",
            signal.Signals(signum).name,
        )
        self._engine.abort()

    def restore(self):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if self._pipe is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._pipe:
                os.close(fd)


def _exit_before_finalizing(engine):
    """At interpreter exit: worker threads abandoned in the application must not meet the
    interpreter's finalization (CPython ends such a thread with a forced unwind, which aborts
    the process when it crosses the engine's Rust frames). If any is still there, the process
    ends here, with status 0, without the rest of the shutdown."""
    left = engine.threads_in_app
    if left:
        logger.warning("Exiting with %d worker thread(s) still in the application", left)
        _exit_now(0)


def _exit_now(status):
    """End the process without waiting for threads still in the application (a second signal
    asked for it): flush the logs and standard streams, then os._exit()."""
    for handler in list(logging.getLogger().handlers) + list(logger.handlers):
        try:
            handler.flush()
        except Exception:  # noqa: BLE001, S110 (exiting: nothing left to report it to)
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110
            pass
    os._exit(status)


class _SingleServer(_BaseServer):
    def __init__(self, application, adj, listener):
        super().__init__(application, adj, [listener])
        self.socket = listener.socket
        self.effective_host = listener.effective_host
        self.effective_port = listener.effective_port
        self.server_name = adj.server_name

    def getsockname(self):
        return (self.effective_host, self.effective_port)

    def print_listen(self, format_str):
        self.log_info(format_str.format(self.effective_host, self.effective_port))


class TcpWSGIServer(_SingleServer):
    """A server on one TCP listener."""

    family = socket.AF_INET


class UnixWSGIServer(_SingleServer):
    """A server on one Unix socket."""

    family = getattr(socket, "AF_UNIX", None)


WSGIServer = TcpWSGIServer


class MultiSocketServer(_BaseServer):
    """A server on several listeners at once (several ``listen`` entries or ``sockets``)."""

    def __init__(self, application, adj, listeners):
        super().__init__(application, adj, listeners)
        self.effective_listen = [(lst.effective_host, lst.effective_port) for lst in listeners]

    def print_listen(self, format_str):
        for host, port in self.effective_listen:
            if ":" in host:
                host = f"[{host}]"
            self.log_info(format_str.format(host, port))


def create_server(application, map=None, _start=True, _sock=None, _dispatcher=None, **kw):
    """Create a server for ``application`` with Waitress's arguments (see Adjustments).

    Returns a single server when there is one listener, else a MultiSocketServer. Sockets are
    bound and listening on return; no thread starts until run().
    """
    if application is None:
        raise ValueError(
            'The "app" passed to ``create_server`` was ``None``.  You forgot '
            "to return a WSGI app within your application."
        )
    adj = Adjustments(**kw)
    listeners = []
    try:
        if adj.unix_socket and hasattr(socket, "AF_UNIX"):
            listeners.append(_bind_unix(adj))
        elif adj.sockets:
            for sock in adj.sockets:
                listeners.append(_adopt_socket(adj, sock))
        else:
            for family, socktype, proto, sockaddr in adj.listen:
                listeners.append(_bind_tcp(adj, family, socktype, proto, sockaddr))
    except BaseException:
        for lst in listeners:
            lst.socket.close()
        raise
    if len(listeners) == 1:
        cls = UnixWSGIServer if listeners[0].kind == "unix" else TcpWSGIServer
        return cls(application, adj, listeners[0])
    return MultiSocketServer(application, adj, listeners)
