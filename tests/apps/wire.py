"""A WSGI app for wire-level tests: echoes what reached it, plus a few misbehaving routes.

``make_app(calls_file)`` appends ``METHOD PATH_INFO`` to ``calls_file`` (if given) on every call,
so a test can tell whether a request reached the application at all.

Routes:
- ``/hop/<Header-Name>``: responds 200 with that (hop-by-hop) header set → the server must 500.
- ``/crlf-status``, ``/crlf-header``: a CR/LF in the status / a header value → 500.
- ``/error``: raises before start_response → 500.
- ``/stream``: a generator response without Content-Length.
- anything else: 200, JSON of the interesting environ keys and the body (latin-1), with CL.
"""

import json

KEYS = (
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_URI",
    "SERVER_PROTOCOL", "SERVER_NAME", "SERVER_PORT", "SERVER_SOFTWARE", "REMOTE_ADDR",
    "CONTENT_LENGTH", "CONTENT_TYPE", "wsgi.url_scheme",
)


def environ_summary(environ, body):
    data = {k: environ[k] for k in KEYS if k in environ}
    for k, v in environ.items():
        if k.startswith("HTTP_"):
            data[k] = v
    data["body"] = body.decode("latin-1")
    return data


def make_app(calls_file=None):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if calls_file:
            with open(calls_file, "a") as f:
                f.write("{} {}\n".format(environ.get("REQUEST_METHOD"), path.encode("unicode_escape")
                                     .decode("ascii")))
        body = environ["wsgi.input"].read()
        if path.startswith("/hop/"):
            start_response("200 OK", [(path[5:], "x"), ("Content-Length", "2")])
            return [b"ok"]
        if path == "/crlf-status":
            start_response("200 OK\r\nX-Injected: 1", [("Content-Length", "2")])
            return [b"ok"]
        if path == "/crlf-header":
            start_response("200 OK", [("X-A", "a\r\nX-Injected: 1"), ("Content-Length", "2")])
            return [b"ok"]
        if path == "/error":
            raise RuntimeError("boom from /error")
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"one,", b"two,", b"three"])
        out = json.dumps(environ_summary(environ, body)).encode("utf-8")
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(out)))])
        return [out]

    return app


app = make_app()
