#!/usr/bin/env bash
# The test command: lint, types, layer contracts, native sanitizers, then the test suite.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "no .venv: run 'bash scripts/setup.sh' first" >&2
  exit 2
fi
echo "== ruff";          "$PY" -m ruff check .
echo "== mypy";          "$PY" -m mypy
echo "== import-linter"; .venv/bin/lint-imports
if [ -f native/sanitize.sh ]; then
  echo "== native kernels under AddressSanitizer + UBSan"; bash native/sanitize.sh
fi
if command -v clang >/dev/null; then
  echo "== native kernels fuzzed with libFuzzer"; bash native/fuzz.sh 10
else
  echo "== native fuzzing skipped: no clang (scripts/setup.sh installs it when run as root)"
fi
echo "== benchmark smoke test (numbers are not judged here)"
"$PY" benchmarks/run.py --quick --results "${TMPDIR:-/tmp}/deltastore-bench-smoke" >/dev/null
echo "== pytest";        "$PY" -m pytest "$@"
