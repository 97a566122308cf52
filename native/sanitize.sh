#!/usr/bin/env bash
# Builds the plane kernels with their C test driver (test_planes.c) under AddressSanitizer and
# UBSan and runs it, once per code path: AVX2 (when this CPU has it), SSE2 alone, portable loops
# alone. Exits non-zero on the first failure.
#   bash native/sanitize.sh          # CC=clang to use another compiler
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for variant in default DS_NO_AVX2 DS_PORTABLE; do
  define=()
  if [ "$variant" != default ]; then define=("-D$variant"); fi
  echo "-- $variant"
  "${CC:-cc}" -std=c11 -O1 -g -Wall -Wextra -Werror -fno-omit-frame-pointer \
    -fsanitize=address,undefined -fno-sanitize-recover=all "${define[@]}" \
    -I. planes.c test_planes.c -o "$out/test_planes"
  ASAN_OPTIONS=detect_leaks=1 "$out/test_planes"
done
