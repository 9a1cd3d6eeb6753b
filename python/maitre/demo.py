"""A small demo WSGI app: `maitre-serve maitre.demo:app` (what `make run` serves)."""

import json


def app(environ, start_response):
    """`/` says hello; `/environ` shows the request as the app sees it; POST echoes the body."""
    path = environ.get("PATH_INFO", "")
    if environ["REQUEST_METHOD"] == "POST":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/environ":
        shown = {k: v for k, v in environ.items() if isinstance(v, str)}
        body = json.dumps(shown, indent=2, sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello from maitre!\n"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"Not Found\n"]
