#!/usr/bin/env python3
"""Throughput benchmark: maitre side by side with the other WSGI servers, measured with wrk.

`make bench` runs this with the project's .venv (where maitre is built in release mode). It:

1. installs what it needs: wrk, nginx and libev-dev from Debian (apt-get, only if missing), and
   the peers into their own venv, bench/.venv (Waitress 3.0.2, gunicorn, Granian, bjoern,
   pyruvate, meinheld, cheroot, and matplotlib for the chart). A peer that does not install is
   recorded as "did not install" with the reason, and the run goes on without it;
2. for each repeat, scenario and server: starts the server pinned to CPU 0 (taskset -c 0) on
   127.0.0.1 (first, for hello_close, waiting for wrk's TIME_WAIT sockets from earlier servers
   to drain), checks one response, runs wrk pinned to CPU 1 (warm-up, then the measured period)
   while sampling the RSS and CPU of the server's whole process tree from /proc, checks one
   response again, and stops the server;
3. writes every run as a JSON line to bench/results/<timestamp>.jsonl, prints a table, and
   (for a full run) regenerates docs/benchmarks.md and docs/bench.png.

    .venv/bin/python bench/run.py                        # everything (about 25 minutes)
    .venv/bin/python bench/run.py --smoke                # maitre, hello, 1 s (what the tests run)
    .venv/bin/python bench/run.py --servers maitre,bjoern --scenarios hello,c1000 --repeat 3
    .venv/bin/python bench/run.py --report bench/results/X.jsonl   # rewrite the docs from a run

Adding a peer: an entry in SERVERS (and in PEERS if it is installed from PyPI).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
LUA = os.path.join(HERE, "pipeline.lua")
NGINX_CONF = os.path.join(HERE, "nginx.conf")
PEER_VENV = os.path.join(HERE, ".venv")
PEER_PY = os.path.join(PEER_VENV, "bin", "python")
PROJECT_PY = (os.path.join(ROOT, ".venv", "bin", "python")
              if os.path.exists(os.path.join(ROOT, ".venv", "bin", "python")) else sys.executable)
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
CHART = os.path.join(ROOT, "docs", "bench.png")
sys.path.insert(0, HERE)

import apps  # needs HERE on sys.path

REFERENCE = "maitre"  # ratios are this server's req/s divided by each other server's
CEILING = "nginx"  # not a WSGI server: shown, but not a "peer" in the targets

# -- peers installed into bench/.venv --------------------------------------------------------------
# name -> pip requirement, the module to import, and the distribution whose version is reported.
# Pinned so that two runs measure the same code; bump the pins on purpose.
PEERS = {
    "waitress": {"req": "waitress==3.0.2", "module": "waitress"},
    "gunicorn": {"req": "gunicorn==27.0.1", "module": "gunicorn"},
    "granian": {"req": "granian==2.8.7", "module": "granian"},
    "bjoern": {"req": "bjoern==3.2.2", "module": "bjoern"},  # builds against libev-dev
    "pyruvate": {"req": "pyruvate==1.6.1", "module": "pyruvate"},
    # meinheld pins greenlet<0.5, which does not build on Python >= 3.10; if the plain install
    # fails it is retried with --no-deps on top of a current greenlet (it runs fine on it).
    "meinheld": {"req": "meinheld==1.0.2", "module": "meinheld.server", "nodeps_with": "greenlet"},
    "cheroot": {"req": "cheroot==11.1.2", "module": "cheroot.wsgi"},
    "matplotlib": {"req": "matplotlib==3.11.2", "module": "matplotlib"},
}
APT_PACKAGES = {"wrk": "/usr/bin/wrk", "nginx": "/usr/sbin/nginx", "libev-dev": "/usr/include/ev.h"}


# -- servers -------------------------------------------------------------------------------------
# Each server: "python" ("project" = the project's .venv, "peer" = bench/.venv, None = not Python),
# "module" (must import there), "dist" (for its version), "threads" (what it runs the app with,
# for the doc), and "cmd" (ctx) -> argv, where ctx has port, app ("apps:hello"), threads,
# scenario and python. All are started with cwd=bench/ so that `apps` imports.
def _waitress_cmd(module):
    def cmd(c):
        argv = [c["python"], "-m", module, "--listen=127.0.0.1:{}".format(c["port"]),
                "--threads={}".format(c["threads"])]
        if c["scenario"] == "c1000":
            argv.append("--connection-limit=2000")  # the default (100) would queue 900 of them
        return argv + [c["app"]]
    return cmd


def _gunicorn_cmd(worker):
    def cmd(c):
        argv = [c["python"], "-m", "gunicorn", "--bind", "127.0.0.1:{}".format(c["port"]),
                "--workers", "1", "--worker-class", worker, "--log-level", "warning"]
        if worker == "gthread":
            argv += ["--threads", str(c["threads"])]
        return argv + [c["app"]]
    return cmd


def _granian_cmd(c):
    return [c["python"], "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
            "--port", str(c["port"]), "--workers", "1", "--blocking-threads", str(c["threads"]),
            "--http", "1", "--no-ws", "--log-level", "warning", c["app"]]


def _peer_launcher(name):
    def cmd(c):
        return [c["python"], os.path.join(HERE, "serve_peer.py"), name, str(c["port"]),
                c["app"], str(c["threads"])]
    return cmd


def _nginx_cmd(c):
    return [c["nginx"], "-p", c["prefix"], "-e", os.path.join(c["prefix"], "error.log"),
            "-c", os.path.join(c["prefix"], "nginx.conf")]


SERVERS = {
    "maitre": {"python": "project", "module": "maitre", "dist": "maitre", "threads": 4,
               "cmd": _waitress_cmd("maitre"), "label": "maitre (threads=4)"},
    "waitress": {"python": "peer", "module": "waitress", "dist": "waitress", "threads": 4,
                 "cmd": _waitress_cmd("waitress"), "label": "Waitress (--threads=4)"},
    "gunicorn-sync": {"python": "peer", "module": "gunicorn", "dist": "gunicorn", "threads": 1,
                      "cmd": _gunicorn_cmd("sync"), "label": "gunicorn sync, 1 worker"},
    "gunicorn-gthread": {"python": "peer", "module": "gunicorn", "dist": "gunicorn",
                         "threads": 4, "cmd": _gunicorn_cmd("gthread"),
                         "label": "gunicorn gthread, 1 worker, --threads 4"},
    "granian": {"python": "peer", "module": "granian", "dist": "granian", "threads": 4,
                "cmd": _granian_cmd,
                "label": "Granian WSGI, 1 worker, --blocking-threads 4"},
    "bjoern": {"python": "peer", "module": "bjoern", "dist": "bjoern", "threads": 1,
               "cmd": _peer_launcher("bjoern"), "label": "bjoern (single-threaded)"},
    "pyruvate": {"python": "peer", "module": "pyruvate", "dist": "pyruvate", "threads": 4,
                 "cmd": _peer_launcher("pyruvate"),
                 "label": "pyruvate, 4 worker threads, its defaults (no keep-alive)"},
    "meinheld": {"python": "peer", "module": "meinheld.server", "dist": "meinheld", "threads": 1,
                 "cmd": _peer_launcher("meinheld"),
                 "label": "meinheld (single-threaded, keep-alive on)"},
    "cheroot": {"python": "peer", "module": "cheroot.wsgi", "dist": "cheroot", "threads": 4,
                "cmd": _peer_launcher("cheroot"), "label": "cheroot, numthreads=4"},
    "nginx": {"python": None, "dist": "nginx", "threads": 1, "cmd": _nginx_cmd,
              "label": "nginx, 1 worker, static (no Python)"},
}
# What a reader needs to know to read a server's numbers (shown when the server took part).
NOTES = {
    "maitre": "maitre and Waitress get `--connection-limit=2000` in `c1000` only (the default, "
              "100, would leave 900 of the 1000 connections waiting in the backlog).",
    "gunicorn-sync": "gunicorn's sync worker closes the connection after every response (no "
                     "keep-alive, by design), so in `pipelined` only the first response of a "
                     "batch comes back before wrk reconnects: no batch completes, hence no "
                     "latency.",
    "granian": "Granian has no `wsgi.file_wrapper`, so in `file` the app returns a 64 KiB block "
               "iterator instead. `--http 1` skips its HTTP/2 detection (the scenarios are "
               "HTTP/1.1).",
    "bjoern": "bjoern answers only the first of several pipelined requests on a connection and "
              "ignores the rest, so `pipelined` stalls after one response per connection.",
    "pyruvate": "pyruvate runs with its defaults: no keep-alive and no chunked encoding. In "
                "1.6.1 a kept-alive connection (`max_reuse_count` > 0) never gets an answer to "
                "its second request, and `chunked_transfer=True` appends a chunk terminator to "
                "responses that have a Content-Length, so neither can be measured. Its `stream` "
                "responses are therefore ended by closing the connection, which wrk counts as a "
                "read error for every response, and in `pipelined` no batch completes (no "
                "latency).",
    "meinheld": "meinheld runs with keep-alive on (`set_keepalive(30)`; its default is off) and "
                "no access log.",
    "cheroot": "cheroot runs `cheroot.wsgi.Server(..., numthreads=4)`.",
}


# -- scenarios -----------------------------------------------------------------------------------
def _check_exact(body):
    def check(status, headers, data):
        assert status == 200, f"status {status}"
        assert data == body, f"body {data[:80]!r}... ({len(data)} bytes, want {len(body)})"
        assert int(headers.get("content-length", -1)) == len(body), f"headers {headers}"
    return check


def _check_environ(status, headers, data):
    assert status == 200, f"status {status}"
    assert b"REQUEST_METHOD=GET" in data and b"PATH_INFO=/\n" in data, data[:200]
    assert data.count(b"\n") == len(apps.ENVIRON_KEYS) - 1, data[:400]


def _check_stream(status, headers, data):
    assert status == 200, f"status {status}"
    assert data == apps.STREAM_CHUNK * apps.STREAM_CHUNKS, f"{len(data)} bytes"


ECHO_SIZE = 64 * 1024
HELLO_CHECK = _check_exact(apps.HELLO)


def _scenario(app, text, check=HELLO_CHECK, conns=32, depth=1, method="GET", body=0, close=False,
              nginx=None):
    """app, wrk connections, pipeline depth, method, request body size, `Connection: close`,
    the check of one response, nginx's path (None: nginx does not take part), the doc text."""
    return {"app": app, "text": text, "check": check, "conns": conns, "depth": depth,
            "method": method, "body": body, "close": close, "nginx": nginx}


SCENARIOS = {
    "hello": _scenario(
        "apps:hello", "13-byte body with Content-Length, keep-alive, 32 connections", nginx="/"),
    "hello_close": _scenario(
        "apps:hello", "`hello` with `Connection: close` on every request (a new TCP connection "
        "per request), 32 connections", close=True, nginx="/"),
    "environ": _scenario(
        "apps:environ_app", "an app that reads 14 environ keys and returns them, 32 connections",
        check=_check_environ),
    "big": _scenario(
        "apps:big", "1 MiB body from a one-item list, with Content-Length, 32 connections "
        "(nginx: the same 1 MiB as a static file)", check=_check_exact(apps.BIG), nginx="/file"),
    "stream": _scenario(
        "apps:stream", "64 chunks of 16 KiB from a generator, no Content-Length (chunked), "
        "32 connections", check=_check_stream),
    "file": _scenario(
        "apps:file", "a 1 MiB file through `wsgi.file_wrapper` (a 64 KiB block iterator where the "
        "server has no file_wrapper: Granian), 32 connections (nginx: sendfile)",
        check=_check_exact(apps.BIG), nginx="/file"),
    "echo64k": _scenario(
        "apps:echo", "a 64 KiB POST body read fully by the app and sent back, 32 connections",
        check=_check_exact(b"x" * ECHO_SIZE), method="POST", body=ECHO_SIZE),
    "pipelined": _scenario(
        "apps:hello", "`hello` with 16 requests pipelined per connection (one write of 16 "
        "requests, then 16 responses), 32 connections", depth=16, nginx="/"),
    "c1000": _scenario(
        "apps:hello", "`hello` with 1000 concurrent keep-alive connections (maitre and Waitress "
        "get `connection_limit=2000`: their default of 100 would hold the other 900 in the "
        "backlog)", conns=1000, nginx="/"),
}


# -- machine and tools ---------------------------------------------------------------------------
def log(msg=""):
    print(msg, flush=True)


def can_pin():
    return bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2


def pin(cpu, enabled=True):
    """A taskset prefix pinning to ``cpu``, or [] if pinning is off or impossible here."""
    return ["taskset", "-c", str(cpu)] if enabled and can_pin() else []


def raise_nofile():
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    for new_hard in (max(hard, want), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, new_hard), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_quiet(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
                          **kw)


def ensure_apt(need):
    """apt-get install what is missing of ``need`` (names of APT_PACKAGES), with one update."""
    missing = [p for p in need if not os.path.exists(APT_PACKAGES[p])]
    if not missing:
        return []
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None or not shutil.which("apt-get"):
        log(f"cannot install {', '.join(missing)} (no apt-get or not root)")
        return missing
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"apt-get install {' '.join(missing)}")
    run_quiet(sudo + ["apt-get", "update", "-q"], env=env)
    r = run_quiet(sudo + ["apt-get", "install", "-y", "-q"] + missing, env=env)
    if r.returncode != 0:
        log(r.stdout.decode("utf-8", "replace")[-2000:])
    return [p for p in missing if not os.path.exists(APT_PACKAGES[p])]


def _last_error_line(text):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.search(r"error|Error|ERROR|No matching|not supported|failed", ln) and \
                not ln.startswith("note:"):
            return ln[:300]
    return lines[-1][:300] if lines else "unknown error"


def _importable(python, module):
    return run_quiet([python, "-c", f"import {module}"]).returncode == 0


def ensure_peers(names):
    """Create bench/.venv and install the peers; returns {name: {"ok", "reason", "note"}}."""
    status = {}
    if not os.path.exists(PEER_PY):
        log(f"creating {os.path.relpath(PEER_VENV, ROOT)}")
        base = getattr(sys, "_base_executable", None) or sys.executable
        r = run_quiet([base, "-m", "venv", PEER_VENV])
        if r.returncode != 0:
            reason = "could not create bench/.venv: " + _last_error_line(r.stdout.decode())
            return {n: {"ok": False, "reason": reason} for n in names}
        run_quiet([PEER_PY, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    freeze = run_quiet([PEER_PY, "-m", "pip", "freeze"]).stdout.decode().lower().split()
    for name in names:
        spec = PEERS[name]
        if spec["req"].lower() in freeze and _importable(PEER_PY, spec["module"]):
            status[name] = {"ok": True}
            continue
        log(f"pip install {spec['req']} (into bench/.venv)")
        r = run_quiet([PEER_PY, "-m", "pip", "install", "-q", spec["req"]], timeout=1200)
        note = None
        if r.returncode != 0 and spec.get("nodeps_with"):
            first = _last_error_line(r.stdout.decode("utf-8", "replace"))
            log(f"  failed ({first}); retrying with --no-deps and a current "
                f"{spec['nodeps_with']}")
            r = run_quiet([PEER_PY, "-m", "pip", "install", "-q", spec["nodeps_with"]])
            if r.returncode == 0:
                r = run_quiet([PEER_PY, "-m", "pip", "install", "-q", "--no-deps",
                               spec["req"]], timeout=1200)
            note = (f"installed with --no-deps on a current {spec['nodeps_with']}: the plain "
                    f"install fails ({first})")
        if r.returncode == 0 and _importable(PEER_PY, spec["module"]):
            status[name] = {"ok": True}
            if note:
                status[name]["note"] = note
        else:
            out = r.stdout.decode("utf-8", "replace")
            if r.returncode == 0:
                out = run_quiet([PEER_PY, "-c", f"import {spec['module']}"]).stdout.decode()
            status[name] = {"ok": False, "reason": _last_error_line(out)}
            log(f"  did not install: {status[name]['reason']}")
    if "meinheld" in status and status["meinheld"].get("ok") and "note" not in status["meinheld"]:
        # Installed earlier by the fallback: say so again (greenlet's version tells).
        v = dist_versions(PEER_PY, ["greenlet"]).get("greenlet")
        if v and not v.startswith("0."):
            status["meinheld"]["note"] = (f"installed with --no-deps on greenlet {v}: its pin "
                                          "greenlet<0.5 does not build on this Python")
    return status


def dist_versions(python, dists):
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for d in sys.argv[1:]:\n"
            "    try: out[d] = m.version(d)\n"
            "    except Exception: pass\n"
            "print(json.dumps(out))")
    r = run_quiet([python, "-c", code] + list(dists))
    try:
        return json.loads(r.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


def tool_version(cmd, pattern):
    try:
        out = run_quiet(cmd).stdout.decode("utf-8", "replace")
    except OSError:
        return None
    m = re.search(pattern, out)
    return m.group(1) if m else None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def loadavg():
    text = read_text("/proc/loadavg")
    return " ".join(text.split()[:3]) if text else "?"


def git_describe():
    r = run_quiet(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    if r.returncode != 0:
        return None
    commit = r.stdout.decode().strip()
    dirty = run_quiet(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "python",
                       "Cargo.toml", "Cargo.lock"]).stdout.strip()
    return commit + ("+uncommitted changes" if dirty else "")


def snapshot_maitre(dest):
    """Copy the maitre package (with its built extension) to ``dest``, so that a rebuild during
    the run cannot change what is measured. Returns (path to put first on PYTHONPATH, info)."""
    r = run_quiet([PROJECT_PY, "-c",
                   "import maitre, maitre._core, os; print(os.path.dirname(maitre.__file__))"])
    if r.returncode != 0:
        return None, {"error": _last_error_line(r.stdout.decode("utf-8", "replace"))}
    src = r.stdout.decode().strip().splitlines()[-1]
    shutil.copytree(src, os.path.join(dest, "maitre"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = {"source": os.path.relpath(src, ROOT) if src.startswith(ROOT) else src}
    for fn in os.listdir(src):
        if fn.startswith("_core") and fn.endswith(".so"):
            path = os.path.join(src, fn)
            with open(path, "rb") as f:
                info["core_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
            info["core_mtime"] = time.strftime("%Y-%m-%d %H:%M:%S",
                                               time.localtime(os.path.getmtime(path)))
            newest = 0.0
            for top in ("src", "Cargo.toml"):
                p = os.path.join(ROOT, top)
                for dirpath, _, files in os.walk(p) if os.path.isdir(p) else [("", [], [p])]:
                    for name in files:
                        try:
                            newest = max(newest, os.path.getmtime(os.path.join(dirpath, name)))
                        except OSError:
                            pass
            info["stale"] = newest > os.path.getmtime(path)
    return dest, info


# -- one run -------------------------------------------------------------------------------------
# A connection closed by the client first leaves a TIME_WAIT socket on the client's side (60 s on
# Linux), which makes the client's later connect() calls search longer for a free port. Servers
# that let wrk close first (Waitress does) would so slow down the next server's hello_close. Before
# a connection-per-request scenario the driver waits (at most TIME_WAIT_MAX_S) until fewer than
# TIME_WAIT_MAX client-side TIME_WAIT sockets towards the earlier servers are left.
TIME_WAIT_MAX = 1000
TIME_WAIT_MAX_S = 65.0


def client_time_wait(ports):
    """TIME_WAIT sockets whose remote port is one of `ports` (the client side of connections to
    the benchmarked servers), from /proc/net/tcp and tcp6."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = read_text(path) or ""
        for line in text.splitlines()[1:]:
            parts = line.split(None, 4)
            if len(parts) > 3 and parts[3] == "06":
                try:
                    remote_port = int(parts[2].rsplit(":", 1)[1], 16)
                except (IndexError, ValueError):
                    continue
                n += remote_port in ports
    return n


def wait_time_wait(ports):
    """Waits for the client-side TIME_WAIT sockets to drain; returns (count at start, seconds)."""
    t0 = time.monotonic()
    first = n = client_time_wait(ports)
    while n >= TIME_WAIT_MAX and time.monotonic() - t0 < TIME_WAIT_MAX_S:
        time.sleep(1.0)
        n = client_time_wait(ports)
    return first, round(time.monotonic() - t0, 1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {timeout:.0f} s")


def fetch(port, scenario, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Connection": "close"} if scenario["close"] else {}
        body = None
        if scenario["method"] == "POST":
            body = b"x" * scenario["body"]
            headers["Content-Type"] = "application/octet-stream"
        conn.request(scenario["method"], path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def session_pids(sid):
    """Every process whose session is ``sid`` (the server and its workers: each server is
    started in a new session)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields after ")": state ppid pgrp session ...
            pids.append(int(name))
    return pids


def tree_cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss_mib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total / 1024.0


def cpu_times(cpus=(0, 1)):
    """{cpu: (busy, total)} jiffies from /proc/stat, to see what else ran on the CPUs."""
    out = {}
    text = read_text("/proc/stat") or ""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("cpu") and parts[0][3:].isdigit():
            cpu = int(parts[0][3:])
            if cpu in cpus:
                v = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
                idle = v[3] + v[4]
                out[cpu] = (sum(v) - idle, sum(v))
    return out


def busy_pct(t0, t1, cpu):
    if cpu not in t0 or cpu not in t1 or t1[cpu][1] <= t0[cpu][1]:
        return None
    return 100.0 * (t1[cpu][0] - t0[cpu][0]) / (t1[cpu][1] - t0[cpu][1])


class Sampler(threading.Thread):
    """Samples the summed RSS of the server's process tree every ``interval`` seconds."""

    def __init__(self, sid, interval=0.2):
        super().__init__(daemon=True)
        self.sid, self.interval = sid, interval
        self.stop_evt = threading.Event()
        self.peak = 0.0
        self.pids = session_pids(sid)

    def run(self):
        n = 0
        while not self.stop_evt.is_set():
            if n % 10 == 9:
                self.pids = session_pids(self.sid)
            self.peak = max(self.peak, tree_rss_mib(self.pids))
            n += 1
            self.stop_evt.wait(self.interval)

    def stop(self):
        self.stop_evt.set()
        self.join(5)
        self.peak = max(self.peak, tree_rss_mib(self.pids))


def run_wrk(ctx, port, path, scenario, seconds):
    cmd = pin(1, ctx["pin"]) + [
        ctx["wrk"], "-t1", "-c{}".format(scenario["conns"]), f"-d{seconds}s",
        "--timeout", "5s", "-s", LUA, f"http://127.0.0.1:{port}{path}"]
    env = dict(os.environ, BENCH_DEPTH=str(scenario["depth"]), BENCH_METHOD=scenario["method"],
               BENCH_BODY=str(scenario["body"]), BENCH_CLOSE="1" if scenario["close"] else "0",
               BENCH_CONNECTIONS=str(scenario["conns"]))
    ru0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    r = run_quiet(cmd, timeout=seconds + 60, env=env)
    ru1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - t0
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"^WRK_JSON (\{.*\})$", out, re.MULTILINE)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed (rc={r.returncode}): {out.strip()[-500:]}")
    w = json.loads(m.group(1))
    # wrk's own CPU (it is the only child that exits meanwhile): near 100% means the client,
    # not the server, set the pace.
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    w["cpu_pct"] = round(100.0 * cpu / wall, 1) if wall else None
    return w


def stop_server(proc):
    """SIGTERM to the server's process group (the session it leads), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no worker of it is left either.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def server_argv(ctx, server, scenario_name, port, prefix):
    spec, scen = SERVERS[server], SCENARIOS[scenario_name]
    c = {"port": port, "app": scen["app"], "threads": spec["threads"], "scenario": scenario_name,
         "python": ctx["python"].get(server), "nginx": ctx.get("nginx"), "prefix": prefix}
    return spec["cmd"](c)


def nginx_prefix(port, file_path):
    prefix = tempfile.mkdtemp(prefix="maitre-bench-nginx-")
    os.makedirs(os.path.join(prefix, "tmp"))
    with open(NGINX_CONF) as f:
        conf = f.read().replace("@PORT@", str(port)).replace("@FILE@", file_path)
    with open(os.path.join(prefix, "nginx.conf"), "w") as f:
        f.write(conf)
    return prefix


def _ms(us):
    return None if us is None or us < 0 else us / 1000.0


def bench_one(ctx, server, sname, rep, args):
    scen = SCENARIOS[sname]
    tw_wait = None
    if scen["close"] and ctx["ports"]:
        tw_wait = wait_time_wait(ctx["ports"])
        if tw_wait[1] >= 1:
            log(f"  waited {tw_wait[1]:.0f} s for {tw_wait[0]} client-side TIME_WAIT sockets")
    port = free_port()
    ctx["ports"].add(port)
    prefix = nginx_prefix(port, ctx["file"]) if server == "nginx" else None
    path = scen["nginx"] if server == "nginx" else "/"
    argv = pin(0, ctx["pin"]) + server_argv(ctx, server, sname, port, prefix)
    env = dict(os.environ, MAITRE_BENCH_FILE=ctx["file"], PYTHONDONTWRITEBYTECODE="1")
    pypath = [HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    if server == REFERENCE and ctx.get("maitre_path"):
        pypath.insert(0, ctx["maitre_path"])
    env["PYTHONPATH"] = os.pathsep.join(pypath)
    log_path = os.path.join(ctx["logdir"], f"{server}-{sname}-{rep}.log")
    result = {
        "kind": "result", "run": ctx["stamp"], "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "server": server, "scenario": sname, "repeat": rep, "duration_s": args.duration,
        "warmup_s": args.warmup, "connections": scen["conns"], "pipeline_depth": scen["depth"],
        "server_threads": SERVERS[server]["threads"], "smoke": args.smoke, "pinned": ctx["pin"],
    }
    if tw_wait is not None:
        result["client_time_wait_before"], result["time_wait_waited_s"] = tw_wait
    sampler = None
    with open(log_path, "wb") as logf:
        logf.write(("$ " + shlex.join(argv) + "\n").encode())
        logf.flush()
        proc = subprocess.Popen(argv, cwd=HERE, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_port(port, proc)
            scen["check"](*fetch(port, scen, path))
            sampler = Sampler(proc.pid)
            sampler.start()
            if args.warmup > 0:
                run_wrk(ctx, port, path, scen, args.warmup)
            pids = session_pids(proc.pid)
            cpu0, t0, busy0 = tree_cpu_seconds(pids), time.monotonic(), cpu_times()
            w = run_wrk(ctx, port, path, scen, args.duration)
            cpu, wall = tree_cpu_seconds(pids) - cpu0, time.monotonic() - t0
            busy1 = cpu_times()
            sampler.stop()
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode} during the run")
            scen["check"](*fetch(port, scen, path))  # still correct after the load
        except Exception as exc:  # noqa: BLE001 - record the failure and go on
            msg = str(exc) or type(exc).__name__
            result["error"] = f"{type(exc).__name__}: {msg}"[:600]
            return result
        finally:
            if sampler is not None and sampler.is_alive():
                sampler.stop()
            stop_server(proc)
            if prefix:
                shutil.rmtree(prefix, ignore_errors=True)
    secs = w["duration_us"] / 1e6
    e = w["errors"]
    socket_errors = e["connect"] + e["read"] + e["write"] + e["timeout"]
    result.update({
        "requests": w["requests"], "rps": w["requests"] / secs if secs else 0.0,
        "mb_per_s": w["bytes"] / secs / 1e6 if secs else 0.0,
        "p50_ms": _ms(w["latency_us"]["p50"]), "p90_ms": _ms(w["latency_us"]["p90"]),
        "p99_ms": _ms(w["latency_us"]["p99"]), "max_ms": _ms(w["latency_us"]["max"]),
        "latency_co_corrected": bool(w["latency_us"].get("co_corrected")),
        "socket_errors": socket_errors, "non2xx": e["status"],
        "errors": socket_errors + e["status"], "error_detail": e,
        "rss_peak_mib": round(sampler.peak, 1),
        "cpu_pct": round(100.0 * cpu / wall, 1) if wall else None,
        "wrk_cpu_pct": w.get("cpu_pct"),
    })
    # What else ran on the server's CPU meanwhile (the machine is shared): CPU 0's busy time
    # less the server's own. Only meaningful when pinned.
    b0, b1 = busy_pct(busy0, busy1, 0), busy_pct(busy0, busy1, 1)
    result["cpu0_busy_pct"] = None if b0 is None else round(b0, 1)
    result["cpu1_busy_pct"] = None if b1 is None else round(b1, 1)
    if ctx["pin"] and b0 is not None and result["cpu_pct"] is not None:
        result["cpu0_others_pct"] = round(max(0.0, b0 - result["cpu_pct"]), 1)
    return result


# -- summaries -----------------------------------------------------------------------------------
def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(results):
    """(scenario, server) -> medians over the repeats that ran, plus the failures."""
    cells = {}
    for r in results:
        cells.setdefault((r["scenario"], r["server"]), []).append(r)
    out = {}
    for key, rs in cells.items():
        ok = [r for r in rs if "error" not in r]
        s = {"runs": len(rs), "ok": len(ok), "failures": [r["error"] for r in rs if "error" in r]}
        if ok:
            s.update({
                "rps": statistics.median(r["rps"] for r in ok),
                "rps_all": [round(r["rps"]) for r in ok],
                "p50_ms": _median([r["p50_ms"] for r in ok]),
                "p99_ms": _median([r["p99_ms"] for r in ok]),
                "socket_errors": sum(r["socket_errors"] for r in ok),
                "non2xx": sum(r["non2xx"] for r in ok),
                "errors": sum(r["errors"] for r in ok),
                "rss_peak_mib": max(r["rss_peak_mib"] for r in ok),
                "cpu_pct": _median([r["cpu_pct"] for r in ok]),
                "others_pct": _median([r.get("cpu0_others_pct") for r in ok]),
                "wrk_cpu_pct": _median([r.get("wrk_cpu_pct") for r in ok]),
            })
        out[key] = s
    return out


def print_table(summary, scenarios, servers):
    hdr = "{:<12} {:<17} {:>10} {:>8} {:>8} {:>8} {:>8} {:>6}  {}".format(
        "scenario", "server", "req/s", "p50 ms", "p99 ms", "errors", "RSS MiB", "CPU%",
        f"{REFERENCE}/server")
    log()
    log(hdr)
    log("-" * len(hdr))
    for sname in scenarios:
        ref = summary.get((sname, REFERENCE), {}).get("rps")
        for server in servers:
            s = summary.get((sname, server))
            if not s:
                continue
            if "rps" not in s:
                log("{:<12} {:<17} FAILED: {}".format(sname, server, s["failures"][-1][:120]))
                continue
            ratio = "%.2fx" % (ref / s["rps"]) if ref and s["rps"] and server != REFERENCE else ""
            log("{:<12} {:<17} {:>10.0f} {:>8} {:>8} {:>8d} {:>8.1f} {:>6}  {}".format(
                sname, server, s["rps"], _fmt_ms(s["p50_ms"]), _fmt_ms(s["p99_ms"]), s["errors"],
                s["rss_peak_mib"], "-" if s["cpu_pct"] is None else f"{s['cpu_pct']:.0f}",
                ratio))
    log()


# -- the report (docs/benchmarks.md and docs/bench.png) --------------------------------------------
def _fmt_int(x):
    return f"{x:,.0f}"


def _fmt_ms(x):
    if x is None:
        return "—"
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _ratio(ref, other):
    if not ref or not other:
        return "—"
    return f"{ref / other:.2f}×"


def targets(summary, servers):
    """The issue's targets, as (target, value, met) rows; None where a cell is missing."""
    rows = []

    def rps(sc, sv):
        return summary.get((sc, sv), {}).get("rps")

    def bound(sc, v):
        """Say so when wrk, on its one core, was the limit of maitre's cell."""
        w = summary.get((sc, REFERENCE), {}).get("wrk_cpu_pct")
        return f"{v} (wrk at {w:.0f}% CPU)" if w is not None and w >= 95 else v

    for sc in ("hello", "environ"):
        ref = rps(sc, REFERENCE)
        for peer, want in (("bjoern", 1.0), ("granian", 2.0), ("waitress", 10.0)):
            other = rps(sc, peer)
            if ref and other:
                rows.append((f"`{sc}`: ≥ {want:g}× {peer}", bound(sc, f"{ref / other:.2f}×"),
                             ref / other >= want))
        p99, bp99 = (summary.get((sc, s), {}).get("p99_ms") for s in (REFERENCE, "bjoern"))
        if p99 is not None and bp99 is not None:
            rows.append((f"`{sc}`: p99 ≤ bjoern's", f"{p99:.3f} ms vs {bp99:.3f} ms",
                         p99 <= bp99))
    for sc in SCENARIOS:
        if sc in ("hello", "environ"):
            continue
        ref = rps(sc, REFERENCE)
        peers = [(rps(sc, s), s) for s in servers if s not in (REFERENCE, CEILING)
                 and rps(sc, s)]
        if ref and peers:
            best, who = max(peers)
            rows.append((f"`{sc}`: ≥ 1.1× the best peer ({who})",
                         bound(sc, f"{ref / best:.2f}×"), ref / best >= 1.1))
    errs = [(sc, s) for (sc, sv), s in summary.items() if sv == REFERENCE]
    if errs:
        bad = [sc for sc, s in errs if s.get("errors") or s.get("failures")]
        rows.append(("no errors in any maitre cell", ", ".join(bad) or "none", not bad))
    hr, wr = (summary.get(("hello", s), {}).get("rss_peak_mib") for s in (REFERENCE, "waitress"))
    if hr is not None and wr is not None:
        rows.append(("`hello` peak RSS ≤ Waitress's", f"{hr:.1f} MiB vs {wr:.1f} MiB", hr <= wr))
    return rows


def _noise_text(results):
    xs = sorted(r["cpu0_others_pct"] for r in results if r.get("cpu0_others_pct") is not None)
    if not xs:
        return ""
    return (" Other processes used CPU 0 (the server's) for a median of "
            f"{statistics.median(xs):.0f}% of the measured time (90th percentile of the cells: "
            f"{xs[int(0.9 * (len(xs) - 1))]:.0f}%, max {xs[-1]:.0f}%): the column \"others on "
            "CPU 0\" in each table; a cell where that is high is unreliable. A run during "
            "which they used more than 25% was run once more and the quieter of the two kept "
            f"({sum(1 for r in results if 'noisy_rerun_of' in r or 'noisy_rerun_others_pct' in r)}"
            " such re-runs, at most a sixth of the runs).")


def write_report(meta, results, doc_path=DOC, chart_path=CHART):
    summary = summarize(results)
    scenarios = [s for s in meta["scenarios"] if any(k[0] == s for k in summary)]
    servers = [s for s in meta["servers"] if any(k[1] == s for k in summary)]
    versions = meta.get("versions", {})
    L = []
    L.append("# Benchmarks")
    L.append("")
    L.append("<!-- Generated by bench/run.py (`make bench`); edits are overwritten. -->")
    L.append("")
    L.append(f"Generated by `{meta['command']}` on {meta['date']} "
             f"({meta['elapsed_min']:.0f} minutes). Raw results: "
             f"`bench/results/{meta['stamp']}.jsonl` (not committed).")
    L.append("")
    L.append("![requests per second by scenario and server](bench.png)")
    L.append("")
    L.append("## Machine and method")
    L.append("")
    L.append(f"- CPU: {meta['cpu_model']}, {meta['cpus']} CPUs; Linux {meta['kernel']}, "
             f"Debian {meta.get('debian', '?')}; Python {meta['python']}.")
    L.append(f"- Each server runs pinned to CPU 0 (`taskset -c 0`) on 127.0.0.1; wrk "
             f"{versions.get('wrk', '?')} runs pinned to CPU 1 with one thread "
             f"(`wrk -t1 -cN --timeout 5s -s bench/pipeline.lua`)." if meta["pinned"] else
             "- Not pinned (fewer than 2 CPUs or no taskset): server and wrk share the CPUs.")
    L.append(f"- Every cell: start the server, check one response, {meta['warmup_s']} s of "
             f"warm-up, {meta['duration_s']} s measured, check one response again, stop the "
             f"server. The whole matrix runs {meta['repeat']} times (repeat outermost); the "
             "tables show the median req/s and the median p50/p99 over the repeats, the errors "
             "summed over the repeats, and the highest peak RSS.")
    waits = [r for r in results if r.get("time_wait_waited_s")]
    L.append("- Before each `hello_close` cell the driver waits (at most "
             f"{TIME_WAIT_MAX_S:.0f} s) until fewer than {TIME_WAIT_MAX} client-side TIME_WAIT "
             "sockets towards the earlier servers are left: a server that lets the client close "
             "first leaves them on wrk's side, where they slow down the next server's connects "
             f"(this run: {len(waits)} waits, "
             f"{sum(r['time_wait_waited_s'] for r in waits):.0f} s in all).")
    L.append("- Errors are wrk's socket errors (connect, read, write, timeout) plus responses "
             "with a status ≥ 400 (what wrk reports as \"Non-2xx or 3xx responses\"). RSS is the "
             "sum over the server's process tree (gunicorn's and Granian's master and worker, "
             "nginx's master and worker), sampled every 0.2 s through warm-up and measurement. "
             "CPU is the tree's user+system time over the measured period (100% = one core); "
             "\"wrk CPU\" is wrk's: near 100%, the client on its one core set the pace, not "
             "the server (a server well under 100% with wrk near 100% could go faster).")
    L.append("- Latency percentiles are wrk's, which include its coordinated-omission "
             "correction, except in `pipelined`: there the latency is that of a batch (the time "
             "until its 16th response), and `bench/pipeline.lua` undoes wrk's correction, which "
             "assumes one response per round trip and otherwise reports 0.")
    L.append("- Threaded servers get 4 threads. bjoern and meinheld are single-threaded event "
             "loops and run as one process, as their documentation shows.")
    L.append("- **Noise:** this machine is shared (others may build and run tests on it while "
             "the benchmark runs), and it has only 2 cores, one for the server and one for wrk. "
             "The fastest servers, and the large bodies, can be limited by wrk on its one core "
             "(the \"wrk CPU\" column). Differences under about 10% between two "
             "servers are within the noise; the repeats are listed in the raw results. Load "
             f"average at the start / end: {meta.get('load_start', '?')} / "
             f"{meta.get('load_end', '?')}; CPU 0 / CPU 1 busy before the run (nothing of ours "
             f"running): {' / '.join(f'{b}%' for b in meta.get('busy_before_pct') or [])}."
             + _noise_text(results))
    L.append("")
    L.append("## Servers")
    L.append("")
    L.append("| server | version | how it runs |")
    L.append("|---|---|---|")
    for s in meta["servers_all"]:
        spec = SERVERS[s]
        v = versions.get(spec["dist"]) or "—"
        if s == REFERENCE and meta.get("maitre"):
            mi = meta["maitre"]
            v = f"{v} (git {mi.get('git', '?')}, `_core` {mi.get('core_sha256', '?')}, " \
                f"built {mi.get('core_mtime', '?')})"
        how = f"`{meta['commands'].get(s, '')}`" if meta["commands"].get(s) else ""
        label = spec["label"]
        if s in meta.get("missing", {}):
            how = f"**did not install / not available**: {meta['missing'][s]}"
        note = meta.get("notes", {}).get(s)
        if note:
            how += f" ({note})"
        L.append(f"| {label} | {v} | {how} |")
    L.append("")
    notes = [NOTES[s] for s in meta["servers_all"] if s in NOTES and s in servers]
    if notes:
        L.append("Notes:")
        L.append("")
        L.extend(f"- {n}" for n in notes)
        L.append("")
    L.append(f"nginx {versions.get('nginx', '?')} serves the 13-byte string and the 1 MiB file "
             "from `bench/nginx.conf` (1 worker, keep-alive, sendfile): the no-Python ceiling, "
             "not counted as a peer. maitre runs from the project's `.venv`, built in release "
             "mode by `make setup`, copied aside at the start so that a rebuild during the run "
             "cannot change it; the peers run from `bench/.venv`.")
    L.append("")
    L.append(f"## Requests per second (median of {meta['repeat']})")
    L.append("")
    L.append("| scenario | " + " | ".join(servers) + " |")
    L.append("|---|" + "---:|" * len(servers))
    for sc in scenarios:
        cells = []
        for sv in servers:
            s = summary.get((sc, sv))
            if s is None:
                cells.append("—")
            elif "rps" not in s:
                cells.append("failed")
            else:
                cells.append(("**%s**" if sv == REFERENCE else "%s") % _fmt_int(s["rps"]))
        L.append(f"| {sc} | " + " | ".join(cells) + " |")
    L.append("")
    rows = targets(summary, servers)
    if rows:
        L.append("## Targets (issue 6)")
        L.append("")
        L.append("| target | this run | met |")
        L.append("|---|---|---|")
        for t, v, ok in rows:
            L.append(f"| {t} | {v} | {'yes' if ok else '**no**'} |")
        L.append("")
    L.append("## Scenarios")
    for sc in scenarios:
        L.append("")
        L.append(f"### {sc}")
        L.append("")
        L.append(SCENARIOS[sc]["text"][0].upper() + SCENARIOS[sc]["text"][1:] + ".")
        L.append("")
        L.append("| server | req/s | p50 ms | p99 ms | errors (socket / non-2xx) | "
                 "peak RSS MiB | CPU % | wrk CPU % | others on CPU 0 % | maitre ÷ server |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        ref = summary.get((sc, REFERENCE), {}).get("rps")
        for sv in servers:
            s = summary.get((sc, sv))
            if s is None:
                continue
            if "rps" not in s:
                why = s["failures"][-1].replace("|", "/").replace("\n", " ")[:200]
                L.append(f"| {sv} | failed: {why} | | | | | | | | |")
                continue
            errs = f"{s['errors']:,} ({s['socket_errors']:,} / {s['non2xx']:,})"
            failed = f" ({len(s['failures'])} of {s['runs']} runs failed)" if s["failures"] else ""
            name = f"**{sv}**" if sv == REFERENCE else sv
            cpu = "—" if s["cpu_pct"] is None else f"{s['cpu_pct']:.0f}"
            others = "—" if s.get("others_pct") is None else f"{s['others_pct']:.0f}"
            wcpu = "—" if s.get("wrk_cpu_pct") is None else f"{s['wrk_cpu_pct']:.0f}"
            L.append(f"| {name}{failed} | {_fmt_int(s['rps'])} | {_fmt_ms(s['p50_ms'])} | "
                     f"{_fmt_ms(s['p99_ms'])} | {errs} | {s['rss_peak_mib']:.1f} | {cpu} | "
                     f"{wcpu} | {others} | "
                     f"{'' if sv == REFERENCE else _ratio(ref, s['rps'])} |")
    fails = [(k, s) for k, s in summary.items() if s["failures"]]
    if fails:
        L.append("")
        L.append("## Failed runs")
        L.append("")
        for (sc, sv), s in sorted(fails):
            L.append(f"- {sc} / {sv}: {len(s['failures'])} of {s['runs']}: "
                     f"{s['failures'][-1].splitlines()[0][:300]}")
    L.append("")
    L.append("## Reproduce")
    L.append("")
    L.append("`make bench` (about 25 minutes on 2 cores; needs root or sudo for apt-get, and "
             "PyPI). `--repeat`, `--duration`, `--warmup`, `--servers` and `--scenarios` "
             "change the matrix (`.venv/bin/python bench/run.py --help`); "
             "`bench/run.py --report bench/results/<run>.jsonl` rewrites this page from a "
             "run. The apps are in `bench/apps.py`, the wrk script in `bench/pipeline.lua`.")
    L.append("")
    os.makedirs(os.path.dirname(doc_path), exist_ok=True)
    with open(doc_path, "w") as f:
        f.write("\n".join(L))
    log(f"wrote {os.path.relpath(doc_path, ROOT)}")
    # The chart is drawn by bench/chart.py in bench/.venv (where matplotlib is).
    chart_py = PEER_PY if os.path.exists(PEER_PY) else sys.executable
    data = {"scenarios": scenarios, "servers": servers, "reference": REFERENCE,
            "ceiling": CEILING, "repeat": meta["repeat"], "cpu": meta["cpu_model"],
            "date": meta["date"][:10],
            "rps": {sc: {sv: summary[(sc, sv)].get("rps") for sv in servers
                         if (sc, sv) in summary} for sc in scenarios}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(data, f)
    try:
        r = run_quiet([chart_py, os.path.join(HERE, "chart.py"), f.name, chart_path])
        if r.returncode == 0:
            log(f"wrote {os.path.relpath(chart_path, ROOT)}")
        else:
            log("chart not drawn: " + _last_error_line(r.stdout.decode("utf-8", "replace")))
    finally:
        os.unlink(f.name)


def read_results(path):
    meta, results = None, []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            if obj.get("kind") == "meta":
                meta = obj
            elif obj.get("kind") == "result":
                results.append(obj)
    return meta, results


def command_line(argv):
    """How this run was started, for the doc: `make bench` when make ran it."""
    if os.environ.get("MAKELEVEL"):
        return "make bench" + (f" BENCH_ARGS={shlex.quote(shlex.join(argv))}" if argv else "")
    return shlex.join(["bench/run.py"] + list(argv))


# -- main ----------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="servers: {}\nscenarios: {}".format(
                                    ", ".join(SERVERS), ", ".join(SCENARIOS)))
    p.add_argument("--duration", type=int, default=5, help="measured seconds per run (5)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds per run (2; 0 = none)")
    p.add_argument("--repeat", type=int, default=2, help="times the whole matrix runs (2)")
    p.add_argument("--scenarios", help="comma-separated (default: all)")
    p.add_argument("--servers", help="comma-separated (default: all)")
    p.add_argument("--smoke", action="store_true",
                   help="1 s runs, no warm-up, one repeat, only the servers/scenarios named "
                        "(default maitre, hello); installs nothing and writes no docs")
    p.add_argument("--no-install", action="store_true",
                   help="install nothing (apt-get, bench/.venv); skip what is missing")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and wrk to CPUs")
    p.add_argument("--noisy-pct", type=float, default=25.0,
                   help="a run during which other processes used more than this %% of CPU 0 "
                        "is run once more, and the quieter of the two kept (25)")
    p.add_argument("--noisy-retries", type=int,
                   help="at most this many such re-runs in all (default: a sixth of the runs)")
    p.add_argument("--docs", dest="docs", action="store_true", default=None,
                   help="rewrite docs/benchmarks.md and docs/bench.png (default: only for a "
                        "full run)")
    p.add_argument("--no-docs", dest="docs", action="store_false")
    p.add_argument("--output", help="JSON-lines file (default bench/results/<timestamp>.jsonl)")
    p.add_argument("--report", metavar="JSONL",
                   help="only rewrite the docs from the results of an earlier run")
    args = p.parse_args(argv)

    if args.report:
        meta, results = read_results(args.report)
        if meta is None:
            p.error(f"{args.report} has no meta line")
        write_report(meta, results)
        return 0

    started = time.monotonic()
    if args.smoke:
        args.duration, args.warmup, args.repeat = 1, 0, 1
        args.servers = args.servers or REFERENCE
        args.scenarios = args.scenarios or "hello"
    full = not args.smoke and not args.servers and not args.scenarios
    docs = full if args.docs is None else args.docs
    scenarios = [s for s in (args.scenarios or ",".join(SCENARIOS)).split(",") if s]
    servers = [s for s in (args.servers or ",".join(SERVERS)).split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            p.error("unknown scenario {!r} (known: {})".format(s, ", ".join(SCENARIOS)))
    for s in servers:
        if s not in SERVERS:
            p.error("unknown server {!r} (known: {})".format(s, ", ".join(SERVERS)))
    install = not (args.smoke or args.no_install)

    # Tools: wrk always; nginx if asked for; libev-dev before bjoern is built.
    need = ["wrk"] + (["nginx"] if "nginx" in servers else []) + \
        (["libev-dev"] if "bjoern" in servers else [])
    if install:
        ensure_apt(need)
    wrk = shutil.which("wrk") or ("/usr/bin/wrk" if os.path.exists("/usr/bin/wrk") else None)
    if not wrk:
        sys.exit("wrk is not installed (apt-get install wrk)")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)

    missing, notes = {}, {}
    peer_names = sorted({SERVERS[s]["dist"] for s in servers if SERVERS[s]["python"] == "peer"}
                        | ({"matplotlib"} if docs else set()))
    if install and peer_names:
        status = ensure_peers(peer_names)
        for s in servers:
            st = status.get(SERVERS[s]["dist"])
            if st and not st["ok"]:
                missing[s] = st["reason"]
            elif st and st.get("note"):
                notes[s] = st["note"]

    stamp = time.strftime("%Y%m%d-%H%M%S")
    tmp = tempfile.mkdtemp(prefix="maitre-bench-")
    os.chmod(tmp, 0o755)  # nginx's worker (user nobody) reads the file in it
    ctx = {"wrk": wrk, "nginx": nginx, "pin": can_pin() and not args.no_pin, "stamp": stamp,
           "ports": set(),
           "python": {}, "file": apps.ensure_file(os.path.join(tmp, "file-1mib.bin"))}
    maitre_info = None
    available = []
    for s in servers:
        spec = SERVERS[s]
        if s in missing:
            log(f"skipping {s}: did not install ({missing[s]})")
            continue
        if spec["python"] is None:
            if s == "nginx" and not nginx:
                missing[s] = "nginx is not installed"
                log(f"skipping {s}: {missing[s]}")
                continue
            available.append(s)
            continue
        if s == REFERENCE:
            path, maitre_info = snapshot_maitre(tmp)
            if path is None:
                missing[s] = maitre_info["error"]
                log(f"skipping {s}: {missing[s]}")
                continue
            if maitre_info.get("stale"):
                log("WARNING: maitre's extension is older than src/ (run `make setup` to "
                    "rebuild it in release mode)")
            ctx["maitre_path"] = path
            ctx["python"][s] = PROJECT_PY
            available.append(s)
            continue
        # A peer: bench/.venv, or (for a smoke run without it) the driver's own interpreter.
        for py in (PEER_PY, PROJECT_PY):
            if os.path.exists(py) and _importable(py, spec["module"]):
                ctx["python"][s] = py
                available.append(s)
                break
        else:
            missing[s] = f"module {spec['module']} is not importable (bench/.venv not set up?)"
            log(f"skipping {s}: {missing[s]}")
    if not available:
        sys.exit("no server to benchmark")

    nofile = raise_nofile()
    if any(SCENARIOS[s]["conns"] >= 1000 for s in scenarios) and nofile < 4096:
        log(f"WARNING: open-file limit is {nofile}; c1000 needs more than 2000")
    if ctx["pin"]:
        try:
            os.sched_setaffinity(0, {1})  # this driver (and its sampler) stays off the server CPU
        except OSError:
            pass
    else:
        log("note: not pinned (fewer than 2 CPUs, no taskset, or --no-pin)")

    # Versions, for the doc.
    versions = {}
    for py in {ctx["python"][s] for s in available if s in ctx["python"]}:
        dists = [SERVERS[s]["dist"] for s in available if ctx["python"].get(s) == py]
        versions.update({k: v for k, v in dist_versions(py, dists).items()})
    for s in available:
        if SERVERS[s]["python"] == "peer" and ctx["python"][s] != PEER_PY:
            notes[s] = "from the project's .venv (bench/.venv not set up)"
    versions["wrk"] = tool_version([wrk, "-v"], r"wrk (?:debian/)?([\w.\-+]+)")
    if nginx:
        versions["nginx"] = tool_version([nginx, "-v"], r"nginx/([\w.\-]+)")
    if maitre_info is not None:
        maitre_info["git"] = git_describe()
    commands = {}
    for s in available:
        argv_ = server_argv(ctx, s, "hello", 8080, "PREFIX")
        argv_ = [os.path.relpath(a, ROOT) if a.startswith(ROOT + os.sep) else a for a in argv_]
        argv_ = ["python" if a.endswith("/bin/python") else a for a in argv_]
        commands[s] = "taskset -c 0 " + shlex.join(argv_) if ctx["pin"] else shlex.join(argv_)

    os.makedirs(RESULTS, exist_ok=True)
    out_path = args.output or os.path.join(RESULTS, f"{stamp}.jsonl")
    logdir = os.path.join(RESULTS, f"logs-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    ctx["logdir"] = logdir
    cells = [(rep, sc, sv) for rep in range(args.repeat) for sc in scenarios for sv in available
             if sv != "nginx" or SCENARIOS[sc]["nginx"]]
    per = args.warmup + args.duration + 1.5
    log(f"{len(cells)} runs of {args.warmup} + {args.duration} s: about "
        f"{len(cells) * per / 60:.0f} minutes; results in {os.path.relpath(out_path, ROOT)}")
    load_start = loadavg()
    idle_busy = [None, None]
    if not args.smoke:
        t0 = cpu_times()
        time.sleep(2)
        t1 = cpu_times()
        idle_busy = [busy_pct(t0, t1, c) for c in (0, 1)]
    if any(b is not None and b > 30 for b in idle_busy):
        log("WARNING: before the run, other processes keep the CPUs {} busy: the results "
            "will be noisy".format(" / ".join(f"{b:.0f}%" for b in idle_busy if b is not None)))
    meta = {
        "kind": "meta", "stamp": stamp, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": command_line(sys.argv[1:] if argv is None else argv),
        "cpu_model": cpu_model(), "cpus": os.cpu_count(), "kernel": os.uname().release,
        "debian": read_text("/etc/debian_version"),
        "python": sys.version.split()[0], "pinned": ctx["pin"], "repeat": args.repeat,
        "duration_s": args.duration, "warmup_s": args.warmup, "scenarios": scenarios,
        "servers": available, "servers_all": servers, "missing": missing, "notes": notes,
        "versions": versions, "maitre": maitre_info, "commands": commands,
        "load_start": load_start, "smoke": args.smoke,
        "busy_before_pct": [None if b is None else round(b) for b in idle_busy],
    }
    results = []
    retries = len(cells) // 6 if args.noisy_retries is None else args.noisy_retries
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops servers
    try:
        with open(out_path, "a") as out:
            out.write(json.dumps(meta) + "\n")
            for i, (rep, sc, sv) in enumerate(cells, 1):
                log(f"[{i}/{len(cells)}] {sc} / {sv} / run {rep + 1}")
                r = bench_one(ctx, sv, sc, rep, args)
                others = r.get("cpu0_others_pct")
                if others is not None and others > args.noisy_pct and retries > 0:
                    retries -= 1
                    log(f"  noisy: other processes used {others:.0f}% of CPU 0 "
                        f"({r.get('rps', 0):.0f} req/s); running it again")
                    r2 = bench_one(ctx, sv, sc, rep, args)
                    if "error" not in r2 and (r2.get("cpu0_others_pct") or 0) <= others:
                        r2["noisy_rerun_of"] = {k: r.get(k) for k in
                                                ("rps", "p99_ms", "cpu0_others_pct")}
                        r = r2
                    else:
                        r["noisy_rerun_others_pct"] = r2.get("cpu0_others_pct")
                if "error" in r:
                    log("  FAILED: {}".format(r["error"].splitlines()[0][:300]))
                else:
                    log("  {:.0f} req/s, p50 {} ms, p99 {} ms, {} errors, "
                        "RSS {:.1f} MiB, CPU {}%".format(r["rps"], _fmt_ms(r["p50_ms"]),
                                                          _fmt_ms(r["p99_ms"]),
                                                          r["errors"], r["rss_peak_mib"],
                                                          r["cpu_pct"]))
                results.append(r)
                out.write(json.dumps(r) + "\n")
                out.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta["load_end"] = loadavg()
    meta["elapsed_min"] = (time.monotonic() - started) / 60.0
    summary = summarize(results)
    print_table(summary, scenarios, available)
    # The meta line is rewritten with the end-of-run facts, so --report can redo the docs.
    with open(out_path) as f:
        lines = f.read().splitlines()
    lines[[i for i, ln in enumerate(lines) if '"kind": "meta"' in ln][-1]] = json.dumps(meta)
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    if docs:
        write_report(meta, results)
    log(f"results: {os.path.relpath(out_path, ROOT)}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
