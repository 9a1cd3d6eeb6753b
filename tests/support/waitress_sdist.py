"""Fetch and unpack the Waitress 3.0.2 sdist into ``.waitress/`` at the repository root.

``ensure_waitress_sdist()`` is idempotent and safe to call from several processes at once: the
download and extraction happen under an exclusive ``fcntl`` lock, and the source directory is
published with an atomic rename, so a reader never sees a half-extracted tree.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile

WAITRESS_VERSION = "3.0.2"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SDIST_ROOT = REPO_ROOT / ".waitress"


def _source_dir() -> pathlib.Path:
    return SDIST_ROOT / (f"waitress-{WAITRESS_VERSION}")


def _complete(src: pathlib.Path) -> bool:
    return (src / "tests" / "test_functional.py").is_file() and (src / "src" / "waitress").is_dir()


def _find_archive() -> pathlib.Path | None:
    for name in (f"waitress-{WAITRESS_VERSION}.tar.gz", f"waitress-{WAITRESS_VERSION}.zip"):
        p = SDIST_ROOT / name
        if p.is_file():
            return p
    return None


def ensure_waitress_sdist() -> pathlib.Path:
    """Return the extracted Waitress 3.0.2 source directory, downloading it if needed."""
    src = _source_dir()
    if _complete(src):
        return src
    SDIST_ROOT.mkdir(parents=True, exist_ok=True)
    with open(SDIST_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _complete(src):
                return src
            archive = _find_archive()
            if archive is None:
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--quiet",
                     f"waitress=={WAITRESS_VERSION}", "--no-binary", ":all:", "--no-deps",
                     "-d", str(SDIST_ROOT)],
                    check=True, timeout=300,
                )
                archive = _find_archive()
                if archive is None:
                    raise RuntimeError("pip download did not produce a waitress sdist")
            tmp = pathlib.Path(tempfile.mkdtemp(prefix=".extract-", dir=str(SDIST_ROOT)))
            try:
                with tarfile.open(archive) as tar:
                    if hasattr(tarfile, "data_filter"):
                        tar.extractall(tmp, filter="data")
                    else:  # Python < 3.9.17 / 3.10.12 / 3.11.4
                        tar.extractall(tmp)
                extracted = tmp / src.name
                if not _complete(extracted):
                    raise RuntimeError(f"unexpected sdist layout in {archive}")
                if src.exists():
                    shutil.rmtree(src)
                os.rename(extracted, src)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return src
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


if __name__ == "__main__":
    print(ensure_waitress_sdist())
