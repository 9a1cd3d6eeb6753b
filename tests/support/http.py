"""Raw-socket HTTP/1.x client helpers: send bytes, read one full response, detect a close.

Every socket has a timeout (5 s by default) so that no test can hang on a server that never
answers.
"""

from __future__ import annotations

import socket
import time

TIMEOUT = 5.0


class ConnectionClosed(Exception):
    """The peer closed the connection before a complete response was read."""


class NoResponse(Exception):
    """Nothing (or not enough) arrived within the timeout."""


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version  # e.g. "HTTP/1.1"
        self.status = status  # int
        self.reason = reason  # str
        self.headers = headers  # list of (name, value) as sent, in order
        self.body = body  # bytes (de-chunked)
        self.raw_head = raw_head  # bytes of the status line and headers
        self.chunked = False
        self.chunks = []  # raw chunk payloads when chunked

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header_names(self):
        return sorted(k.lower() for k, _ in self.headers)

    def json(self):
        import json

        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return (f"<Response {self.version} {self.status} {self.reason!r} "
                f"headers={self.headers!r} body={self.body[:200]!r}>")


class Conn:
    """One client connection with its own read buffer."""

    def __init__(self, addr, family=None, timeout=TIMEOUT):
        if family is None:
            if isinstance(addr, str):
                family = socket.AF_UNIX
            elif ":" in addr[0]:
                family = socket.AF_INET6
            else:
                family = socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.sock.connect(addr)
        self.buf = b""
        self.eof = False

    # -- plumbing -------------------------------------------------------------------------
    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        if self.eof:
            raise ConnectionClosed("connection closed")
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise NoResponse(f"timed out; received so far: {self.buf[:500]!r}") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise ConnectionClosed(f"connection closed; buffered: {self.buf[:500]!r}")
        self.buf += data

    def read_until(self, delim):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out, self.buf = self.buf[: i + len(delim)], self.buf[i + len(delim):]
                return out
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        while True:
            try:
                self._fill()
            except ConnectionClosed:
                out, self.buf = self.buf, b""
                return out

    def read_available(self, wait=0.5):
        """Whatever arrives within ``wait`` seconds (b"" if nothing), without raising."""
        self.sock.settimeout(wait)
        try:
            while not self.eof:
                data = self.sock.recv(65536)
                if not data:
                    self.eof = True
                    break
                self.buf += data
        except (socket.timeout, ConnectionResetError):
            pass
        finally:
            self.sock.settimeout(self.timeout)
        out, self.buf = self.buf, b""
        return out

    # -- HTTP -----------------------------------------------------------------------------
    def read_response(self, method="GET"):
        head = self.read_until(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status_line = lines[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        version = parts[0]
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        resp = Response(version, status, reason, headers, b"", head)
        if method == "HEAD" or status < 200 or status in (204, 304):
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if "chunked" in te:
            resp.chunked = True
            body = []
            while True:
                size_line = self.read_until(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers until an empty line
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                chunk = self.read_exact(size)
                if self.read_exact(2) != b"\r\n":
                    raise AssertionError("chunk not terminated by CRLF")
                resp.chunks.append(chunk)
                body.append(chunk)
            resp.body = b"".join(body)
        elif cl is not None:
            resp.body = self.read_exact(int(cl))
        else:
            resp.body = self.read_to_eof()
        return resp

    def request(self, data, method=None):
        """Send raw bytes and read one response (skipping nothing)."""
        self.send(data)
        if method is None:
            method = data.split(b" ", 1)[0].decode("latin-1").strip()
        return self.read_response(method=method)

    def is_closed(self, wait=1.0):
        """True if the server closed the connection (EOF or RST) within ``wait`` seconds.

        Data that arrives instead is kept in the buffer and means "not closed".
        """
        if self.buf:
            return False
        if self.eof:
            return True
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
            if not data:
                self.eof = True
                return True
            self.buf += data
            return False
        except socket.timeout:
            return False
        except ConnectionResetError:
            self.eof = True
            return True
        finally:
            self.sock.settimeout(self.timeout)


def exchange(addr, data, method=None, timeout=TIMEOUT, close_wait=1.0):
    """Open a connection, send ``data``, read one response; return (response, closed)."""
    with Conn(addr, timeout=timeout) as c:
        resp = c.request(data, method=method)
        closed = c.is_closed(close_wait)
        return resp, closed


def request_bytes(path, body=None):
    """An HTTP/1.1 request for ``path``: a GET, or a POST of ``body`` with its Content-Length."""
    if body is None:
        return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def get(addr, path="/", headers=(), version="1.1", timeout=TIMEOUT):
    lines = [f"GET {path} HTTP/{version}", "Host: localhost"]
    lines += ["{}: {}".format(*kv) for kv in headers]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    resp, _ = exchange(addr, data, timeout=timeout, close_wait=0.01)
    return resp


def error_body(reason, detail, ident):
    """The exact error body Waitress (and maitre) produce."""
    return ("{}\r\n\r\n{}\r\n\r\n(generated by {})".format(reason, detail, ident or "server")).encode(
        "utf-8")


def wait_until(pred, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()
