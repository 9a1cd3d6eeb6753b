"""The benchmark harness runs end to end (a 1 s smoke run). Never asserts a speed.

The smoke run installs nothing (no apt-get, no bench/.venv): it needs only wrk, and the server
under test from the project's .venv.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from support.server import IMPL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_bench_smoke(tmp_path):
    out = tmp_path / "smoke.jsonl"
    proc = subprocess.run(  # noqa: PLW1510 - the exit code is judged below
        [sys.executable, os.path.join(ROOT, "bench", "run.py"), "--smoke", "--servers", IMPL,
         "--scenarios", "hello", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
    )
    text = proc.stdout.decode("utf-8", "replace")
    print(text)
    assert proc.returncode == 0, text
    lines = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    meta = [r for r in lines if r.get("kind") == "meta"]
    results = [r for r in lines if r.get("kind") == "result"]
    assert len(meta) == 1 and meta[0]["smoke"] is True, meta
    assert len(results) == 1, results
    r = results[0]
    assert (r["server"], r["scenario"]) == (IMPL, "hello")
    assert "error" not in r, r
    assert r["requests"] > 0
    assert r["socket_errors"] == 0 and r["non2xx"] == 0, r["error_detail"]
    assert r["errors"] == 0, r["error_detail"]
    assert r["rss_peak_mib"] > 0
    assert "req/s" in text
