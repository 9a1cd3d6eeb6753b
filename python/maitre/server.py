"""create_server(): bind the listeners the adjustments describe and hand them to the engine.

Everything here runs once at start-up; the per-request path is entirely in ``maitre._core``.
"""

import io
import os
import signal
import socket
import stat
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
        # received; a second Ctrl-C stops at once.
        "shutdown_timeout": 5.0,
    }


class _Listener:
    """One bound listening socket and how it reports itself."""

    def __init__(self, sock, effective_host, effective_port, unix_path=None, owns_path=False):
        self.socket = sock
        self.effective_host = effective_host
        self.effective_port = effective_port
        self.unix_path = unix_path
        self.owns_path = owns_path

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
    return _Listener(sock, "unix", path, unix_path=path, owns_path=True)


def _adopt_socket(adj, sock):
    """A socket bound by someone else (``sockets=``): listen on it, never unlink it."""
    sock.listen(int(adj.backlog))
    if sock.family == socket.AF_UNIX:
        path = sock.getsockname()
        return _Listener(sock, "unix", path, unix_path=path, owns_path=False)
    return _tcp_listener(sock)


class _BaseServer:
    """What Waitress's server objects offer: run(), close(), print_listen()."""

    def __init__(self, application, adj, listeners):
        self.adj = adj
        self.application = application
        self._listeners = listeners
        self._engine = _core.Engine(
            application,
            [(lst.socket.fileno(), lst.kind, str(lst.effective_port)) for lst in listeners],
            _engine_config(adj),
        )
        self.logger = logger
        self._closed = False

    def run(self):
        """Serve until close() is called, Ctrl-C (KeyboardInterrupt) is pressed, or SIGTERM.

        SIGTERM (when run() is called on the main thread and no handler of the app's own is
        installed) stops accepting, lets the workers finish the request they are running, and
        returns, so the process exits 0. Waitress just dies on SIGTERM.
        """
        previous = self._install_sigterm()
        try:
            self._engine.run()
        except (SystemExit, KeyboardInterrupt):
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self._cleanup()

    def _install_sigterm(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None

        def on_sigterm(signum, frame):
            self._engine.close()

        signal.signal(signal.SIGTERM, on_sigterm)
        return signal.SIG_DFL

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
            if lst.owns_path:
                _cleanup_unix_socket(lst.unix_path)

    def log_info(self, message, type="info"):
        getattr(self.logger, type)(message)


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
