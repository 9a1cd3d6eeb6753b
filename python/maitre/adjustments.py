"""Server settings ("adjustments"): Waitress 3.0.2's 34 arguments accepted by
``serve()``, ``create_server()``, PasteDeploy and ``maitre-serve``, cast,
defaulted and checked exactly as Waitress does it, and maitre's own
(``shutdown_timeout``)."""

import getopt
import socket
import sys
import warnings

from .proxy_headers import PROXY_HEADERS

WIN = sys.platform == "win32"
HAS_IPV6 = socket.has_ipv6 and hasattr(socket, "IPPROTO_IPV6") and hasattr(socket, "IPV6_V6ONLY")

truthy = frozenset(("t", "true", "y", "yes", "on", "1"))

# Lower-cased, dash-separated names: "x-forwarded-for", ..., "forwarded".
KNOWN_PROXY_HEADERS = frozenset(name.lower().replace("_", "-") for name in PROXY_HEADERS)


def asbool(s):
    """``None`` -> False; a bool is returned as is; anything else is True when
    its stripped, lower-cased text is one of ``truthy``."""
    if s is None:
        return False
    if isinstance(s, bool):
        return s
    return str(s).strip().lower() in truthy


def asoctal(s):
    """Parse an octal string such as ``"600"``."""
    return int(s, 8)


def aslist_cronly(value):
    """A string becomes its non-blank, stripped lines; any other iterable a list."""
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    return list(value)


def aslist(value):
    """Like ``aslist_cronly``, then every item is also split on whitespace."""
    result = []
    for item in aslist_cronly(value):
        result.extend(item.split())
    return result


def asset(value):
    return set(aslist(value))


def slash_fixed_str(s):
    """``"///foo/"`` -> ``"/foo"``; blank stays ``""``."""
    s = s.strip()
    if s:
        s = "/" + s.lstrip("/").rstrip("/")
    return s


def as_nonnegative_float(s):
    """Seconds: a number, or a string of one, at least 0."""
    value = float(s)
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"must be a number of seconds, 0 or more: {s!r}")
    return value


def str_iftruthy(s):
    return str(s) if s else None


def as_socket_list(sockets):
    """Keep only the ``socket.socket`` objects."""
    return [sock for sock in sockets if isinstance(sock, socket.socket)]


class _str_marker(str):
    """Type of the default ``host``, so that an explicit value can be told apart."""


class _int_marker(int):
    """Type of the default ``port``, so that an explicit value can be told apart."""


class Adjustments:
    """Tunable parameters of the server. Every keyword argument is passed
    through the cast listed in ``_params``, so strings are accepted for all."""

    _params = (
        ("host", str),
        ("port", int),
        ("ipv4", asbool),
        ("ipv6", asbool),
        ("listen", aslist),
        ("threads", int),
        ("trusted_proxy", str_iftruthy),
        ("trusted_proxy_count", int),
        ("trusted_proxy_headers", asset),
        ("log_untrusted_proxy_headers", asbool),
        ("clear_untrusted_proxy_headers", asbool),
        ("url_scheme", str),
        ("url_prefix", slash_fixed_str),
        ("backlog", int),
        ("recv_bytes", int),
        ("send_bytes", int),
        ("outbuf_overflow", int),
        ("outbuf_high_watermark", int),
        ("inbuf_overflow", int),
        ("connection_limit", int),
        ("cleanup_interval", int),
        ("channel_timeout", int),
        ("log_socket_errors", asbool),
        ("max_request_header_size", int),
        ("max_request_body_size", int),
        ("expose_tracebacks", asbool),
        ("ident", str_iftruthy),
        ("asyncore_loop_timeout", int),
        ("asyncore_use_poll", asbool),
        ("unix_socket", str),
        ("unix_socket_perms", asoctal),
        ("sockets", as_socket_list),
        ("channel_request_lookahead", int),
        ("server_name", str),
        # maitre's own arguments (not in Waitress).
        ("shutdown_timeout", as_nonnegative_float),
    )

    # Class attributes, as in Waitress. Not annotated ClassVar, so that serve() does not import
    # typing (about 0.5 MiB resident when nothing else imports it; maitre-serve still does,
    # through pkgutil.resolve_name, as waitress-serve does).
    _param_map = dict(_params)  # noqa: RUF012

    # Address and port to listen on. Giving either one explicitly replaces
    # ``listen`` with ``["host:port"]``.
    host = _str_marker("0.0.0.0")
    port = _int_marker(8080)

    # "host:port" entries to listen on; resolved by __init__ into a list of
    # (family, socktype, proto, sockaddr) tuples.
    listen = [f"{host}:{port}"]  # noqa: RUF012 (an instance attribute after __init__)

    # Worker threads running the application.
    threads = 4

    # Peer address allowed to set proxy headers ("*" trusts every peer), the
    # number of proxy hops to trust, and which proxy headers are trusted.
    trusted_proxy = None
    trusted_proxy_count = None
    trusted_proxy_headers = set()  # noqa: RUF012

    # Log the untrusted proxy headers that were removed.
    log_untrusted_proxy_headers = False

    # Remove untrusted proxy headers from the environ (True since Waitress 3.0).
    clear_untrusted_proxy_headers = True

    # Default wsgi.url_scheme, and the SCRIPT_NAME prefix removed from PATH_INFO.
    url_scheme = "http"
    url_prefix = ""

    # Server header and SERVER_SOFTWARE; None removes the header.
    ident = "maitre"

    # listen() backlog.
    backlog = 1024

    # Bytes asked for per recv().
    recv_bytes = 8192

    # Deprecated flush threshold.
    send_bytes = 1

    # Pending output above this many bytes goes to a temporary file.
    outbuf_overflow = 1048576

    # The application blocks while more than this many bytes are pending.
    outbuf_high_watermark = 16777216

    # A request body above this many bytes goes to a temporary file.
    inbuf_overflow = 524288

    # Stop accepting connections while this many are open.
    connection_limit = 100

    # Seconds between sweeps for idle connections.
    cleanup_interval = 30

    # Seconds of inactivity after which an idle connection is closed.
    channel_timeout = 120

    # Log socket errors and premature client disconnects.
    log_socket_errors = True

    # Largest request head, and largest request body, in bytes.
    max_request_header_size = 262144
    max_request_body_size = 1073741824

    # Put the traceback in the body of 500 responses.
    expose_tracebacks = False

    # Unix domain socket to listen on, and the permissions applied to it.
    unix_socket = None
    unix_socket_perms = 0o600

    # (level, option, value) set on every accepted TCP connection.
    socket_options = [  # noqa: RUF012
        (socket.SOL_TCP, socket.TCP_NODELAY, 1),
    ]

    # Event-loop timeout in seconds, and select() vs poll() (kept for
    # compatibility with Waitress; the engine has its own loop).
    asyncore_loop_timeout = 1
    asyncore_use_poll = False

    # Address families allowed when resolving ``listen``.
    ipv4 = True
    ipv6 = True

    # Already-bound sockets to accept on (socket activation).
    sockets = []  # noqa: RUF012

    # Requests to keep reading ahead on a connection while one is running.
    channel_request_lookahead = 0

    # SERVER_NAME of the WSGI environ unless a trusted proxy header sets it.
    server_name = "waitress.invalid"

    # A graceful stop (SIGTERM, Ctrl-C, close()) waits this many seconds at most for the requests
    # already received; then the process goes on without the threads still in the app.
    shutdown_timeout = 5.0

    def __init__(self, **kw):
        self._check_exclusive(kw)

        if "send_bytes" in kw:
            warnings.warn("send_bytes will be removed in a future release", DeprecationWarning)

        for name, value in kw.items():
            cast = self._param_map.get(name)
            if cast is None:
                raise ValueError(f"Unknown adjustment {name!r}")
            setattr(self, name, cast(value))

        if not isinstance(self.host, _str_marker) or not isinstance(self.port, _int_marker):
            self.listen = [f"{self.host}:{self.port}"]

        self._check_ranges()
        self.listen = self._resolve_listen()
        self._check_proxy_settings()
        self.check_sockets(self.sockets)

    def _check_ranges(self):
        """Values Waitress accepts and then misbehaves with (no thread to serve, a server that
        never accepts, reads of no bytes) are refused by name."""
        for name in ("threads", "connection_limit", "recv_bytes"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")

    @staticmethod
    def _check_port(port):
        """A numeric port must fit in 16 bits (Waitress lets 99999 wrap around to 34463)."""
        text = str(port).strip()
        if text.isdigit() and int(text) > 65535:
            raise ValueError(f"port must be between 0 and 65535, not {text}")

    @staticmethod
    def _check_exclusive(kw):
        listen = "listen" in kw
        sockets = "sockets" in kw
        unix = "unix_socket" in kw
        host_port = "host" in kw or "port" in kw
        if listen and host_port:
            raise ValueError("host or port may not be set if listen is set.")
        if listen and sockets:
            raise ValueError("socket may not be set if listen is set.")
        if sockets and host_port:
            raise ValueError("host or port may not be set if sockets is set.")
        if sockets and unix:
            raise ValueError("unix_socket may not be set if sockets is set")
        if unix and host_port:
            raise ValueError("unix_socket may not be set if host or port is set")
        if unix and listen:
            raise ValueError("unix_socket may not be set if listen is set")

    def _families(self):
        if not self.ipv4 and not HAS_IPV6:  # pragma: no cover
            raise ValueError(
                "IPv4 is disabled but IPv6 is not available. Cowardly refusing to start."
            )
        if self.ipv4 and not self.ipv6:
            return socket.AF_INET
        if not self.ipv4 and self.ipv6 and HAS_IPV6:
            return socket.AF_INET6
        return socket.AF_UNSPEC

    def _split_listen_entry(self, entry):
        """``"h:p"`` -> (h, p); ``"h"`` or ``"[v6]"`` -> (h, default port)."""
        if ":" in entry:
            host, port = entry.rsplit(":", 1)
            if "]" not in port:
                return host, port
        return entry, str(self.port)

    def _resolve_listen(self):
        """Resolve ``self.listen`` into (family, socktype, proto, sockaddr)
        tuples, dropping repeated (address-without-zone, port) pairs."""
        family = self._families()
        resolved = []
        seen = []
        for entry in self.listen:
            host, port = self._split_listen_entry(entry)
            self._check_port(port)

            if WIN:  # pragma: no cover
                try:
                    port = int(port)
                except Exception:  # noqa: BLE001
                    raise ValueError(
                        "Windows does not support service names instead of port numbers"
                    )

            try:
                if "[" in host and "]" in host:
                    host = host.strip("[").rstrip("]")
                if host == "*":
                    host = None
                infos = socket.getaddrinfo(
                    host,
                    port,
                    family,
                    socket.SOCK_STREAM,
                    socket.IPPROTO_TCP,
                    socket.AI_PASSIVE,
                )
                for fam, socktype, proto, _canonname, sockaddr in infos:
                    # getaddrinfo() can repeat itself, and on some systems
                    # returns one link-local address with several zone ids;
                    # binding twice would fail.
                    key = (sockaddr[0].split("%", 1)[0], sockaddr[1])
                    if sockaddr[1] == 0 or key not in seen:
                        resolved.append((fam, socktype, proto, sockaddr))
                        seen.append(key)
            except Exception:  # noqa: BLE001 (any failure means a bad host/port)
                raise ValueError("Invalid host/port specified.")
        return resolved

    def _check_proxy_settings(self):
        if self.trusted_proxy_count is not None and self.trusted_proxy is None:
            raise ValueError("trusted_proxy_count has no meaning without setting trusted_proxy")
        if self.trusted_proxy_count is None:
            self.trusted_proxy_count = 1

        if self.trusted_proxy_headers and self.trusted_proxy is None:
            raise ValueError("trusted_proxy_headers has no meaning without setting trusted_proxy")

        if self.trusted_proxy_headers:
            headers = {name.lower() for name in self.trusted_proxy_headers}
            self.trusted_proxy_headers = headers
            unknown = headers - KNOWN_PROXY_HEADERS
            if unknown:
                raise ValueError(
                    f"Received unknown trusted_proxy_headers value ({', '.join(unknown)}) "
                    f"expected one of {', '.join(KNOWN_PROXY_HEADERS)}"
                )
            if "forwarded" in headers and headers - {"forwarded"}:
                raise ValueError(
                    "The Forwarded proxy header and the "
                    "X-Forwarded-{By,Host,Proto,Port,For} headers are mutually "
                    "exclusive. Can't trust both!"
                )
        elif self.trusted_proxy is not None:
            warnings.warn(
                "No proxy headers were marked as trusted, but trusted_proxy was set. "
                "Implicitly trusting X-Forwarded-Proto for backwards compatibility. "
                "This will be removed in future versions of maitre.",
                DeprecationWarning,
            )
            self.trusted_proxy_headers = {"x-forwarded-proto"}

    @classmethod
    def parse_args(cls, argv):
        """Turn command-line arguments into ``(kw, args)``. Values are left as
        strings (booleans as ``"true"``/``"false"``) for ``__init__`` to cast;
        ``kw`` always holds ``help`` and ``call``. Raises getopt.GetoptError."""
        long_opts = ["help", "call", "version"]
        for name, cast in cls._params:
            opt = name.replace("_", "-")
            if cast is asbool:
                long_opts.extend((opt, "no-" + opt))
            else:
                long_opts.append(opt + "=")

        kw = {"help": False, "call": False}
        opts, args = getopt.getopt(argv, "", long_opts)
        for opt, value in opts:
            param = opt.lstrip("-").replace("-", "_")
            if param == "listen":
                kw["listen"] = f"{kw.get('listen', '')} {value}"
            elif param.startswith("no_"):
                kw[param[3:]] = "false"
            elif param in ("help", "call", "version"):
                kw[param] = True
            elif cls._param_map[param] is asbool:
                kw[param] = "true"
            else:
                kw[param] = value
        return kw, args

    @classmethod
    def check_sockets(cls, sockets):
        """Pre-bound sockets must all be INET/INET6 streams or all UNIX streams."""
        inet = unix = unsupported = False
        af_unix = getattr(socket, "AF_UNIX", None)
        for sock in sockets:
            if sock.type != socket.SOCK_STREAM:
                unsupported = True
            elif sock.family in (socket.AF_INET, socket.AF_INET6):
                inet = True
            elif af_unix is not None and sock.family == af_unix:
                unix = True
            else:
                unsupported = True
        if unix and inet:
            raise ValueError("Internet and UNIX sockets may not be mixed.")
        if unsupported:
            raise ValueError("Only Internet or UNIX stream sockets may be used.")
