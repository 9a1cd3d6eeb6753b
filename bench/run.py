#!/usr/bin/env python3
"""Throughput benchmark: maitre against Waitress (and more peers later) with wrk.

Each server runs pinned to CPU 0 (``taskset -c 0``) on 127.0.0.1, wrk runs pinned to CPU 1. For
every (scenario, server, repeat): start the server, check one response is correct, warm up, run
the measured period while sampling the server's RSS and CPU from /proc, stop the server. Results
go to ``bench/results/<timestamp>.jsonl`` (one JSON object per run) and a table is printed with
maitre's req/s ratio to each peer.

    .venv/bin/python bench/run.py                       # all scenarios, 10 s each
    .venv/bin/python bench/run.py --smoke               # 1 s runs, for CI
    .venv/bin/python bench/run.py --servers waitress --scenarios hello,big --duration 5 --repeat 3

Adding a peer: add an entry to SERVERS (a command line that serves ``apps:<name>`` on a port).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
LUA = os.path.join(HERE, "pipeline.lua")
sys.path.insert(0, HERE)

import apps

PY = sys.executable


# -- servers --------------------------------------------------------------------------------------
# Each entry: "module" (must be importable for the server to be available) and "cmd"
# (port, "module:callable", threads) -> argv. All are started with cwd=bench/.
def _waitress_like(module):
    def cmd(port, app, threads):
        return [PY, "-m", module, f"--listen=127.0.0.1:{port}", f"--threads={threads}", app]
    return cmd


SERVERS = {
    "maitre": {"module": "maitre", "cmd": _waitress_like("maitre")},
    "waitress": {"module": "waitress", "cmd": _waitress_like("waitress")},
}
REFERENCE = "maitre"  # ratios are this server's req/s over each peer's


# -- scenarios ------------------------------------------------------------------------------------
def _check_exact(body):
    def check(status, headers, data):
        assert status == 200, status
        assert data == body, data[:100]
        assert int(headers.get("content-length", -1)) == len(body), headers
    return check


def _check_environ(status, headers, data):
    assert status == 200, status
    assert b"REQUEST_METHOD=GET" in data and b"PATH_INFO=/" in data, data[:200]


def _check_stream(status, headers, data):
    assert status == 200, status
    assert data == apps.STREAM_CHUNK * apps.STREAM_CHUNKS


ECHO_SIZE = 64 * 1024

SCENARIOS = {
    # name: app, connections, wrk args (depth, method, bodysize), check
    "hello": {"app": "apps:hello", "connections": 32, "wrk": (1, "GET", 0),
              "check": _check_exact(apps.HELLO)},
    "environ": {"app": "apps:environ_app", "connections": 32, "wrk": (1, "GET", 0),
                "check": _check_environ},
    "big": {"app": "apps:big", "connections": 16, "wrk": (1, "GET", 0),
            "check": _check_exact(apps.BIG)},
    "stream": {"app": "apps:stream", "connections": 16, "wrk": (1, "GET", 0),
               "check": _check_stream},
    "echo64k": {"app": "apps:echo", "connections": 16, "wrk": (1, "POST", ECHO_SIZE),
                "check": _check_exact(b"x" * ECHO_SIZE), "post": b"x" * ECHO_SIZE},
    "pipeline": {"app": "apps:hello", "connections": 32, "wrk": (16, "GET", 0),
                 "check": _check_exact(apps.HELLO)},
}
DEFAULT_SCENARIOS = ["hello", "environ", "big", "stream", "echo64k", "pipeline"]


# -- helpers --------------------------------------------------------------------------------------
def ensure_wrk():
    if shutil.which("wrk"):
        return shutil.which("wrk")
    print("wrk not found; installing it with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    r = subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "wrk"], env=env, check=False)
    if r.returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "wrk"], env=env, check=True)
    path = shutil.which("wrk")
    if not path:
        sys.exit("wrk could not be installed")
    return path


def pin(cpu):
    """A taskset prefix pinning to ``cpu``, or [] if pinning is impossible here."""
    if not shutil.which("taskset") or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15.0):
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


def fetch(port, scenario):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = scenario.get("post")
        if body is not None:
            conn.request("POST", "/", body=body,
                         headers={"Content-Type": "application/octet-stream"})
        else:
            conn.request("GET", "/")
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


class Sampler(threading.Thread):
    def __init__(self, pid, interval=0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop_evt = threading.Event()
        self.rss = []

    def run(self):
        while not self.stop_evt.is_set():
            try:
                self.rss.append(proc_rss_mib(self.pid))
            except OSError:
                return
            self.stop_evt.wait(self.interval)

    def stop(self):
        self.stop_evt.set()
        self.join(5)


def run_wrk(wrk, port, scenario, seconds, threads):
    depth, method, bodysize = scenario["wrk"]
    cmd = pin(1) + [wrk, f"-t{threads}", "-c{}".format(scenario["connections"]),
                    f"-d{seconds}s", "--timeout", "5s", "-s", LUA,
                    f"http://127.0.0.1:{port}/", "--", str(depth), method, str(bodysize)]
    r = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=seconds + 60)
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"^WRK_JSON (\{.*\})$", out, re.MULTILINE)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed (rc={r.returncode}):\n{out}")
    return json.loads(m.group(1))


def stop_server(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def bench_one(wrk, server, sname, scenario, args, rep, logdir):
    port = free_port()
    cmd = pin(0) + SERVERS[server]["cmd"](port, scenario["app"], args.server_threads)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + ([env["PYTHONPATH"]]
                                                 if env.get("PYTHONPATH") else []))
    log_path = os.path.join(logdir, f"{server}-{sname}-{rep}.log")
    result = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S"), "server": server, "scenario": sname,
        "repeat": rep, "duration_s": args.duration, "warmup_s": args.warmup,
        "connections": scenario["connections"], "pipeline_depth": scenario["wrk"][0],
        "server_threads": args.server_threads, "smoke": args.smoke, "pinned": bool(pin(0)),
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(port, proc)
            scenario["check"](*fetch(port, scenario))
            if args.warmup > 0:
                run_wrk(wrk, port, scenario, args.warmup, args.wrk_threads)
            sampler = Sampler(proc.pid)
            cpu0, t0 = proc_cpu(proc.pid), time.monotonic()
            sampler.start()
            w = run_wrk(wrk, port, scenario, args.duration, args.wrk_threads)
            sampler.stop()
            cpu, wall = proc_cpu(proc.pid) - cpu0, time.monotonic() - t0
            scenario["check"](*fetch(port, scenario))  # still correct after the load
        except Exception as exc:  # noqa: BLE001 - record the failure and move on
            result["error"] = f"{type(exc).__name__}: {exc}"
            return result
        finally:
            stop_server(proc)
    secs = w["duration_us"] / 1e6
    errors = sum(w["errors"].values())
    result.update({
        "requests": w["requests"], "rps": w["requests"] / secs if secs else 0.0,
        "mb_per_s": w["bytes"] / secs / 1e6 if secs else 0.0,
        "p50_ms": w["latency_us"]["p50"] / 1000.0, "p90_ms": w["latency_us"]["p90"] / 1000.0,
        "p99_ms": w["latency_us"]["p99"] / 1000.0, "max_ms": w["latency_us"]["max"] / 1000.0,
        "errors": errors, "error_detail": w["errors"],
        "rss_max_mib": round(max(sampler.rss), 1) if sampler.rss else None,
        "cpu_pct": round(100.0 * cpu / wall, 1) if wall else None,
    })
    return result


def print_table(results):
    rows = {}
    for r in results:
        rows.setdefault((r["scenario"], r["server"]), []).append(r)
    best = {}
    print()
    hdr = "{:<9} {:<10} {:>11} {:>8} {:>8} {:>7} {:>8} {:>6}  {}".format(
        "scenario", "server", "req/s", "p50 ms", "p99 ms", "errors", "RSS MiB", "CPU%",
        f"{REFERENCE}/peer")
    print(hdr)
    print("-" * len(hdr))
    for (sname, server), rs in rows.items():
        ok = [r for r in rs if "error" not in r]
        if ok:
            best[(sname, server)] = statistics.median(r["rps"] for r in ok)
    for (sname, server), rs in rows.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            print("{:<9} {:<10}  FAILED: {}".format(sname, server, rs[-1]["error"].splitlines()[0]))
            continue
        rps = best[(sname, server)]
        ratio = ""
        ref = best.get((sname, REFERENCE))
        if server != REFERENCE and ref and rps:
            ratio = "%.2fx" % (ref / rps)
        print("{:<9} {:<10} {:>11.0f} {:>8.2f} {:>8.2f} {:>7d} {!s:>8} {!s:>6}  {}".format(
            sname, server, rps, statistics.median(r["p50_ms"] for r in ok),
            statistics.median(r["p99_ms"] for r in ok), sum(r["errors"] for r in ok),
            ok[-1]["rss_max_mib"], ok[-1]["cpu_pct"], ratio))
    print()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10, help="measured seconds per run")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds per run (0 = none)")
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS))
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--server-threads", type=int, default=4)
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="1 s runs, 1 s warm-up (for CI)")
    p.add_argument("--output", help="JSON-lines file (default bench/results/<timestamp>.jsonl)")
    args = p.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup = 1, 1
    scenarios = [s for s in args.scenarios.split(",") if s]
    servers = [s for s in args.servers.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            p.error("unknown scenario {!r} (known: {})".format(s, ", ".join(SCENARIOS)))
    for s in servers:
        if s not in SERVERS:
            p.error("unknown server {!r} (known: {})".format(s, ", ".join(SERVERS)))
    available = []
    for s in servers:
        if importlib.util.find_spec(SERVERS[s]["module"]) is None:
            print("skipping {}: module {!r} is not importable".format(s, SERVERS[s]["module"]))
        else:
            available.append(s)
    if not available:
        sys.exit("no server to benchmark")
    wrk = ensure_wrk()
    if not pin(0):
        print("note: fewer than 2 CPUs or no taskset; running unpinned")
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_path = args.output or os.path.join(RESULTS, f"{stamp}.jsonl")
    logdir = os.path.join(os.path.dirname(os.path.abspath(out_path)), f"logs-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    results = []
    with open(out_path, "a") as out:
        for sname in scenarios:
            for rep in range(args.repeat):
                for server in available:
                    print(f"{sname} / {server} / run {rep + 1} ...", flush=True)
                    r = bench_one(wrk, server, sname, SCENARIOS[sname], args, rep, logdir)
                    if "error" in r:
                        print("  FAILED: {}".format(r["error"]), flush=True)
                    else:
                        print("  {:.0f} req/s, p99 {:.2f} ms, {} errors".format(
                        r["rps"], r["p99_ms"], r["errors"]), flush=True)
                    results.append(r)
                    out.write(json.dumps(r) + "\n")
                    out.flush()
    print_table(results)
    print(f"results: {out_path}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
