#!/usr/bin/env python3
"""Soak test: N minutes of mixed load against one maitre server (not run in CI).

    .venv/bin/python scripts/soak.py --minutes 10

The server is ``maitre-serve`` in its own process, serving the app below. The load:
- wrk (if installed): keep-alive GET /hello on ``--wrk-connections`` connections;
- ``--clients`` Python client processes, each looping over random scenarios: uploads with
  Content-Length and chunked, big responses with Content-Length and chunked, pipelined bursts,
  keep-alive runs, and deliberate misbehaviour (disconnects mid-response and mid-upload, resets).

Reported: errors (must be 0; a deliberate disconnect is not an error), requests per scenario,
server RSS at start (after a warm-up) and end, and open file descriptors before and after.
Exit status 1 if there were errors, the fds did not return to the start value, or RSS grew more
than ``--max-rss-growth`` percent.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
# The test suite's client, /proc and port helpers (tests/support, on sys.path above).
from support.hostile import rst_close
from support.http import Conn
from support.procstat import fd_count, rss_kb
from support.server import free_port, wait_for_port

APP = r'''
import zlib


def app(environ, start_response):
    path = environ["PATH_INFO"]
    parts = path.strip("/").split("/")
    if parts[0] == "upload":
        data = environ["wsgi.input"].read()
        body = ("%d %d" % (len(data), zlib.crc32(data))).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if parts[0] == "big":
        n = int(parts[1])
        body = (b"0123456789abcdef" * (n // 16 + 1))[:n]
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n))])
        return [body]
    if parts[0] == "chunked":
        n, size = int(parts[1]), int(parts[2])
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def gen():
            for i in range(n):
                yield bytes([97 + i % 26]) * size
        return gen()
    body = b"hello " + path.encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


# -- a client -------------------------------------------------------------------------------------
def connect(addr):
    return Conn(addr, timeout=20)


def response(c):
    """(status, headers, body) of the next response on ``c``; the body de-chunked and framed."""
    r = c.read_response()
    framed = r.chunked or r.header("Content-Length") is not None
    expect(framed, f"response with no framing: {r.raw_head!r}")
    return r.status, r.headers, r.body


def close(c, rst=False):
    if rst:
        rst_close(c.sock)
    else:
        c.close()


def req(path, headers=(), body=b"", method=None):
    method = method or ("POST" if body else "GET")
    lines = [f"{method} {path} HTTP/1.1", "Host: soak"] + [f"{k}: {v}" for k, v in headers]
    if body and not any(k.lower() == "transfer-encoding" for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def big_body(n):
    return (b"0123456789abcdef" * (n // 16 + 1))[:n]


# -- scenarios: each returns the number of requests it completed ---------------------------------
def sc_upload(addr, rng):
    data = rng.randbytes(rng.choice([0, 10, 5000, 100_000, 1_500_000]))
    c = connect(addr)
    try:
        c.send(req("/upload", body=data) if data else req("/upload", method="POST",
                                                                   headers=[("Content-Length", "0")]))
        st, _, body = response(c)
        expect(st == 200 and body == b"%d %d" % (len(data), zlib.crc32(data)), f"upload {st} {body!r}")
    finally:
        close(c)
    return 1


def sc_chunked_upload(addr, rng):
    pieces = [rng.randbytes(rng.randint(1, 40_000)) for _ in range(rng.randint(1, 30))]
    data = b"".join(pieces)
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    c = connect(addr)
    try:
        c.send(req("/upload", headers=[("Transfer-Encoding", "chunked")], method="POST")
                       + wire)
        st, _, body = response(c)
        expect(st == 200 and body == b"%d %d" % (len(data), zlib.crc32(data)), f"chunked up {body!r}")
    finally:
        close(c)
    return 1


def sc_big(addr, rng):
    n = rng.choice([1, 1000, 100_000, 1_000_000, 8_000_000])
    c = connect(addr)
    try:
        c.send(req(f"/big/{n}"))
        st, _, body = response(c)
        expect(st == 200 and body == big_body(n), f"big {n}: {st} len {len(body)}")
    finally:
        close(c)
    return 1


def sc_chunked_response(addr, rng):
    n, size = rng.randint(1, 200), rng.choice([1, 100, 8192, 65536])
    c = connect(addr)
    try:
        c.send(req(f"/chunked/{n}/{size}"))
        st, h, body = response(c)
        want = b"".join(bytes([97 + i % 26]) * size for i in range(n))
        expect(st == 200 and body == want, f"chunked {n}x{size}: {st} len {len(body)} {h}")
    finally:
        close(c)
    return 1


def sc_pipeline(addr, rng):
    n = rng.randint(2, 100)
    c = connect(addr)
    try:
        c.send(b"".join(req(f"/p/{i}") for i in range(n)))
        for i in range(n):
            st, _, body = response(c)
            expect(st == 200 and body == b"hello /p/%d" % i, f"pipeline #{i}: {body!r}")
    finally:
        close(c)
    return n


def sc_keepalive(addr, rng):
    n = rng.randint(10, 200)
    c = connect(addr)
    try:
        for i in range(n):
            c.send(req(f"/k/{i}"))
            st, _, body = response(c)
            expect(st == 200 and body == b"hello /k/%d" % i, f"keep-alive #{i}: {body!r}")
    finally:
        close(c)
    return n


def sc_disconnect(addr, rng):
    """Misbehave: go away mid-response, mid-upload, mid-head, or right after a request."""
    kind = rng.choice(["mid-response", "mid-upload", "mid-head", "after-request", "chunked-mid"])
    c = connect(addr)
    try:
        if kind == "mid-response":
            c.send(req("/big/8000000"))
            want = rng.randint(0, 2_000_000)
            got = 0
            while got < want:
                d = c.sock.recv(65536)
                if not d:
                    break
                got += len(d)
        elif kind == "mid-upload":
            c.send(req("/upload", headers=[("Content-Length", "1000000")], method="POST")
                           + rng.randbytes(rng.randint(0, 500_000)))
        elif kind == "mid-head":
            c.send(b"GET /x HTTP/1.1\r\nHost: soak\r\nX-A: ")
        elif kind == "after-request":
            c.send(req("/chunked/200/65536"))
        else:
            c.send(req("/upload", headers=[("Transfer-Encoding", "chunked")], method="POST")
                           + b"10\r\n0123456789abcdef\r\n")
    finally:
        close(c, rst=rng.random() < 0.5)
    return 0


SCENARIOS = [
    (sc_upload, 3), (sc_chunked_upload, 2), (sc_big, 2), (sc_chunked_response, 2),
    (sc_pipeline, 2), (sc_keepalive, 3), (sc_disconnect, 3),
]


def client_proc(addr, deadline, seed, out_q):
    rng = random.Random(seed)
    funcs = [f for f, w in SCENARIOS for _ in range(w)]
    counts, errors = {}, []
    while time.time() < deadline:
        f = rng.choice(funcs)
        name = f.__name__[3:]
        try:
            n = f(addr, rng)
            c = counts.setdefault(name, [0, 0])
            c[0] += 1
            c[1] += n
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            errors.append(f"{name}: {type(e).__name__}: {e}"[:300])
    out_q.put((counts, errors))


# -- wrk ----------------------------------------------------------------------------------------
def start_wrk(url, seconds, connections):
    wrk = shutil.which("wrk")
    if not wrk:
        return None
    return subprocess.Popen([wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def parse_wrk(text):
    m = re.search(r"(\d+) requests in", text)
    reqs = int(m.group(1)) if m else 0
    errs = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errs += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errs += int(m.group(1))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"99%\s+(\S+)", text)
    return reqs, errs, (rps.group(1) if rps else "?"), (p99.group(1) if p99 else "?")


# -- main ---------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=4, help="server threads")
    ap.add_argument("--clients", type=int, default=4, help="Python client processes")
    ap.add_argument("--wrk-connections", type=int, default=16)
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before the start RSS is taken (default: 10%% of the run, max 60)")
    ap.add_argument("--max-rss-growth", type=float, default=5.0, help="percent")
    args = ap.parse_args(argv)

    seconds = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(60.0, seconds * 0.1)
    tmp = tempfile.mkdtemp(prefix="maitre-soak-")
    with open(os.path.join(tmp, "soak_app.py"), "w") as f:
        f.write(APP)
    port = free_port()
    addr = ("127.0.0.1", port)
    exe = os.path.join(os.path.dirname(sys.executable), "maitre-serve")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "maitre"]
    log = open(os.path.join(tmp, "server.log"), "w+")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(cmd + [f"--listen=127.0.0.1:{port}", f"--threads={args.threads}",
                                     "--connection-limit=1000", "soak_app:app"],
                              cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(*addr, timeout=15)
        except OSError:
            raise SystemExit("server did not start") from None
        time.sleep(0.5)
        pid = server.pid
        fds0, rss_idle = fd_count(pid), rss_kb(pid)
        print(f"soak: {args.minutes:g} min against maitre pid {pid} on {port}; "
              f"{args.clients} client processes, wrk {'yes' if shutil.which('wrk') else 'no'}")
        t_start = time.time()
        end = t_start + seconds
        wrk = start_wrk(f"http://127.0.0.1:{port}/hello", int(seconds), args.wrk_connections)
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        procs = [ctx.Process(target=client_proc, args=(addr, end, 1000 + i, q))
                 for i in range(args.clients)]
        for p in procs:
            p.start()
        time.sleep(warmup)
        rss_start = rss_kb(pid)
        rss_peak = rss_start
        next_report = time.time() + 60
        while time.time() < end:
            time.sleep(min(1.0, max(0.0, end - time.time())))
            rss_peak = max(rss_peak, rss_kb(pid))
            if server.poll() is not None:
                break
            if time.time() >= next_report:
                next_report += 60
                print(f"  {time.time() - t_start:5.0f} s: rss {rss_kb(pid) / 1024:.1f} MB, "
                      f"fds {fd_count(pid)}", flush=True)
        results = []
        for _ in procs:
            try:
                results.append(q.get(timeout=120))
            except Exception:  # noqa: BLE001
                results.append(({}, ["client process did not report"]))
        for p in procs:
            p.join(10)
        wrk_out = ""
        if wrk:
            try:
                wrk_out, _ = wrk.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                wrk.kill()
                wrk_out, _ = wrk.communicate()
        alive = server.poll() is None
        # Let the server close what the clients left behind.
        settle = time.monotonic() + 15
        while alive and fd_count(pid) > fds0 and time.monotonic() < settle:
            time.sleep(0.2)
        fds1 = fd_count(pid) if alive else -1
        rss_end = rss_kb(pid) if alive else 0

        counts, errors = {}, []
        for c, e in results:
            errors += e
            for k, (n, r) in c.items():
                a = counts.setdefault(k, [0, 0])
                a[0] += n
                a[1] += r
        wrk_reqs, wrk_errs, wrk_rps, wrk_p99 = parse_wrk(wrk_out) if wrk else (0, 0, "-", "-")
        total_errors = len(errors) + wrk_errs + (0 if alive else 1)
        growth = (rss_end - rss_start) * 100.0 / rss_start if rss_start else 0.0
        log.seek(0)
        server_log = log.read()
        server_errors = [ln for ln in server_log.splitlines() if "ERROR" in ln or "Traceback" in ln]

        print(f"duration        {time.time() - t_start:.0f} s")
        if wrk:
            print(f"wrk             {wrk_reqs} requests, {wrk_rps} req/s, p99 {wrk_p99}, "
                  f"{wrk_errs} errors")
        for k in sorted(counts):
            print(f"python {k:<17} {counts[k][0]:>7} runs {counts[k][1]:>9} requests")
        print(f"client errors   {len(errors)}")
        for e in errors[:10]:
            print("   ", e)
        print(f"server log      {len(server_errors)} ERROR/Traceback lines")
        for e in server_errors[:5]:
            print("   ", e)
        print(f"errors          {total_errors}" + ("" if alive else " (server died)"))
        print(f"rss             idle {rss_idle / 1024:.1f} MB, start {rss_start / 1024:.1f} MB "
              f"(after {warmup:.0f} s warm-up), peak {rss_peak / 1024:.1f} MB, "
              f"end {rss_end / 1024:.1f} MB, growth {growth:+.1f}%")
        print(f"fds             start {fds0}, end {fds1}")
        ok = total_errors == 0 and fds1 == fds0 and growth <= args.max_rss_growth
        print("result          " + ("PASS" if ok else "FAIL"))
        print(json.dumps({"errors": total_errors, "rss_start_kb": rss_start, "rss_end_kb": rss_end,
                          "rss_growth_pct": round(growth, 2), "fds_start": fds0, "fds_end": fds1,
                          "wrk_requests": wrk_reqs,
                          "python_requests": sum(r for _, r in counts.values())}))
        return 0 if ok else 1
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
