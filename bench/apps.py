"""WSGI apps for the benchmark scenarios (see run.py). Plain WSGI, no framework."""

HELLO = b"Hello, World!"
BIG = bytes(range(256)) * 1024  # 256 KiB
STREAM_CHUNK = b"x" * 1024
STREAM_CHUNKS = 64


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def environ_app(environ, start_response):
    """Touches every environ key (the cost of building the environ shows up here)."""
    parts = []
    for k in sorted(environ):
        v = environ[k]
        if isinstance(v, str):
            parts.append(f"{k}={v}")
    body = "\n".join(parts).encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def big(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(BIG)))])
    return [BIG]


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def gen():
        for _ in range(STREAM_CHUNKS):
            yield STREAM_CHUNK
    return gen()


def echo(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]
