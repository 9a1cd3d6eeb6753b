#!/usr/bin/env bash
# A short fuzz smoke for the test command: every target over its committed seeds, then 8 s of
# fuzzing each (about 25 s in all once built). Longer runs: scripts/fuzz.sh TARGET SECONDS.
set -euo pipefail
exec "$(dirname "$0")/fuzz.sh" all "${FUZZ_SMOKE_SECONDS:-8}"
