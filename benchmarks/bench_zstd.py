"""Which zstd parameters for byte planes: ratio and speed on the benchmark's real checkpoints.

    python benchmarks/bench_zstd.py [--sequences pretrain,finetune,bf16] [--rounds 2]

Splits every delta-eligible tensor of a sequence's newest checkpoint into 1 MiB chunks and
their byte planes, as the store does, once in full and once as the zigzag difference from
the checkpoint before, and compresses every plane with each parameter set (one thread).
Prints the stored fraction (a plane that does not shrink counts at its size, as the store
keeps it raw) and MB/s of plane bytes.  The sequences come from the ``run.py`` cache
(trained on first use).  docs/decisions.md has the numbers that chose ``ZSTD_PARAMETERS``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import sequences
from deltastore import _native
from deltastore.chunking import DEFAULT_CHUNK_SIZE
from deltastore.codecs.chunk import ZSTD_PARAMETERS
from deltastore.delta import MIN_DELTA_BYTES

_FAST: dict[str, Any] = {"strategy": zstandard.STRATEGY_FAST, "write_checksum": 0}
CANDIDATES: dict[str, dict[str, Any]] = {
    "store (ZSTD_PARAMETERS)": ZSTD_PARAMETERS,
    "hash_log 14 (before)": {**_FAST, "min_match": 7, "window_log": 17, "hash_log": 14},
    "hash_log 10": {**_FAST, "min_match": 7, "window_log": 17, "hash_log": 10},
    "hash_log 8": {**_FAST, "min_match": 7, "window_log": 17, "hash_log": 8},
    "hash_log 6, min_match 5": {**_FAST, "min_match": 5, "window_log": 17, "hash_log": 6},
    "level 1 defaults": {"compression_level": 1, "write_checksum": 0},
}


def tensors(state: Any) -> list[torch.Tensor]:
    """Every tensor of a checkpoint, in tree order."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        state = list(state.values())
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in tensors(item)]
    return []


def planes(newest: Any, before: Any | None) -> list[memoryview]:
    """The byte planes the store would compress: full chunks, or zigzag deltas on ``before``."""
    result: list[memoryview] = []
    olds = tensors(before) if before is not None else None
    for k, t in enumerate(tensors(newest)):
        width = t.element_size()
        raw = t.contiguous().view(-1).view(torch.uint8).numpy()
        if width < 2 or len(raw) < MIN_DELTA_BYTES:
            continue
        base = None if olds is None else olds[k].contiguous().view(-1).view(torch.uint8).numpy()
        for start in range(0, len(raw), DEFAULT_CHUNK_SIZE):
            chunk = raw[start : start + DEFAULT_CHUNK_SIZE]
            if base is not None:
                diff = np.empty_like(chunk)
                _native.zigzag_diff(chunk, base[start : start + DEFAULT_CHUNK_SIZE], diff, width)
                chunk = diff
            split = np.empty_like(chunk)
            _native.split_planes(chunk, split, width)
            n = len(chunk) // width
            result.extend(memoryview(split)[p * n : (p + 1) * n] for p in range(width))
    return result


def measure(
    all_planes: list[memoryview], params: dict[str, Any], rounds: int
) -> tuple[float, float]:
    """(stored fraction, MB/s) of compressing every plane with ``params``."""
    compressor = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters(**params)
    )
    total = sum(len(p) for p in all_planes)
    best, stored = float("inf"), 0
    for _ in range(rounds):
        start, stored = time.perf_counter(), 0
        for plane in all_planes:
            stored += min(len(compressor.compress(plane)), len(plane))
        best = min(best, time.perf_counter() - start)
    return stored / total, total / best / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sequences", default="pretrain,finetune,bf16")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (best is kept)")
    args = parser.parse_args()
    made = sequences.make_sequences(sequences.FULL, sequences.default_cache())
    print(f"{'sequence':9} {'chunks':6} {'parameters':26} {'stored':>7} {'MB/s':>7}")
    for name in args.sequences.split(","):
        seq = made[name]
        newest, before = seq.load(len(seq.paths) - 1), seq.load(len(seq.paths) - 2)
        for kind, base in (("full", None), ("delta", before)):
            all_planes = planes(newest, base)
            for label, params in CANDIDATES.items():
                ratio, speed = measure(all_planes, params, args.rounds)
                print(f"{name:9} {kind:6} {label:26} {ratio:7.4f} {speed:7.0f}", flush=True)


if __name__ == "__main__":
    main()
