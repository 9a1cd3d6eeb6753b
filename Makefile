# maitre: the two README commands are `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-test system-deps run test lint test-rust test-fuzz test-python stress bench clean

setup:
	bash scripts/setup.sh

# The same, with the engine's fault-injection hooks (the `test-hooks` cargo feature) built in.
setup-test:
	MAITRE_FEATURES=test-hooks bash scripts/setup.sh

# Serve the demo app on http://127.0.0.1:8080
run: setup
	$(VENV)/bin/maitre-serve --listen=127.0.0.1:8080 maitre.demo:app

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	cargo clippy --all-targets --features python,test-hooks -- -D warnings
	$(VENV)/bin/ruff check python tests bench scripts

test-rust:
	cargo test --quiet

# A short run of each fuzz target over its committed corpus (scripts/fuzz.sh for long runs).
test-fuzz:
	bash scripts/fuzz-smoke.sh

test-python:
	$(PY) -m pytest -q -p no:cacheprovider -m "not stress" tests

system-deps:
	bash scripts/system-deps.sh

# Tests that inject faults fail, rather than skip, when the hooks are missing.
test: export MAITRE_REQUIRE_TEST_HOOKS = 1
test: setup-test system-deps lint test-rust test-fuzz test-python

# The latency and throughput bounds (tests marked stress), which need a quiet machine; not part
# of `make test`.
stress: setup
	$(PY) -m pytest -q -p no:cacheprovider -m stress tests

# The full benchmark (about 25 minutes): installs wrk, nginx and the peers (bench/.venv), then
# rewrites docs/benchmarks.md and docs/bench.png. Options: make bench BENCH_ARGS="--repeat 3".
bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf target $(VENV) .waitress
