#!/usr/bin/env bash
# Sets up everything maitre needs on a fresh machine (Rust toolchain, Python 3.9+, pip):
# a virtualenv in .venv with the build and test dependencies, and maitre built into it.
# Idempotent: run it again after changing the Rust code to rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r requirements-dev.txt
# Build the extension in release mode and install the package (editable) into the venv.
# MAITRE_FEATURES adds cargo features: `make test` builds with `test-hooks` (fault injection
# for the tests); `make run` and `make bench` build without.
FEATURES="python,pyo3/extension-module${MAITRE_FEATURES:+,$MAITRE_FEATURES}"
maturin develop --release --quiet --features "$FEATURES" 2>&1 | grep -v "^📦\|^🔗\|^🐍\|^🍹" || true
python -c "import maitre._core" 
