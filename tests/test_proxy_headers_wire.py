"""Proxy headers (``trusted_proxy`` and friends) over real sockets.

Every ``X-Forwarded-*`` header and ``Forwarded``, from a trusted peer (the client is always
127.0.0.1; ``trusted_proxy="127.0.0.1"`` or ``"*"``) and from an untrusted one
(``trusted_proxy`` naming another address), with ``trusted_proxy_count`` 1 and 2,
``clear_untrusted_proxy_headers`` on and off, ``log_untrusted_proxy_headers`` on, and each
malformed value: a 400 with Waitress's body, sent through the app path (no Content-Length, so
chunked and closed on HTTP/1.1, closed on HTTP/1.0). Run with ``MAITRE_TEST_IMPL=waitress`` to
check the same expectations against Waitress 3.0.2.
"""

import json

import pytest
from support.http import Conn, error_body, exchange, wait_until
from support.server import IDENT, IMPL, start_server

PEER = "127.0.0.1"
OTHER = "10.255.255.1"  # a trusted_proxy that is never the peer
XHEADERS = {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
            "x-forwarded-by"}
ALL_SIX = {
    "X-Forwarded-For": "192.0.2.1",
    "X-Forwarded-Host": "fwd.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-By": "proxy.example",
    "Forwarded": "for=192.0.2.2;host=fwd2.example;proto=https",
}
ENV_KEYS = ("REMOTE_ADDR", "REMOTE_HOST", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT",
            "wsgi.url_scheme")
PROXY_KEYS = {"HTTP_" + name.upper().replace("-", "_") for name in ALL_SIX}
ISE_DETAIL = "The server encountered an unexpected internal server error"


def echo(environ, start_response):
    """The environ keys the proxy headers can change, as JSON."""
    data = {k: environ.get(k) for k in ENV_KEYS}
    data.update({k: v for k, v in environ.items() if k.startswith("HTTP_")})
    body = json.dumps(data).encode("utf-8")
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(scope="module")
def server():
    """``server(**adjustments)``: one shared server per set of adjustments in this module."""
    made = {}

    def get(**kw):
        key = repr(sorted(kw.items()))
        if key not in made:
            made[key] = start_server(echo, **kw)
        return made[key]

    yield get
    for h in made.values():
        h.stop()


def trusted(count=1, headers=XHEADERS, proxy=PEER, **kw):
    return dict(trusted_proxy=proxy, trusted_proxy_count=count,
                trusted_proxy_headers=set(headers), **kw)


def request(h, headers, version="1.1", close_wait=1.0):
    lines = [f"GET /p HTTP/{version}", "Host: origin.example"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return exchange(h.addr, data, close_wait=close_wait)


def environ(h, headers):
    resp, _ = request(h, headers, close_wait=0.001)
    assert resp.status == 200, resp
    return resp.json()


def proxy_headers(env):
    return {k: v for k, v in env.items() if k in PROXY_KEYS}


def defaults(h):
    """What the environ holds when no proxy header applies."""
    return {"REMOTE_ADDR": PEER, "REMOTE_HOST": PEER, "SERVER_NAME": "waitress.invalid",
            "SERVER_PORT": str(h.port), "wsgi.url_scheme": "http", "HTTP_HOST": "origin.example"}


def check(env, h, **changed):
    want = dict(defaults(h), **changed)
    got = {k: env.get(k) for k in want}
    assert got == want
    assert env["REMOTE_PORT"] != ""


# -- each header from a trusted peer ----------------------------------------------------------------
@pytest.mark.parametrize("proxy", [PEER, "*"])
def test_x_forwarded_for(server, proxy):
    value = "198.51.100.9, 192.0.2.1, 203.0.113.7:4711"
    env = environ(server(**trusted(1, proxy=proxy)), {"X-Forwarded-For": value})
    h = server(**trusted(1, proxy=proxy))
    check(env, h, REMOTE_ADDR="203.0.113.7", REMOTE_HOST="203.0.113.7", REMOTE_PORT="4711")
    # Only the trusted hops are kept (Waitress 3.0.2, #452).
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.7:4711"

    h = server(**trusted(2, proxy=proxy))
    env = environ(h, {"X-Forwarded-For": value})
    check(env, h, REMOTE_ADDR="192.0.2.1", REMOTE_HOST="192.0.2.1")
    assert env["HTTP_X_FORWARDED_FOR"] == "192.0.2.1, 203.0.113.7:4711"


@pytest.mark.parametrize("value,addr", [
    ("2001:db8::1", "2001:db8::1"),
    ('"[2001:db8::2]"', "2001:db8::2"),
    ("[2001:db8::3]:81", "[2001:db8::3]:81"),  # Waitress's quirk: taken for a bare address
])
def test_x_forwarded_for_ipv6(server, value, addr):
    h = server(**trusted(1))
    env = environ(h, {"X-Forwarded-For": value})
    check(env, h, REMOTE_ADDR=addr, REMOTE_HOST=addr)


def test_x_forwarded_host(server):
    value = "first.example, second.example:8443"
    h = server(**trusted(1))
    env = environ(h, {"X-Forwarded-Host": value})
    check(env, h, SERVER_NAME="second.example", HTTP_HOST="second.example:8443",
          SERVER_PORT="8443")
    assert env["HTTP_X_FORWARDED_HOST"] == "second.example:8443"

    h = server(**trusted(2))
    env = environ(h, {"X-Forwarded-Host": value})
    check(env, h, SERVER_NAME="first.example", HTTP_HOST="first.example")
    assert env["HTTP_X_FORWARDED_HOST"] == value


@pytest.mark.parametrize("count", [1, 2])
def test_x_forwarded_proto(server, count):
    h = server(**trusted(count))
    env = environ(h, {"X-Forwarded-Proto": "HTTPS"})
    check(env, h, **{"wsgi.url_scheme": "https", "SERVER_PORT": "443"})
    assert env["HTTP_X_FORWARDED_PROTO"] == "HTTPS"
    env = environ(h, {"X-Forwarded-Proto": '"http"'})
    check(env, h, **{"wsgi.url_scheme": "http", "SERVER_PORT": "80"})


@pytest.mark.parametrize("count", [1, 2])
def test_x_forwarded_port(server, count):
    h = server(**trusted(count))
    env = environ(h, {"X-Forwarded-Port": "8000"})
    check(env, h, SERVER_PORT="8000")
    assert env["HTTP_X_FORWARDED_PORT"] == "8000"


def test_x_forwarded_by_is_kept_when_trusted(server):
    h = server(**trusted(1))
    env = environ(h, {"X-Forwarded-By": "proxy.example"})
    check(env, h)
    assert env["HTTP_X_FORWARDED_BY"] == "proxy.example"


@pytest.mark.parametrize("headers,changed", [
    ({"X-Forwarded-Host": "app.example", "X-Forwarded-Proto": "https"},
     {"SERVER_NAME": "app.example", "HTTP_HOST": "app.example", "SERVER_PORT": "443",
      "wsgi.url_scheme": "https"}),
    ({"X-Forwarded-Host": "app.example", "X-Forwarded-Proto": "https",
      "X-Forwarded-Port": "80"},
     {"SERVER_NAME": "app.example", "HTTP_HOST": "app.example:80", "SERVER_PORT": "80",
      "wsgi.url_scheme": "https"}),
    ({"X-Forwarded-Host": "app.example", "X-Forwarded-Port": "8080"},
     {"SERVER_NAME": "app.example", "HTTP_HOST": "app.example:8080", "SERVER_PORT": "8080"}),
    ({"X-Forwarded-Host": "app.example:9000", "X-Forwarded-Port": "8080"},
     {"SERVER_NAME": "app.example", "HTTP_HOST": "app.example:9000", "SERVER_PORT": "9000"}),
])
def test_x_forwarded_combined(server, headers, changed):
    h = server(**trusted(1))
    check(environ(h, headers), h, **changed)


def test_url_scheme_adjustment_and_forwarded_port(server):
    h = server(**trusted(1, url_scheme="https"))
    env = environ(h, {})
    check(env, h, **{"wsgi.url_scheme": "https"})
    env = environ(h, {"X-Forwarded-Host": "app.example", "X-Forwarded-Port": "443"})
    check(env, h, **{"wsgi.url_scheme": "https", "SERVER_NAME": "app.example",
                     "HTTP_HOST": "app.example", "SERVER_PORT": "443"})


FORWARDED = ('for=192.0.2.60;proto=https;host=client.example, '
             'For="[2001:db8::1]:3821";Host=Mid.Example:8080')


def test_forwarded_count_1(server):
    h = server(**trusted(1, {"forwarded"}))
    env = environ(h, {"Forwarded": FORWARDED})
    check(env, h, REMOTE_ADDR="2001:db8::1", REMOTE_HOST="2001:db8::1", REMOTE_PORT="3821",
          SERVER_NAME="mid.example", HTTP_HOST="mid.example:8080", SERVER_PORT="8080")
    assert env["HTTP_FORWARDED"] == 'For="[2001:db8::1]:3821";Host=Mid.Example:8080'


def test_forwarded_count_2(server):
    h = server(**trusted(2, {"forwarded"}))
    env = environ(h, {"Forwarded": FORWARDED})
    check(env, h, **{"REMOTE_ADDR": "192.0.2.60", "REMOTE_HOST": "192.0.2.60",
                     "SERVER_NAME": "client.example", "HTTP_HOST": "client.example",
                     "SERVER_PORT": "443", "wsgi.url_scheme": "https"})
    assert env["HTTP_FORWARDED"] == FORWARDED


def test_forwarded_quoted_values_and_unknown_token(server, tmp_path):
    log = tmp_path / "log.txt"
    h = start_server(echo, log_file=str(log), **trusted(1, {"forwarded"}))
    try:
        env = environ(h, {"Forwarded": 'for="\\1.2.3.4";proto="HTTP";secret=x;host="a\\.b"'})
        check(env, h, REMOTE_ADDR="1.2.3.4", REMOTE_HOST="1.2.3.4", SERVER_NAME="a.b",
              HTTP_HOST="a.b", SERVER_PORT="80")
        assert wait_until(lambda: "Unknown Forwarded token" in log.read_text(), 3)
        assert f"WARNING:{IMPL}:Unknown Forwarded token: secret" in log.read_text().splitlines()
    finally:
        h.stop()


def test_forwarded_takes_the_place_of_x_forwarded(server):
    # With "forwarded" trusted, every X-Forwarded-* header is untrusted.
    h = server(**trusted(1, {"forwarded"}))
    env = environ(h, dict(ALL_SIX))
    check(env, h, **{"REMOTE_ADDR": "192.0.2.2", "REMOTE_HOST": "192.0.2.2",
                     "SERVER_NAME": "fwd2.example", "HTTP_HOST": "fwd2.example",
                     "SERVER_PORT": "443", "wsgi.url_scheme": "https"})
    assert proxy_headers(env) == {"HTTP_FORWARDED": ALL_SIX["Forwarded"]}


# -- untrusted peers, clear on and off --------------------------------------------------------------
@pytest.mark.parametrize("headers", [XHEADERS, {"forwarded"}], ids=["x-forwarded", "forwarded"])
@pytest.mark.parametrize("clear", [True, False])
@pytest.mark.parametrize("count", [1, 2])
def test_untrusted_peer(server, headers, clear, count):
    h = server(**trusted(count, headers, proxy=OTHER, clear_untrusted_proxy_headers=clear))
    env = environ(h, dict(ALL_SIX))
    check(env, h)
    want = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in ALL_SIX.items()} if clear is False \
        else {}
    assert proxy_headers(env) == want


@pytest.mark.parametrize("clear", [True, False])
def test_no_trusted_proxy(server, clear):
    h = server(clear_untrusted_proxy_headers=clear)
    env = environ(h, dict(ALL_SIX))
    check(env, h)
    assert len(proxy_headers(env)) == (0 if clear else 6)


@pytest.mark.parametrize("clear", [True, False])
def test_partly_trusted(server, clear):
    """Only X-Forwarded-For is trusted: it applies, the others go (with clear on)."""
    h = server(**trusted(1, {"x-forwarded-for"}, proxy="*", clear_untrusted_proxy_headers=clear))
    env = environ(h, dict(ALL_SIX))
    check(env, h, REMOTE_ADDR="192.0.2.1", REMOTE_HOST="192.0.2.1")
    kept = set(proxy_headers(env))
    assert kept == ({"HTTP_X_FORWARDED_FOR"} if clear else PROXY_KEYS)


def test_malformed_from_untrusted_peer_is_just_removed(server):
    h = server(**trusted(1, proxy=OTHER))
    env = environ(h, {"X-Forwarded-Proto": "gopher", "X-Forwarded-For": '"'})
    check(env, h)
    assert proxy_headers(env) == {}


def test_trusted_over_unix_socket(tmp_sock_path):
    h = start_server(echo, unix_socket=tmp_sock_path, **trusted(1, proxy="localhost"))
    try:
        resp, _ = exchange(tmp_sock_path, b"GET / HTTP/1.1\r\nHost: a\r\n"
                                          b"X-Forwarded-For: 192.0.2.5\r\n\r\n")
        env = resp.json()
        assert (env["REMOTE_ADDR"], env["REMOTE_HOST"]) == ("192.0.2.5", "192.0.2.5")
    finally:
        h.stop()


def test_keep_alive_after_proxied_requests(server):
    h = server(**trusted(1))
    with Conn(h.addr) as c:
        for i in range(3):
            r = c.request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.%d\r\n\r\n" % i)
            assert r.json()["REMOTE_ADDR"] == f"192.0.2.{i}"
        assert not c.is_closed(0.1)


# -- logging ------------------------------------------------------------------------------------------
def _log_lines(log, needle):
    wait_until(lambda: needle in log.read_text(), 3)
    return [line for line in log.read_text().splitlines() if needle in line]


REMOVED = "Removed untrusted headers ("
RECOMMEND = "). Waitress recommends these be removed upstream."


def _removed_names(line):
    assert line.startswith(f"WARNING:{IMPL}:{REMOVED}") and line.endswith(RECOMMEND), line
    inner = line[len(f"WARNING:{IMPL}:{REMOVED}"):-len(RECOMMEND)]
    return set(inner.split(", "))  # Waitress lists them in set order, which varies


@pytest.mark.parametrize("kw", [
    trusted(1, proxy=OTHER, log_untrusted_proxy_headers=True),
    {"log_untrusted_proxy_headers": True},
], ids=["untrusted-peer", "no-trusted-proxy"])
def test_log_untrusted(tmp_path, kw):
    log = tmp_path / "log.txt"
    h = start_server(echo, log_file=str(log), **kw)
    try:
        environ(h, {"X-Forwarded-For": "192.0.2.1"})
        lines = _log_lines(log, REMOVED)
        assert lines == [f"WARNING:{IMPL}:{REMOVED}X-Forwarded-For{RECOMMEND}"]
        environ(h, dict(ALL_SIX))
        assert wait_until(lambda: len(_log_lines(log, REMOVED)) == 2, 3)
        assert _removed_names(_log_lines(log, REMOVED)[1]) == set(ALL_SIX)
        environ(h, {})  # nothing removed: nothing logged
        environ(h, {"X-Forwarded-For": "192.0.2.1"})
        assert wait_until(lambda: len(_log_lines(log, REMOVED)) == 3, 3)
    finally:
        h.stop()


def test_log_untrusted_partly_trusted_and_clear_off(tmp_path):
    log = tmp_path / "log.txt"
    h = start_server(echo, log_file=str(log),
                     **trusted(1, {"x-forwarded-for", "x-forwarded-proto"}, proxy="*",
                               log_untrusted_proxy_headers=True))
    log2 = tmp_path / "log2.txt"
    h2 = start_server(echo, log_file=str(log2),
                      **trusted(1, proxy=OTHER, log_untrusted_proxy_headers=True,
                                clear_untrusted_proxy_headers=False))
    try:
        environ(h, dict(ALL_SIX))
        lines = _log_lines(log, REMOVED)
        assert len(lines) == 1
        assert _removed_names(lines[0]) == set(ALL_SIX) - {"X-Forwarded-For",
                                                           "X-Forwarded-Proto"}
        env = environ(h2, dict(ALL_SIX))
        assert len(proxy_headers(env)) == 6
        environ(h2, {"X-Forwarded-For": "x"})
        assert REMOVED not in log2.read_text()
    finally:
        h.stop()
        h2.stop()


# -- malformed values -------------------------------------------------------------------------------
MALFORMED = [
    # (trusted headers, request headers, header in the detail, reason, value logged)
    (XHEADERS, {"X-Forwarded-Proto": "https,http"}, "X-Forwarded-Proto",
     "Unspecified behavior for multiple values found in header", "https,http"),
    (XHEADERS, {"X-Forwarded-Proto": "gopher"}, "X-Forwarded-Proto", "unsupported proto value",
     "gopher"),
    (XHEADERS, {"X-Forwarded-Proto": "FTP"}, "X-Forwarded-Proto", "unsupported proto value",
     "ftp"),
    (XHEADERS, {"X-Forwarded-Proto": '"https'}, "X-Forwarded-Proto", "Invalid quoting in value",
     '"https'),
    (XHEADERS, {"X-Forwarded-Port": "443, 80"}, "X-Forwarded-Port",
     "Unspecified behavior for multiple values found in header", "443, 80"),
    (XHEADERS, {"X-Forwarded-Port": '80"'}, "X-Forwarded-Port", "Invalid quoting in value",
     '80"'),
    (XHEADERS, {"X-Forwarded-For": '192.0.2.1, "192.0.2.2'}, "X-Forwarded-For",
     "Invalid quoting in value", '192.0.2.1, "192.0.2.2'),
    (XHEADERS, {"X-Forwarded-Host": '"a"b"'}, "X-Forwarded-Host", "Invalid quoting in value",
     '"a"b"'),
    ({"forwarded"}, {"Forwarded": "for"}, "Forwarded", 'Invalid forwarded-pair missing "="',
     "for"),
    ({"forwarded"}, {"Forwarded": "for =192.0.2.1"}, "Forwarded",
     "Token may not be surrounded by whitespace", "for =192.0.2.1"),
    ({"forwarded"}, {"Forwarded": "for= 192.0.2.1"}, "Forwarded",
     "Value may not be surrounded by whitespace", "for= 192.0.2.1"),
    ({"forwarded"}, {"Forwarded": 'for="192.0.2.1'}, "Forwarded", "Invalid quoting in value",
     'for="192.0.2.1'),
    ({"forwarded"}, {"Forwarded": "for=192.0.2.1;proto=gopher"}, "Forwarded Proto=",
     "unsupported proto value", "gopher"),
    # An untrusted element must still parse.
    ({"forwarded"}, {"Forwarded": "for, for=192.0.2.1"}, "Forwarded",
     'Invalid forwarded-pair missing "="', "for, for=192.0.2.1"),
]


def _check_400(resp, closed, header, version):
    assert (resp.version, resp.status, resp.reason) == (f"HTTP/{version}", 400, "Bad Request")
    # The middleware's error: "server", never the ident, in the tag.
    assert resp.body == error_body("Bad Request", f'Header "{header}" malformed.', None)
    assert resp.header("Content-Type") == "text/plain; charset=utf-8"
    assert resp.header("Content-Length") is None
    assert resp.header("Server") == IDENT
    assert resp.chunked == (version == "1.1")
    assert closed


@pytest.mark.parametrize("headers,sent,header,reason,value", MALFORMED,
                         ids=[f"{m[2]}:{next(iter(m[1].values()))}" for m in MALFORMED])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_malformed(server, headers, sent, header, reason, value, version):
    h = server(**trusted(1, headers))
    resp, closed = request(h, sent, version)
    _check_400(resp, closed, header, version)


def test_malformed_is_logged(tmp_path):
    log = tmp_path / "log.txt"
    h = start_server(echo, log_file=str(log), **trusted(2, {"forwarded"}))
    h2 = start_server(echo, log_file=str(log), **trusted(1))
    try:
        for hh, sent, header, reason, value in [
            (h, {"Forwarded": "for=1.2.3.4;by=x;zzz=1, proto=HTTPX"}, "Forwarded Proto=",
             "unsupported proto value", "httpx"),
            (h2, {"X-Forwarded-Port": "1,2"}, "X-Forwarded-Port",
             "Unspecified behavior for multiple values found in header", "1,2"),
        ]:
            resp, closed = request(hh, sent)
            _check_400(resp, closed, header, "1.1")
            line = (f'WARNING:{IMPL}:Malformed proxy header "{header}" from "{PEER}": '
                    f"{reason} value: {value}")
            assert wait_until(lambda line=line: line in log.read_text().splitlines(), 3), \
                log.read_text()
        assert f"WARNING:{IMPL}:Unknown Forwarded token: zzz" in log.read_text().splitlines()
    finally:
        h.stop()
        h2.stop()


@pytest.mark.parametrize("value", ['" "', '":80"'])
def test_blank_forwarded_client_is_a_500(server, value):
    """A client address that is blank once stripped makes Waitress's middleware raise
    (IndexError): the request gets the app-exception 500."""
    h = server(**trusted(1, {"forwarded"}))
    resp, closed = request(h, {"Forwarded": f"for={value}"})
    assert resp.status == 500
    assert resp.body == error_body("Internal Server Error", ISE_DETAIL, IDENT)
    assert closed


def test_pipelined_request_after_malformed_is_not_served(server):
    h = server(**trusted(1))
    with Conn(h.addr) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: nope\r\n\r\n"
               b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 400
        assert c.read_to_eof() == b""


def test_each_request_on_a_connection_gets_its_own_forwarded_client(server):
    """Several requests on one keep-alive connection, each from another forwarded client: every
    environ has that request's address, and a request without the header has the peer's."""
    h = server(**trusted(headers={"x-forwarded-for"}))
    with Conn(h.addr) as c:
        for fwd in ["192.0.2.1", "198.51.100.2", None, "203.0.113.3", None]:
            extra = f"X-Forwarded-For: {fwd}\r\n" if fwd else ""
            resp = c.request(f"GET /p HTTP/1.1\r\nHost: origin.example\r\n{extra}\r\n".encode())
            assert resp.status == 200
            env = resp.json()
            assert env["REMOTE_ADDR"] == (fwd or PEER)
            assert env["REMOTE_HOST"] == (fwd or PEER)
            assert env.get("HTTP_X_FORWARDED_FOR") == fwd
