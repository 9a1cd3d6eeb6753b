"""Copied into a temp dir by test_api.py and served by ``python -m <impl>`` / ``<impl>-serve``."""


def app(environ, start_response):
    body = b"cli app: " + environ["PATH_INFO"].encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
