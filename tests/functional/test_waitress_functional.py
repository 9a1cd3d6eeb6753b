"""Waitress 3.0.2's own functional suite (137 tests), run against maitre through an adapter plugin.

The suite is fetched from PyPI into ``.waitress/`` (see ``support/waitress_sdist.py``) and run in
a pytest subprocess with ``maitre_functional_adapter`` (reference §6.2). This test fails if fewer
tests pass than the floor in ``tests/functional/FLOOR``; the lead raises the floor as the engine
improves (the target is all 137).
"""

import os
import pathlib
import re
import subprocess
import sys

from support.server import IMPL
from support.waitress_sdist import ensure_waitress_sdist

HERE = pathlib.Path(__file__).resolve().parent
TARGET = 137


def _floor():
    text = (HERE / "FLOOR").read_text().split()
    return int(text[0]) if text else 0


def _count(summary, word):
    m = re.search(rf"(\d+) {word}", summary)
    return int(m.group(1)) if m else 0


def test_waitress_functional_suite():
    src = ensure_waitress_sdist()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(src)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["MAITRE_TEST_IMPL"] = IMPL
    env.pop("COVERAGE_RCFILE", None)
    cmd = [
        sys.executable, "-m", "pytest", "-p", "maitre_functional_adapter",
        "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rfE", "--tb=line",
        "tests/test_functional.py",
    ]
    try:
        proc = subprocess.run(  # noqa: PLW1510 - the exit code is judged below
            cmd, cwd=str(src), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=600,
        )
        out = proc.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode("utf-8", "replace") + "\n[timed out after 600 s]"
    lines = [ln for ln in out.splitlines() if ln.strip()]
    summary = next(
        (ln for ln in reversed(lines) if re.search(r"\d+ (passed|failed|error)", ln)), ""
    )
    passed = _count(summary, "passed")
    floor = _floor()
    shown = summary.strip("= ") or "no summary"
    print(f"waitress functional suite against {IMPL}: {shown} (floor {floor}, target {TARGET})")
    if passed < floor:
        print(out[-20000:])
    assert passed >= floor, f"only {passed} passed (floor {floor}): {summary}"
