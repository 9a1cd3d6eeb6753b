"""Run Waitress 3.0.2's own unit tests for the configuration layer against maitre.

The Waitress sdist is downloaded from PyPI into ``.waitress/`` at the repository
root on first use (``pip download waitress==3.0.2 --no-binary :all: --no-deps``)
and reused afterwards. Its ``tests/test_adjustments.py``, ``tests/test_runner.py``,
``tests/test_init.py`` and ``tests/test_proxy_headers.py`` are run unchanged in a
pytest subprocess with the ``waitress_shim`` plugin, which maps ``waitress`` and
its submodules onto ``maitre`` (see ``waitress_shim.py``).

The program name: Waitress's test_runner passes ``argv[0] = "waitress-serve"``
and expects the usage line to show it. The runner takes the name from
``os.path.basename(argv[0])`` (as Waitress does), so it prints whatever name it is
invoked as (``maitre-serve`` when installed); nothing is rewritten.

The test fails (it never skips) when fewer tests pass than the number in
``FLOOR`` next to this file, or when any test fails or errors.

Run just this harness with:  python -m pytest tests/waitress_units -s
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / ".waitress"
VERSION = "3.0.2"
SDIST = CACHE / f"waitress-{VERSION}"
TEST_FILES = [
    "tests/test_adjustments.py",
    "tests/test_runner.py",
    "tests/test_init.py",
    "tests/test_proxy_headers.py",
]


def _fetch_sdist():
    # Prefer the shared helper (it locks .waitress/ against concurrent runs).
    try:
        from support.waitress_sdist import ensure_waitress_sdist
    except ImportError:
        return _fetch_sdist_here()
    return ensure_waitress_sdist()


def _fetch_sdist_here():
    if (SDIST / "tests" / "test_adjustments.py").is_file():
        return SDIST
    CACHE.mkdir(exist_ok=True)
    archive = CACHE / f"waitress-{VERSION}.tar.gz"
    if not archive.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                f"waitress=={VERSION}",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
    # Unpack beside the target and rename, so an interrupted run leaves no half tree.
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=str(CACHE)))
    try:
        with tarfile.open(str(archive)) as tar:
            for member in tar.getmembers():
                target = (scratch / member.name).resolve()
                if scratch.resolve() not in target.parents:
                    raise RuntimeError(f"unsafe path in sdist: {member.name}")
            tar.extractall(str(scratch))
        if not SDIST.exists():
            (scratch / SDIST.name).rename(SDIST)
    finally:
        shutil.rmtree(str(scratch), ignore_errors=True)
    return SDIST


def _counts(junit_xml):
    per_file = {}
    for case in ET.parse(str(junit_xml)).getroot().iter("testcase"):
        name = case.get("classname", "").split(".")
        key = ".".join(name[:2]) if len(name) >= 2 else case.get("classname", "")
        entry = per_file.setdefault(key, {"passed": 0, "failed": 0, "skipped": 0})
        if case.find("failure") is not None or case.find("error") is not None:
            entry["failed"] += 1
        elif case.find("skipped") is not None:
            entry["skipped"] += 1
        else:
            entry["passed"] += 1
    return per_file


def test_waitress_unit_tests_pass_against_maitre(tmp_path):
    sdist = _fetch_sdist()
    floor = int((HERE / "FLOOR").read_text().split()[0])
    junit = tmp_path / "junit.xml"

    env = dict(os.environ)
    path = [str(HERE), str(REPO / "python")]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["MAITRE_WAITRESS_SDIST"] = str(sdist)
    env.pop("PYTEST_ADDOPTS", None)

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "waitress_shim",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-q",
            "-rfE",
            "--junitxml",
            str(junit),
            *TEST_FILES,
        ],
        check=False,
        cwd=str(sdist),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    print(proc.stdout)
    assert junit.is_file(), f"pytest produced no report (exit {proc.returncode})"

    per_file = _counts(junit)
    passed = sum(c["passed"] for c in per_file.values())
    failed = sum(c["failed"] for c in per_file.values())
    skipped = sum(c["skipped"] for c in per_file.values())
    for name in sorted(per_file):
        print(f"{name:<28} {per_file[name]}")
    print(
        f"Waitress unit tests against maitre: {passed} passed, {failed} failed, "
        f"{skipped} skipped (floor {floor})"
    )

    assert failed == 0, f"{failed} Waitress unit tests failed against maitre"
    assert passed >= floor, f"only {passed} Waitress unit tests passed; the floor is {floor}"
