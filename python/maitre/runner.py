"""The ``maitre-serve`` command (also ``python -m maitre``): the flags,
help text, messages and exit codes of ``waitress-serve`` 3.0.2."""

import getopt
import logging
import os
import pkgutil
import sys

from maitre import __version__, serve
from maitre.adjustments import Adjustments
from maitre.utilities import logger

HELP = """\
Usage:

    {0} [OPTS] MODULE:OBJECT

Standard options:

    --help
        Print this help and exit.

    --version
        Print maitre's version and exit.

    --call
        Call MODULE:OBJECT with no arguments and serve the WSGI application
        it returns (for application factories).

    --host=ADDR
        Host name or IP address to listen on. The default is '0.0.0.0',
        every IPv4 address of this machine.

        Note: May not be used together with --listen

    --port=PORT
        TCP port to listen on. The default is '8080'.

        Note: May not be used together with --listen

    --listen=ip:port
        An address and port to listen on.

        Example:

            --listen=127.0.0.1:8080
            --listen=[::1]:8080
            --listen=*:8080

        Give it several times to listen on several sockets. The host '*'
        is a wildcard: it binds to the IPv4 and/or IPv6 wildcard address,
        whichever families are enabled.

    --[no-]ipv4
        Turn IPv4 support on or off.

        Example:

            --no-ipv4

        Disables IPv4 sockets. This changes what a wildcard host in
        --listen expands to.

    --[no-]ipv6
        Turn IPv6 support on or off.

        Example:

            --no-ipv6

        Disables IPv6 sockets. This changes what a wildcard host in
        --listen expands to.

    --unix-socket=PATH
        Path of a Unix domain socket to listen on instead of a TCP
        socket.

        Not available on Windows.

    --unix-socket-perms=PERMS
        Permissions of the Unix domain socket, in octal. The default is
        '600'.

    --url-scheme=STR
        The default wsgi.url_scheme. The default is 'http'.

    --url-prefix=STR
        The WSGI ``SCRIPT_NAME``. When it is not empty, ``SCRIPT_NAME`` is
        this value without trailing slashes, and the prefix is removed from
        the ``PATH_INFO`` of every request whose path starts with it. The
        default is the empty string.

    --ident=STR
        Server identity, sent in the 'Server' header of responses. The
        default is 'maitre'.

    --server-name=STR
        The WSGI ``SERVER_NAME`` of every request, unless a trusted proxy
        header sets it. The default is 'waitress.invalid'.

    --trusted-proxy=IP
        Address of the proxy server whose proxy headers are trusted, or
        '*' to trust every peer. Use 'localhost' with --unix-socket.

    --trusted-proxy-count=INT
        How many proxies in front of this server to trust when a header
        lists several hops. The default is 1.

    --trusted-proxy-headers=LIST
        The proxy headers to trust from --trusted-proxy: one or more of
        'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto',
        'x-forwarded-port', 'x-forwarded-by', or 'forwarded' alone,
        separated by spaces.

    --[no-]log-untrusted-proxy-headers
        Log a warning naming the untrusted proxy headers that were
        removed. Off by default.

    --[no-]clear-untrusted-proxy-headers
        Remove untrusted proxy headers from the WSGI environment. On by
        default.

Tuning options:

    --threads=INT
        Number of threads running the application. The default is 4.

    --backlog=INT
        Backlog of pending connections passed to listen(). The default is
        1024.

    --recv-bytes=INT
        Number of bytes read from a socket at a time. The default is 8192.

    --send-bytes=INT
        Deprecated; accepted for compatibility, no effect in maitre (output
        is sent as the application produces it). The default is 1.

    --outbuf-overflow=INT
        Pending output larger than this many bytes is kept in a temporary
        file. The default is 1048576 (1MB).

    --outbuf-high-watermark=INT
        The application's output is paused while more than this many bytes
        are waiting to be sent, and resumes when less is pending. The
        default is 16777216 (16MB).

    --inbuf-overflow=INT
        A request body larger than this many bytes is kept in a temporary
        file. The default is 524288 (512KB).

    --connection-limit=INT
        Stop accepting new connections while this many are open. The
        default is 100.

    --cleanup-interval=INT
        Minimum number of seconds between sweeps for inactive connections.
        The default is 30. See '--channel-timeout'.

    --channel-timeout=INT
        Close a connection after this many seconds without activity. The
        default is 120. A connection is inactive when nothing has been
        received from or sent to the client.

    --[no-]log-socket-errors
        Accepted for compatibility, no effect in maitre (socket errors of
        clients are never logged). On by default.

    --max-request-header-size=INT
        Largest size of the request line and headers together, in bytes.
        The default is 262144 (256KB).

    --max-request-body-size=INT
        Largest size of a request body, in bytes. The default is
        1073741824 (1GB).

    --[no-]expose-tracebacks
        Turn on or off sending the traceback of an unhandled application
        exception to the client. Off by default.

    --asyncore-loop-timeout=INT
        Accepted for compatibility, no effect in maitre (its event loop is
        epoll). The default is 1.

    --[no-]asyncore-use-poll
        Accepted for compatibility, no effect in maitre (its event loop is
        epoll). Off by default.

    --channel-request-lookahead=INT
        Accepted for compatibility, no effect in maitre: it always reads
        ahead on a connection while one of its requests is processed, which
        lets the application notice a client that has disconnected. The
        default is 0.

    --shutdown-timeout=SECONDS
        On SIGTERM or Ctrl-C, stop accepting at once and wait at most this
        long for the requests already received, then exit. A second signal
        exits at once. The default is 5.

"""


def show_help(stream, name, error=None):
    if error is not None:
        print(f"Error: {error}\n", file=stream)
    print(HELP.format(name), file=stream)


def show_exception(stream):
    """Describe the exception being handled (an import failure)."""
    exc_type, exc_value = sys.exc_info()[:2]
    print(f"There was an exception ({exc_type.__name__}) importing your module.\n", file=stream)
    args = getattr(exc_value, "args", None)
    if args:
        print("It had these arguments: ", file=stream)
        for number, arg in enumerate(args, 1):
            print(f"{number}. {arg}\n", file=stream)
    else:
        print("It had no arguments.", file=stream)


def show_usage_error(stream, name, error):
    """A bad value: the message and the usage line, not the whole help."""
    print(f"Error: {error}\n", file=stream)
    print(f"Usage: {name} [OPTS] MODULE:OBJECT   (see {name} --help)", file=stream)


def run(argv=sys.argv, _serve=serve):
    """Run ``maitre-serve`` with ``argv``; return the exit code."""
    name = os.path.basename(argv[0])

    try:
        kw, args = Adjustments.parse_args(argv[1:])
    except getopt.GetoptError as exc:
        show_help(sys.stderr, name, str(exc))
        return 1

    if kw.pop("help"):
        show_help(sys.stdout, name)
        return 0

    if kw.pop("version", False):
        print(f"maitre {__version__}")
        return 0

    if len(args) != 1:
        show_help(sys.stderr, name, "Specify one application only")
        return 1

    # Without a level of its own the logger would inherit WARNING from the
    # root logger and "Serving on ..." would not be shown.
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)

    call = kw.pop("call")

    sys.path.append(os.getcwd())

    try:
        app = pkgutil.resolve_name(args[0])
    except (ValueError, ImportError, AttributeError) as exc:
        show_help(sys.stderr, name, str(exc))
        show_exception(sys.stderr)
        return 1

    if call:
        app = app()

    try:
        _serve(app, **kw)
    except (ValueError, TypeError) as exc:
        # A bad value (serve() checks them all before it binds or serves): a message, not
        # waitress-serve's traceback.
        show_usage_error(sys.stderr, name, exc)
        return 1
    return 0
