#!/usr/bin/env bash
# Installs the Debian packages the tests use (wrk for the benchmark smoke, strace to observe
# sendfile), when they are missing and this machine can install them (root with apt-get).
# Tests that need a missing tool skip with a message instead of failing.
set -uo pipefail
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v strace >/dev/null 2>&1 || need+=(strace)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${need[*]} (not root or no apt-get); the tests that need them will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || echo "system-deps: could not install ${need[*]}" >&2
exit 0
