#!/usr/bin/env bash
# One command from a fresh clone: make .venv, build and install deltastore (with its C
# extension), torch==2.13.0, the dev tools and (as root, with apt-get) clang for fuzzing,
# then run the demo.
#   bash scripts/setup.sh            # set up and run the demo
#   bash scripts/setup.sh --no-demo  # set up only
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch is pinned in the same pip command: an unpinned torch pulled in by another
# package would download a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  "torch==2.13.0" -e ".[dev,bench]"

# clang with libFuzzer, for the fuzzing of the C kernels in the test command (native/fuzz.sh).
if ! command -v clang >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q clang libclang-rt-14-dev >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q clang libclang-rt-14-dev >/dev/null; } ||
    echo "setup: could not install clang; the test command will skip fuzzing" >&2
fi

if [ "${1:-}" != "--no-demo" ]; then
  .venv/bin/python -m deltastore.demo
fi
