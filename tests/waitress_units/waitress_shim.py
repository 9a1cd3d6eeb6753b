"""pytest plugin that runs Waitress's own unit tests against maitre.

Loaded with ``-p waitress_shim`` by ``test_waitress_units.py`` in a pytest
subprocess whose working directory is the unpacked Waitress 3.0.2 sdist.
It makes ``waitress``, ``waitress.adjustments``, ``waitress.runner``,
``waitress.proxy_headers`` and ``waitress.utilities`` *be* the maitre modules
(the same module objects, entered in ``sys.modules`` under the Waitress
names), so the real ``waitress`` distribution installed in the venv is never
exercised. ``waitress.compat`` (test_adjustments reads ``WIN`` from it) is
loaded from the sdist's own file, which only uses the standard library. Any
other ``waitress.*`` import fails loudly instead of falling back to Waitress.
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys

ALIASES = {
    "waitress": "maitre",
    "waitress.adjustments": "maitre.adjustments",
    "waitress.runner": "maitre.runner",
    "waitress.proxy_headers": "maitre.proxy_headers",
    "waitress.utilities": "maitre.utilities",
}


class _RefuseRealWaitress(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == "waitress" or fullname.startswith("waitress."):
            raise ImportError(
                f"{fullname} is not mapped to maitre by the waitress_shim plugin",
                name=fullname,
            )


def _install():
    for name in [n for n in sys.modules if n == "waitress" or n.startswith("waitress.")]:
        del sys.modules[name]
    for waitress_name, maitre_name in ALIASES.items():
        sys.modules[waitress_name] = importlib.import_module(maitre_name)

    sdist = os.environ.get("MAITRE_WAITRESS_SDIST", os.getcwd())
    compat_path = os.path.join(sdist, "src", "waitress", "compat.py")
    spec = importlib.util.spec_from_file_location("waitress.compat", compat_path)
    compat = importlib.util.module_from_spec(spec)
    sys.modules["waitress.compat"] = compat
    spec.loader.exec_module(compat)

    sys.meta_path.insert(0, _RefuseRealWaitress())


_install()


def pytest_report_header(config):
    lines = []
    for waitress_name in sorted(ALIASES):
        module = sys.modules[waitress_name]
        lines.append(
            f"waitress_shim: {waitress_name} -> {module.__name__} "
            f"({getattr(module, '__file__', '?')})"
        )
    return lines


def pytest_configure(config):
    for waitress_name, maitre_name in ALIASES.items():
        if sys.modules.get(waitress_name) is not sys.modules[maitre_name]:
            raise RuntimeError(f"waitress_shim: {waitress_name} is not {maitre_name}")
