#!/usr/bin/env bash
# Build the plane kernels with their C test driver under AddressSanitizer and UBSan,
# and run it. Multiversioning (ifunc) is switched off: the sanitizers check the
# portable code path, which shares every loop with the AVX2 clone.
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
${CC:-cc} -std=c11 -O1 -g -Wall -Wextra -Werror -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=all -DDS_NO_MULTIVERSION \
  -I. planes.c test_planes.c -o "$out/test_planes"
ASAN_OPTIONS=detect_leaks=1 "$out/test_planes"
