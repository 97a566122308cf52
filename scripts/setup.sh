#!/usr/bin/env bash
# One command from a fresh clone: make .venv, build and install deltastore (with its C
# extension), torch==2.13.0 and the dev tools, then run the demo.
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

if [ "${1:-}" != "--no-demo" ]; then
  .venv/bin/python -m deltastore.demo
fi
