"""User-space instructions per request of maitre's engine, counted by valgrind's callgrind.

Instruction counts are stable on a noisy shared machine where wall-clock throughput is not, so
this is how engine changes are compared. For each app and repeat it:

1. starts ``python -m maitre --listen=127.0.0.1:PORT apps:APP`` (default threads) from the given
   Python (a virtualenv with maitre built in release mode) under
   ``valgrind --tool=callgrind``, with its output in a temporary directory;
2. warms up with ``wrk -t1 -c32 -d3s``;
3. zeroes the counters (``callgrind_control -z``), runs ``wrk -t1 -c32 -d8s`` and dumps
   (``callgrind_control -d``);
4. reads the dump's total ``Ir`` (all threads: they are not separated) and divides it by the
   requests wrk completed; then stops the server (on every exit path).

Usage (from the repository root)::

    python3 bench/callgrind.py                                  # hello and environ, once
    python3 bench/callgrind.py --app hello --repeat 3 --python /other/venv/bin/python

Needs wrk and valgrind (``apt-get install -y wrk valgrind``). The Ir counted includes the
server's idle work during the period (the event loop, timers), which is small next to the
requests. Valgrind runs the server's threads one at a time, so the server is much slower than
natively; only the instruction counts are meaningful, not the request rate.
"""

import argparse
import ctypes
import glob
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS = {"hello": "apps:hello", "environ": "apps:environ_app"}
CONNECTIONS = 32
START_TIMEOUT = 180.0  # Python and the extension start slowly under valgrind
PR_SET_PDEATHSIG = 1


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def need(tool):
    path = shutil.which(tool)
    if path is None:
        sys.exit(f"{tool} not found: apt-get install -y wrk valgrind")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    """In the child before exec: SIGKILL when this script dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def wait_ready(port, proc, timeout=START_TIMEOUT):
    """Wait until the server answers GET / with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"server answered {resp.status} {resp.reason}")
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)
        finally:
            conn.close()
    raise RuntimeError(f"server did not answer on port {port} within {timeout:.0f} s")


def stop_server(proc):
    """SIGTERM (maitre stops gracefully, valgrind writes its last dump), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_wrk(wrk, port, seconds):
    """Run wrk; return the requests it completed (the "N requests in ..." line)."""
    cmd = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s",
           f"http://127.0.0.1:{port}/"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=seconds + 60, check=False)
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"^\s*(\d+) requests in ", out, re.MULTILINE)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed (rc={r.returncode}): {out.strip()[-500:]}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"wrk saw {bad.group(1)} non-2xx/3xx responses")
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        log(f"  wrk socket errors: {errors.group(1).strip()}")
    return int(m.group(1))


def callgrind_control(ctl, option, pid):
    r = subprocess.run([ctl, option, str(pid)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120, check=False)
    out = r.stdout.decode("utf-8", "replace")
    if r.returncode != 0 or "Error" in out:
        raise RuntimeError(f"callgrind_control {option} failed (rc={r.returncode}): {out.strip()}")


def read_total_ir(path):
    """The total Ir of one dump: its "totals:" line, else its "summary:" line."""
    found = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            for key in ("totals:", "summary:"):
                if line.startswith(key):
                    found[key] = int(line.split()[1])
    if not found:
        return None
    return found.get("totals:", found.get("summary:"))


def wait_dump(outdir, before, timeout=120.0):
    """The total Ir of the dump file(s) that appeared in outdir since ``before`` was listed,
    once each is complete (it ends with its totals)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = sorted(set(glob.glob(os.path.join(outdir, "callgrind.out*"))) - before)
        totals = [read_total_ir(p) for p in new]
        if new and None not in totals:
            return sum(totals), new
        time.sleep(0.2)
    raise RuntimeError(f"no complete callgrind dump in {outdir} within {timeout:.0f} s")


def measure(args, app, tools):
    """One server under callgrind: warm up, zero, measure, dump. Returns (requests, Ir)."""
    outdir = tempfile.mkdtemp(prefix="maitre-callgrind-")
    port = free_port()
    cmd = [tools["valgrind"], "--tool=callgrind",
           f"--callgrind-out-file={os.path.join(outdir, 'callgrind.out')}",
           args.python, "-m", "maitre", f"--listen=127.0.0.1:{port}", APPS[app]]
    env = dict(os.environ, PYTHONPATH=HERE, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONHOME", None)
    proc = None
    log_path = os.path.join(outdir, "server.log")
    try:
        with open(log_path, "wb") as server_log:
            proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                                    stdout=server_log, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent)  # noqa: PLW1509 (no threads)
        wait_ready(port, proc)
        run_wrk(tools["wrk"], port, args.warmup)
        callgrind_control(tools["callgrind_control"], "-z", proc.pid)
        requests = run_wrk(tools["wrk"], port, args.duration)
        before = set(glob.glob(os.path.join(outdir, "callgrind.out*")))
        callgrind_control(tools["callgrind_control"], "-d", proc.pid)
        ir, _files = wait_dump(outdir, before)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        return requests, ir
    except Exception:
        try:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-3000:]
            log(f"--- server output (tail) ---\n{tail}\n---")
        except OSError:
            pass
        raise
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(outdir, ignore_errors=True)


def describe(python):
    """Where the given Python imports maitre's extension from (to show what was measured)."""
    try:
        r = subprocess.run([python, "-c", "import maitre._core as c; print(c.__file__)"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=HERE,
                           timeout=60, check=False)
    except OSError as e:
        sys.exit(f"cannot run {python}: {e}")
    out = r.stdout.decode("utf-8", "replace").strip()
    if r.returncode != 0:
        sys.exit(f"{python} cannot import maitre._core:\n{out}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--app", action="append", choices=sorted(APPS),
                   help="app from bench/apps.py (repeatable; default: hello and environ)")
    p.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"),
                   help="Python with maitre installed (default: the repository's .venv)")
    p.add_argument("--repeat", type=int, default=1, help="servers measured per app (default 1)")
    p.add_argument("--warmup", type=int, default=3, help="wrk warm-up seconds (default 3)")
    p.add_argument("--duration", type=int, default=8, help="measured wrk seconds (default 8)")
    args = p.parse_args(argv)
    apps = args.app or ["hello", "environ"]
    if args.repeat < 1 or args.warmup < 1 or args.duration < 1:
        p.error("--repeat, --warmup and --duration must be at least 1")
    tools = {t: need(t) for t in ("wrk", "valgrind", "callgrind_control")}
    log(f"maitre extension: {describe(args.python)}")

    # SIGTERM/SIGHUP to this script unwinds like Ctrl-C, so the server is stopped.
    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    rows = []
    for app in apps:
        for i in range(1, args.repeat + 1):
            log(f"{app} #{i}: warm-up {args.warmup} s, measure {args.duration} s ...")
            requests, ir = measure(args, app, tools)
            rows.append((app, i, requests, ir, ir / requests if requests else float("nan")))
            log(f"{app} #{i}: {requests} requests, Ir {ir:,}, {rows[-1][4]:,.0f} Ir/request")

    print(f"{'app':<8} {'run':>3} {'requests':>9} {'Ir':>16} {'Ir/request':>11}")
    for app, i, requests, ir, per in rows:
        print(f"{app:<8} {i:>3} {requests:>9} {ir:>16,} {per:>11,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
