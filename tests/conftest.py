"""Shared fixtures for maitre's end-to-end tests.

The server under test runs in a forked child (``support.server.start_server``). Set
``MAITRE_TEST_IMPL=waitress`` to run every test against real Waitress 3.0.2 instead of maitre.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from support.server import IMPL, start_server


def pytest_report_header(config):
    return f"server under test: {IMPL} (set MAITRE_TEST_IMPL=waitress to check against Waitress)"


@pytest.fixture
def serve():
    """``serve(app, **kw)`` starts a server child and returns its handle; all stop at teardown."""
    handles = []

    def _serve(app, **kw):
        h = start_server(app, **kw)
        handles.append(h)
        return h

    yield _serve
    for h in handles:
        h.stop()


@pytest.fixture
def test_hooks():
    """For tests that inject faults through the engine's ``test-hooks`` build (``make test``
    builds with it). Without them the test is skipped, or fails when MAITRE_REQUIRE_TEST_HOOKS
    is set (as ``make test`` sets it), so that CI never skips one silently."""
    from maitre import _core

    if not _core.TEST_HOOKS:
        why = "maitre was built without the test-hooks feature (make test builds with it)"
        if os.environ.get("MAITRE_REQUIRE_TEST_HOOKS"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def tmp_sock_path(tmp_path):
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    import tempfile

    d = tempfile.mkdtemp(prefix="maitre-t-")
    yield os.path.join(d, "s.sock")
    import shutil

    shutil.rmtree(d, ignore_errors=True)
