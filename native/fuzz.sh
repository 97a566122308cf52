#!/usr/bin/env bash
# Coverage-guided fuzzing of the plane kernels with libFuzzer, under AddressSanitizer and UBSan,
# once per code path (AVX2 where the CPU has it, SSE2 alone, portable loops alone).
#   bash native/fuzz.sh [SECONDS_PER_PATH]     # default 10; needs clang with libFuzzer
# Exits non-zero on the first crash or mismatch (libFuzzer writes the input as crash-*).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-10}
if ! command -v clang >/dev/null; then
  echo "fuzz.sh: clang not found (scripts/setup.sh installs it with apt-get as root)" >&2
  exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for variant in default DS_NO_AVX2 DS_PORTABLE; do
  define=()
  if [ "$variant" != default ]; then define=("-D$variant"); fi
  echo "-- $variant: ${seconds}s"
  clang -std=c11 -O1 -g -Wall -Wextra -Werror -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all "${define[@]}" \
    -I. planes.c fuzz_planes.c -o "$out/fuzz_planes"
  mkdir -p "$out/corpus-$variant"
  status=0
  "$out/fuzz_planes" -max_total_time="$seconds" -max_len=70000 -print_final_stats=1 \
    -artifact_prefix="$out/" "$out/corpus-$variant" >"$out/log" 2>&1 || status=$?
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$out/log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$out/log" >&2
    cp "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-* . 2>/dev/null || true
    echo "fuzz.sh: the fuzzer failed on $variant (status $status); its input is in native/" >&2
    exit 1
  fi
done
