"""The benchmark harness runs end to end (1 s smoke run). Never asserts a speed."""

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
    assert len(lines) == 1, lines
    r = lines[0]
    assert (r["server"], r["scenario"]) == (IMPL, "hello")
    assert "error" not in r, r
    assert r["requests"] > 0
    assert r["errors"] == 0, r["error_detail"]
    assert "req/s" in text
