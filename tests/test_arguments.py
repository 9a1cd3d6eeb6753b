"""Arguments as users pass them: ``sockets=`` (already-bound sockets), PasteDeploy ini files
serving a Pyramid app, ``maitre-serve`` flags reaching ``serve()``, and bad values.

Run with ``MAITRE_TEST_IMPL=waitress`` to check the same expectations against Waitress 3.0.2.
"""

import importlib
import json
import logging
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import traceback

import pytest
from apps.wire import make_app
from support.http import Conn, exchange, get, wait_until
from support.server import (
    IMPL,
    ServerHandle,
    free_port,
    impl,
    ipv6_loopback_works,
    wait_for_port,
)

_ctx = multiprocessing.get_context("fork")


# -- sockets= ---------------------------------------------------------------------------------------
def _child(app, kw, q, log_file, use_serve):
    try:
        log = logging.getLogger(IMPL)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        if use_serve:
            q.put({})
            impl().serve(app, **kw)
            return
        srv = impl().create_server(app, **kw)
        info = {"class": type(srv).__name__}
        if hasattr(srv, "effective_listen"):
            info["effective_listen"] = list(srv.effective_listen)
            info["has_effective_port"] = hasattr(srv, "effective_port")
        else:
            info["effective"] = (srv.effective_host, srv.effective_port)
        q.put(info)
    except BaseException:
        q.put({"error": traceback.format_exc()})
        raise
    srv.run()


@pytest.fixture
def spawn(tmp_path):
    """``spawn(app, use_serve=False, **kw)`` → (info, log path): a server child of ours, so that
    any ``sockets=`` mix can be described."""
    handles = []

    def _spawn(app, use_serve=False, **kw):
        log = tmp_path / f"log{len(handles)}.txt"
        log.write_text("")
        q = _ctx.Queue()
        proc = _ctx.Process(target=_child, args=(app, kw, q, str(log), use_serve), daemon=True)
        proc.start()
        info = q.get(timeout=10)
        handles.append(ServerHandle(proc, q, {}))
        assert "error" not in info, info["error"]
        return info, log

    yield _spawn
    for h in handles:
        h.stop()


def _bound(family=socket.AF_INET, host="127.0.0.1", listen=False):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    if listen:
        sock.listen(5)
    return sock


@pytest.mark.parametrize("listening", [False, True], ids=["bound", "bound+listening"])
def test_sockets_tcp(spawn, listening):
    sock = _bound(listen=listening)
    port = sock.getsockname()[1]
    try:
        info, _ = spawn(make_app(), sockets=[sock])
    finally:
        sock.close()  # the child has its own copy
    assert info["class"] == "TcpWSGIServer"
    assert info["effective"] == ("127.0.0.1", str(port))
    env = get(("127.0.0.1", port), "/tcp").json()
    assert env["PATH_INFO"] == "/tcp"
    assert env["SERVER_PORT"] == str(port)


def test_sockets_unix(spawn, tmp_sock_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(tmp_sock_path)
    try:
        info, _ = spawn(make_app(), sockets=[sock])
    finally:
        sock.close()
    assert info["class"] == "UnixWSGIServer"
    assert info["effective"] == ("unix", tmp_sock_path)
    resp, _ = exchange(tmp_sock_path, b"GET /unix HTTP/1.1\r\nHost: a\r\n\r\n", close_wait=0.01)
    env = resp.json()
    assert (env["PATH_INFO"], env["REMOTE_ADDR"]) == ("/unix", "localhost")


def test_sockets_two_give_a_multi_socket_server(spawn):
    six = ipv6_loopback_works()
    socks = [_bound(), _bound(socket.AF_INET6, "::1") if six else _bound()]
    addrs = [s.getsockname()[:2] for s in socks]
    try:
        info, _ = spawn(make_app(), sockets=socks)
    finally:
        for s in socks:
            s.close()
    assert info["class"] == "MultiSocketServer"
    assert info["effective_listen"] == [(h, str(p)) for h, p in addrs]
    assert info["has_effective_port"] is False
    for host, port in addrs:
        with Conn((host, port)) as c:
            assert c.request(b"GET /m HTTP/1.1\r\nHost: a\r\n\r\n").json()["PATH_INFO"] == "/m"


def test_sockets_serving_on_lines(spawn):
    six = ipv6_loopback_works()
    socks = [_bound(), _bound(socket.AF_INET6, "::1") if six else _bound()]
    addrs = [s.getsockname()[:2] for s in socks]
    try:
        _, log = spawn(make_app(), use_serve=True, sockets=socks)
    finally:
        for s in socks:
            s.close()
    want = [f"INFO:{IMPL}:Serving on http://{f'[{h}]' if ':' in h else h}:{p}" for h, p in addrs]
    assert wait_until(lambda: len(log.read_text().splitlines()) >= 2, 5)
    assert log.read_text().splitlines() == want
    for host, port in addrs:
        wait_for_port(host, port, family=socket.AF_INET6 if ":" in host else socket.AF_INET)


def test_sockets_unix_serving_on_line(spawn, tmp_sock_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(tmp_sock_path)
    try:
        _, log = spawn(make_app(), use_serve=True, sockets=[sock])
    finally:
        sock.close()
    assert wait_until(lambda: "Serving on" in log.read_text(), 5)
    assert log.read_text().splitlines() == [f"INFO:{IMPL}:Serving on http://unix:{tmp_sock_path}"]


def _socket_error(**kw):
    with pytest.raises(ValueError) as info:
        impl().create_server(make_app(), **kw)
    return str(info.value)


def test_sockets_mixing_inet_and_unix(tmp_sock_path):
    inet = _bound()
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(tmp_sock_path)
    with inet, unix:
        assert _socket_error(sockets=[inet, unix]) == "Internet and UNIX sockets may not be mixed."


@pytest.mark.parametrize("family,kind", [
    (socket.AF_INET, socket.SOCK_DGRAM),
    (socket.AF_UNIX, socket.SOCK_DGRAM),
])
def test_sockets_not_stream(family, kind):
    with socket.socket(family, kind) as sock:
        assert _socket_error(sockets=[sock]) == "Only Internet or UNIX stream sockets may be used."


@pytest.mark.parametrize("extra,message", [
    ({"listen": "127.0.0.1:0"}, "socket may not be set if listen is set."),
    ({"host": "127.0.0.1"}, "host or port may not be set if sockets is set."),
    ({"port": 8080}, "host or port may not be set if sockets is set."),
    ({"unix_socket": "/tmp/x.sock"}, "unix_socket may not be set if sockets is set"),
])
def test_sockets_conflicts(extra, message):
    with _bound() as sock:
        assert _socket_error(sockets=[sock], **extra) == message


def test_sockets_non_sockets_are_dropped():
    # as_socket_list keeps socket.socket instances only.
    Adjustments = importlib.import_module(f"{IMPL}.adjustments").Adjustments
    with _bound() as sock:
        assert Adjustments(sockets=["not a socket", 5, sock]).sockets == [sock]


# -- PasteDeploy + Pyramid ----------------------------------------------------------------------------
PYRAMID_APP = '''
import json

from pyramid.config import Configurator
from pyramid.response import Response


def hello(request):
    body = {
        "name": request.matchdict["name"],
        "greeting": request.registry.settings["greeting"],
        "script_name": request.script_name,
        "path_info": request.path_info,
        "remote_addr": request.remote_addr,
        "scheme": request.scheme,
        "server_software": request.environ.get("SERVER_SOFTWARE"),
    }
    return Response(body=json.dumps(body).encode(), content_type="application/json")


def make_app(global_conf, **settings):
    with Configurator(settings=settings) as config:
        config.add_route("hello", "/hello/{name}")
        config.add_view(hello, route_name="hello")
        return config.make_wsgi_app()
'''

RUN_PASTE = '''
import logging, sys
from paste.deploy import loadapp, loadserver
logging.basicConfig(level=logging.WARNING)
logging.getLogger(sys.argv[2]).setLevel(logging.INFO)
uri = "config:" + sys.argv[1]
app = loadapp(uri)
server = loadserver(uri)
print("server runner returned", server(app), flush=True)
'''


def _paste(tmp_path, server_section, request, family=socket.AF_INET, wait_addr=None):
    """Serve the Pyramid app with an ini whose [server:main] is ``server_section``; send
    ``request`` to ``wait_addr``; stop with SIGINT. Returns (response, output, returncode)."""
    (tmp_path / "pyr_app.py").write_text(PYRAMID_APP)
    (tmp_path / "run_paste.py").write_text(RUN_PASTE)
    ini = tmp_path / "site.ini"
    ini.write_text(textwrap.dedent(f"""\
        [app:main]
        paste.app_factory = pyr_app:make_app
        greeting = bonjour

        [server:main]
        use = egg:{IMPL}#main
        """) + textwrap.dedent(server_section))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path)] + sys.path))
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run_paste.py"), str(ini), IMPL],
                            cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        if family == socket.AF_UNIX:
            assert wait_until(lambda: os.path.exists(wait_addr), 15), "no unix socket"
        else:
            wait_for_port(*wait_addr, timeout=15)
        with Conn(wait_addr) as c:
            resp = c.request(request)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=5)
    return resp, out.decode("utf-8", "replace"), proc.returncode


def test_paste_host_port(tmp_path):
    port = free_port()
    resp, out, rc = _paste(tmp_path, f"""\
        host = 127.0.0.1
        port = {port}
        threads = 2
        ident = paste-ident
        url_prefix = /site
        expose_tracebacks = false
        channel_timeout = 30
        """, b"GET /site/hello/ini HTTP/1.1\r\nHost: a\r\n\r\n", wait_addr=("127.0.0.1", port))
    assert resp.status == 200, out
    assert resp.header("Server") == "paste-ident"
    assert resp.json() == {"name": "ini", "greeting": "bonjour", "script_name": "/site",
                           "path_info": "/hello/ini", "remote_addr": "127.0.0.1",
                           "scheme": "http", "server_software": "paste-ident"}
    assert f"INFO:{IMPL}:Serving on http://127.0.0.1:{port}" in out
    assert "server runner returned 0" in out, out
    assert rc == 0


def test_paste_listen_and_proxy(tmp_path):
    p1, p2 = free_port(), free_port()
    resp, out, rc = _paste(tmp_path, f"""\
        listen =
            127.0.0.1:{p1}
            127.0.0.1:{p2}
        trusted_proxy = 127.0.0.1
        trusted_proxy_count = 1
        trusted_proxy_headers = x-forwarded-for x-forwarded-proto
        clear_untrusted_proxy_headers = false
        log_untrusted_proxy_headers = true
        """, b"GET /hello/proxy HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.7\r\n"
             b"X-Forwarded-Proto: https\r\n\r\n", wait_addr=("127.0.0.1", p2))
    assert resp.status == 200, out
    body = resp.json()
    assert (body["remote_addr"], body["scheme"]) == ("192.0.2.7", "https")
    for p in (p1, p2):
        assert f"INFO:{IMPL}:Serving on http://127.0.0.1:{p}" in out
    assert rc == 0


def test_paste_unix_socket(tmp_path, tmp_sock_path):
    resp, out, rc = _paste(tmp_path, f"""\
        unix_socket = {tmp_sock_path}
        unix_socket_perms = 660
        """, b"GET /hello/unix HTTP/1.1\r\nHost: a\r\n\r\n", family=socket.AF_UNIX,
        wait_addr=tmp_sock_path)
    assert resp.status == 200, out
    assert resp.json()["remote_addr"] == "localhost"
    assert f"INFO:{IMPL}:Serving on http://unix:{tmp_sock_path}" in out
    assert rc == 0


def test_serve_paste_returns_0_and_ignores_global_conf():
    seen = {}

    def fake_server(app, **kw):
        seen.update(kw)

        class S:
            def print_listen(self, fmt):
                pass

            def run(self):
                pass

        return S()

    rc = impl().serve_paste(make_app(), {"global": "ignored"}, port="80", threads="3",
                            _server=fake_server, _quiet=True)
    assert rc == 0
    assert seen == {"port": "80", "threads": "3"}


# -- maitre-serve flags -------------------------------------------------------------------------------
@pytest.fixture
def runner():
    """The runner module; the logger level it sets is put back afterwards."""
    log = logging.getLogger(IMPL)
    level = log.level
    path = list(sys.path)
    yield importlib.import_module(f"{IMPL}.runner")
    log.setLevel(level)
    sys.path[:] = path


def _run(runner, argv):
    calls = []

    def fake_serve(app, **kw):
        calls.append((app, kw))

    rc = runner.run([f"{IMPL}-serve"] + argv, _serve=fake_serve)
    return rc, calls


def test_flags_reach_serve_uncast(runner):
    rc, calls = _run(runner, [
        "--port=8081", "--host", "127.0.0.2", "--threads=8", "--no-ipv6", "--ipv4",
        "--expose-tracebacks", "--no-clear-untrusted-proxy-headers", "--trusted-proxy=*",
        "--trusted-proxy-count=2", "--trusted-proxy-headers=x-forwarded-for forwarded",
        "--url-scheme=https", "--url-prefix=/p", "--ident=x", "--unix-socket-perms=660",
        "--send-bytes=1", "--asyncore-loop-timeout=3", "--asyncore-use-poll",
        "--channel-request-lookahead=2", "--server-name=s.example", "json:dumps",
    ])
    assert rc == 0
    [(app, kw)] = calls
    assert app is json.dumps
    assert kw == {
        "port": "8081", "host": "127.0.0.2", "threads": "8", "ipv6": "false", "ipv4": "true",
        "expose_tracebacks": "true", "clear_untrusted_proxy_headers": "false",
        "trusted_proxy": "*", "trusted_proxy_count": "2",
        "trusted_proxy_headers": "x-forwarded-for forwarded", "url_scheme": "https",
        "url_prefix": "/p", "ident": "x", "unix_socket_perms": "660", "send_bytes": "1",
        "asyncore_loop_timeout": "3", "asyncore_use_poll": "true",
        "channel_request_lookahead": "2", "server_name": "s.example",
    }


def test_flags_listen_accumulates_and_prefixes(runner):
    rc, calls = _run(runner, ["--listen=127.0.0.1:1", "--listen", "[::1]:2", "--thr=3",
                              "--log-sock", "--no-log-untr", "json:dumps"])
    assert rc == 0
    assert calls[0][1] == {"listen": " 127.0.0.1:1 [::1]:2", "threads": "3",
                           "log_socket_errors": "true", "log_untrusted_proxy_headers": "false"}


def test_flags_call(runner):
    rc, calls = _run(runner, ["--call", "json:JSONDecoder"])
    assert rc == 0
    assert isinstance(calls[0][0], json.JSONDecoder)
    assert calls[0][1] == {}


@pytest.mark.parametrize("argv,message", [
    (["--no-ip", "json:dumps"], "option --no-ip not a unique prefix"),
    (["--bogus", "json:dumps"], "option --bogus not recognized"),
    (["--port"], "option --port requires argument"),
    (["--expose-tracebacks=1", "json:dumps"], "option --expose-tracebacks must not have an argument"),
    ([], "Specify one application only"),
    (["json:dumps", "json:loads"], "Specify one application only"),
])
def test_flag_errors(runner, capsys, argv, message):
    rc, calls = _run(runner, argv)
    assert (rc, calls) == (1, [])
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {message}\n\nUsage:\n\n    {IMPL}-serve [OPTS] MODULE:OBJECT\n")


def test_flag_bad_value_reaches_adjustments(runner):
    # serve() casts: a bad value is Waitress's uncaught ValueError, before anything binds;
    # maitre-serve reports it as a message (a deliberate difference).
    if IMPL == "waitress":
        with pytest.raises(ValueError, match=re.escape("invalid literal for int() with base 10")):
            runner.run([f"{IMPL}-serve", "--threads=abc", "json:dumps"])
    else:
        assert runner.run([f"{IMPL}-serve", "--threads=abc", "json:dumps"]) == 1


def test_cli_bad_value_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", IMPL, "--port=http0", "json:dumps"],
                          cwd=str(tmp_path), capture_output=True, timeout=30, check=False)
    err = proc.stderr.decode()
    message = "invalid literal for int() with base 10: 'http0'"
    if IMPL == "waitress":
        assert "Traceback (most recent call last)" in err
        assert err.rstrip().endswith(f"ValueError: {message}")
    else:
        assert err.startswith(f"Error: {message}\n") and "Traceback" not in err, err
    # python -m waitress ignores the runner's result and exits 0 even on errors; here the
    # exception escapes, which is exit 1 in both.
    assert proc.returncode == 1


# -- bad values through serve()/create_server() -------------------------------------------------------
UNKNOWN_HEADER = re.compile(
    r"Received unknown trusted_proxy_headers value \(x-forwarded-nope\) expected one of "
    r"((forwarded|x-forwarded-(by|port|proto|host|for))(, |$)){6}")


@pytest.mark.parametrize("kw,exc,message", [
    ({"threads": "abc"}, ValueError, "invalid literal for int() with base 10: 'abc'"),
    ({"backlog": "1.5"}, ValueError, "invalid literal for int() with base 10: '1.5'"),
    ({"unix_socket_perms": 600}, TypeError, "int() can't convert non-string with explicit base"),
    ({"bogus": 1}, ValueError, "Unknown adjustment 'bogus'"),
    ({"socket_options": []}, ValueError, "Unknown adjustment 'socket_options'"),
    ({"trusted_proxy_count": 2}, ValueError,
     "trusted_proxy_count has no meaning without setting trusted_proxy"),
    ({"trusted_proxy_headers": "x-forwarded-for"}, ValueError,
     "trusted_proxy_headers has no meaning without setting trusted_proxy"),
    ({"trusted_proxy": "*", "trusted_proxy_headers": "x-forwarded-nope"}, ValueError,
     UNKNOWN_HEADER),
    ({"trusted_proxy": "*", "trusted_proxy_headers": "forwarded x-forwarded-for"}, ValueError,
     ("The Forwarded proxy header and the X-Forwarded-{By,Host,Proto,Port,For} headers are "
      "mutually exclusive. Can't trust both!")),
    ({"listen": "127.0.0.1:notaport"}, ValueError, "Invalid host/port specified."),
    ({"listen": "[::1"}, ValueError, "Invalid host/port specified."),
    ({"host": "127.0.0.1", "listen": "127.0.0.1:0"}, ValueError,
     "host or port may not be set if listen is set."),
    ({"unix_socket": "/tmp/x.sock", "port": "1"}, ValueError,
     "unix_socket may not be set if host or port is set"),
    ({"unix_socket": "/tmp/x.sock", "listen": "127.0.0.1:0"}, ValueError,
     "unix_socket may not be set if listen is set"),
])
def test_bad_values(kw, exc, message):
    for call in (impl().create_server, lambda app, **k: impl().serve(app, _quiet=True, **k)):
        with pytest.raises(exc) as info:
            call(make_app(), **kw)
        if isinstance(message, str):
            assert str(info.value) == message
        else:
            assert message.fullmatch(str(info.value)), str(info.value)


def test_app_none():
    with pytest.raises(ValueError) as info:
        impl().create_server(None)
    assert str(info.value) == ('The "app" passed to ``create_server`` was ``None``.  You forgot '
                               "to return a WSGI app within your application.")


def test_deprecated_arguments_warn_but_work(spawn):
    with pytest.warns(DeprecationWarning, match="send_bytes will be removed"):
        importlib.import_module(f"{IMPL}.adjustments").Adjustments(send_bytes="10")
    with pytest.warns(DeprecationWarning, match="Implicitly trusting X-Forwarded-Proto"):
        importlib.import_module(f"{IMPL}.adjustments").Adjustments(trusted_proxy="*")
    # Accepted, and (in maitre) without effect: the server still serves.
    port = free_port()
    spawn(make_app(), listen=f"127.0.0.1:{port}", send_bytes="9000", asyncore_loop_timeout="5",
          asyncore_use_poll="true")
    assert get(("127.0.0.1", port), "/d").status == 200


# -- maitre's own: shutdown_timeout; extreme values never panic ------------------------------------
@pytest.mark.skipif(IMPL == "waitress", reason="maitre's own argument")
def test_shutdown_timeout_flag_and_casts(runner):
    rc, calls = _run(runner, ["--shutdown-timeout=2.5", "json:dumps"])
    assert rc == 0 and calls[0][1] == {"shutdown_timeout": "2.5"}
    from maitre.adjustments import Adjustments

    assert Adjustments(shutdown_timeout="2.5").shutdown_timeout == 2.5
    assert Adjustments(shutdown_timeout=0).shutdown_timeout == 0.0
    assert Adjustments().shutdown_timeout == 5.0
    for bad in ("-1", "abc", float("nan")):
        with pytest.raises(ValueError):
            Adjustments(shutdown_timeout=bad)


@pytest.mark.skipif(IMPL == "waitress", reason="maitre's engine settings")
@pytest.mark.parametrize("kw", [
    {"channel_timeout": 10**30}, {"cleanup_interval": 10**30}, {"shutdown_timeout": "inf"},
    {"outbuf_overflow": 10**30}, {"max_request_body_size": 10**30}, {"recv_bytes": 10**12},
    {"connection_limit": 10**30}, {"threads": 1},
], ids=lambda kw: next(iter(kw)))
def test_extreme_values_start_a_server(kw):
    """Huge values mean "no limit" (never a PanicException from the engine)."""
    srv = impl().create_server(lambda e, s: [], host="127.0.0.1", port=0, **kw)
    srv.close()


@pytest.mark.skipif(IMPL == "waitress", reason="Waitress accepts them and fails later")
@pytest.mark.parametrize("name,value,message", [
    ("threads", 0, "threads must be at least 1, not 0"),
    ("connection_limit", 0, "connection_limit must be at least 1, not 0"),
    ("recv_bytes", -5, "recv_bytes must be at least 1, not -5"),
    ("max_request_body_size", -5, "max_request_body_size must be 0 or more, not -5"),
    ("outbuf_overflow", -5, "outbuf_overflow must be 0 or more, not -5"),
    ("port", 99999, "port must be between 0 and 65535, not 99999"),
    ("listen", "127.0.0.1:70000", "port must be between 0 and 65535, not 70000"),
])
def test_out_of_range_values_are_refused_by_name(name, value, message):
    kw = {name: value} if name in ("port", "listen") else {name: value, "host": "127.0.0.1",
                                                             "port": 0}
    with pytest.raises(ValueError, match=re.escape(message)):
        impl().create_server(lambda e, s: [], **kw)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", IMPL, *args], capture_output=True, text=True,
                          timeout=30, check=False, cwd=cwd)


@pytest.mark.skipif(IMPL == "waitress", reason="waitress-serve prints a traceback")
@pytest.mark.parametrize("flag,message", [
    ("--threads=0", "threads must be at least 1, not 0"),
    ("--port=99999", "port must be between 0 and 65535, not 99999"),
    ("--listen=127.0.0.1:65536", "port must be between 0 and 65535, not 65536"),
    ("--connection-limit=0", "connection_limit must be at least 1, not 0"),
    ("--recv-bytes=0", "recv_bytes must be at least 1, not 0"),
    ("--threads=many", "invalid literal for int() with base 10: 'many'"),
    ("--shutdown-timeout=-1", "must be a number of seconds, 0 or more: '-1'"),
])
def test_cli_bad_values_are_a_message(flag, message):
    """A bad value: `Error: ...` and the usage line on stderr, exit 1, no traceback."""
    proc = _cli(flag, "json:dumps")
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith(f"Error: {message}\n"), proc.stderr
    assert "Usage: python -m maitre [OPTS] MODULE:OBJECT" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(IMPL == "waitress", reason="maitre's own flag")
def test_cli_version_matches_the_package():
    import maitre

    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"maitre {maitre.__version__}\n", proc
    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")) as f:
        pyproject = f.read()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    assert version == maitre.__version__


@pytest.mark.skipif(IMPL == "waitress", reason="python -m waitress says __main__.py")
def test_python_m_help_names_the_program():
    proc = _cli("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage:\n\n    python -m maitre [OPTS] MODULE:OBJECT"), proc.stdout
    # The flags that do nothing in maitre say so.
    for flag in ("--send-bytes", "--asyncore-loop-timeout", "--asyncore-use-poll",
                 "--log-socket-errors", "--channel-request-lookahead"):
        text = proc.stdout.split(flag[2:], 1)[1].split("\n\n", 1)[0]
        assert "no effect in maitre" in " ".join(text.split()), (flag, text)
