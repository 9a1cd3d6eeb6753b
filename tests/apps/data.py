"""Deterministic payloads shared by the framework apps and their tests."""

import hashlib
import os
import tempfile

DOWNLOAD_SIZE = 3 * 1024 * 1024 + 17
STREAM_CHUNKS = 50
STREAM_CHUNK = b"0123456789abcdef" * 64  # 1 KiB


def pattern(n):
    block = bytes(range(256)) * 4096  # 1 MiB
    out = (block * (n // len(block) + 1))[:n]
    return out


def download_path():
    """A file of DOWNLOAD_SIZE pattern bytes (created once per process, reused after)."""
    path = os.path.join(tempfile.gettempdir(), f"maitre-test-download-{DOWNLOAD_SIZE}.bin")
    if not os.path.exists(path) or os.path.getsize(path) != DOWNLOAD_SIZE:
        tmp = path + f".{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(pattern(DOWNLOAD_SIZE))
        os.replace(tmp, path)
    return path


def sha256(data):
    return hashlib.sha256(data).hexdigest()
