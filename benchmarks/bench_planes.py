"""Speed of the native plane kernels on one chunk, one thread.

    python benchmarks/bench_planes.py [--size-kib 1024] [--rounds 15] [--widths 1,2,4,8,16]

Prints GB/s (chunk bytes per second) of ``split_planes`` and ``merge_planes`` per
element width, plain and with an XOR base, beside the numpy reference's split.
Each figure is the best of ``--rounds`` timed rounds: a chunk lives in cache, so
the best round is the one other processes disturbed least.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from deltastore import _native
from deltastore.codecs.reference import split_planes_reference


def best_seconds(fn: Callable[[], object], rounds: int, calls: int) -> float:
    """Fastest mean seconds per call of ``fn`` over ``rounds`` rounds of ``calls`` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def rates(width: int, src: np.ndarray, base: np.ndarray, rounds: int, calls: int) -> list[float]:
    """GB/s of each kernel at ``width``, on as much of ``src`` as fills whole elements."""
    size = len(src) // width * width
    src, base = src[:size], base[:size]
    split, merged = np.empty_like(src), np.empty_like(src)
    n_elems = size // width
    planes = [split[p * n_elems : (p + 1) * n_elems] for p in range(width)]
    kernels: list[Callable[[], object]] = [
        lambda: _native.split_planes(src, split, width),
        lambda: _native.split_planes(src, split, width, base),
        lambda: _native.merge_planes(planes, merged, width),
        lambda: _native.merge_planes(planes, merged, width, base),
        lambda: split_planes_reference(src, width),
    ]
    return [size / best_seconds(kernel, rounds, calls) / 1e9 for kernel in kernels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-kib", type=int, default=1024, help="chunk size (default 1 MiB)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per figure")
    parser.add_argument("--widths", default="1,2,4,8,16", help="element widths, comma-separated")
    args = parser.parse_args()

    size = args.size_kib * 1024
    rng = np.random.default_rng(0)
    # float32 weights and a slightly trained base: the bytes a delta save sees
    weights = rng.standard_normal(size // 4, dtype=np.float32)
    src = weights.view(np.uint8)
    base = (weights * np.float32(0.999)).view(np.uint8)
    calls = max(1, (256 << 20) // size // args.rounds)  # ~256 MiB through each kernel

    print(f"chunk {size} bytes, best of {args.rounds} rounds x {calls} calls, GB/s")
    header = ("width", "split", "split xor", "merge", "merge xor", "numpy split")
    print("".join(f"{h:>12}" for h in header))
    for width in (int(w) for w in args.widths.split(",")):
        row = rates(width, src, base, args.rounds, calls)
        print(f"{width:>12}" + "".join(f"{rate:>12.1f}" for rate in row))


if __name__ == "__main__":
    main()
