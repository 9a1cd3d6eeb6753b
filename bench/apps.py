"""WSGI apps for the benchmark scenarios (see run.py). Plain WSGI, no framework, stdlib only.

Every server serves these same callables (``apps:hello`` and so on), with bench/ on sys.path.
"""

import os
import tempfile

HELLO = b"Hello, World!"  # 13 bytes
MIB = 1024 * 1024
BIG = bytes(range(256)) * (MIB // 256)  # 1 MiB, not compressible to a trivial pattern
STREAM_CHUNK = b"x" * (16 * 1024)
STREAM_CHUNKS = 64  # 64 x 16 KiB = 1 MiB, chunked (no Content-Length)

# The 1 MiB file served through wsgi.file_wrapper (and by nginx as the ceiling). run.py creates it
# and passes its path in MAITRE_BENCH_FILE; ensure_file() also makes it when imported alone.
FILE_PATH = os.environ.get("MAITRE_BENCH_FILE") or os.path.join(
    tempfile.gettempdir(), "maitre-bench-1mib.bin")

# The 14 environ keys the `environ` scenario reads (what a small framework looks at).
ENVIRON_KEYS = (
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
    "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR",
    "REMOTE_PORT", "HTTP_HOST", "wsgi.url_scheme", "wsgi.multithread",
)


def ensure_file(path=FILE_PATH):
    """Write the 1 MiB file (atomically) unless it is already there with the right content size."""
    try:
        if os.path.getsize(path) == len(BIG):
            return path
    except OSError:
        pass
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(BIG)
    os.replace(tmp, path)
    return path


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def environ_app(environ, start_response):
    """Reads 14 environ keys and returns them (the cost of building the environ shows here)."""
    get = environ.get
    body = "\n".join([f"{k}={get(k, '')}" for k in ENVIRON_KEYS]).encode("latin-1")
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


def _read_blocks(f, size):
    """Fallback for servers without wsgi.file_wrapper (Granian): a plain block iterator."""
    try:
        while True:
            block = f.read(size)
            if not block:
                return
            yield block
    finally:
        f.close()


def file(environ, start_response):
    f = open(FILE_PATH, "rb")  # noqa: SIM115 - closed by the server through the wrapper
    size = os.fstat(f.fileno()).st_size
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is None:
        return _read_blocks(f, 64 * 1024)
    return wrapper(f, 64 * 1024)


def echo(environ, start_response):
    """Reads the whole request body (64 KiB in the echo64k scenario) and sends it back."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]
