"""Restore time of every version of a checkpoint sequence, against torch.load of the same version.

    python benchmarks/bench_restore.py [--sequences pretrain,bf16] [--repeat 5]

The claim behind the delta scheme (docs/decisions.md, "Delta base"): restoring a version
costs at most two decodes per chunk, its keyframe and its own delta, however long the history,
so no version restores much slower than another.  ``run.py`` times only the newest and the
oldest version; this times each one.  Every checkpoint of a sequence is saved into a fresh
store (``durable=False``: the figures here are restores, and the writes only need to land),
then each version is restored ``--repeat`` times after one warm-up restore, timed as
``measure.py`` times (page cache synced, collector paused), and the median is divided by the
median ``torch.load`` of that version's file (page cache warm for both).
Prints one row per version, the worst and mean ratio, and the slowest restore over the median
``torch.load`` of all versions (they are the same size).  The sequences come from the
``run.py`` cache (trained on first use).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the suite as the package it is
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import deltastore
from benchmarks import sequences
from benchmarks.measure import median_seconds


def measure(sequence: sequences.Sequence, work: Path, repeat: int) -> list[tuple[float, float]]:
    """(deltastore restore s, torch.load s) of each version, oldest first."""
    root = work / sequence.name
    with deltastore.open(root, create=True, progress=False, durable=False) as store:
        ids = [store.save(sequence.load(i), f"{i}") for i in range(len(sequence.paths))]
        rows = []
        for checkpoint_id, path in zip(ids, sequence.paths, strict=True):
            store.load(checkpoint_id)  # page cache warm for both
            torch.load(path, weights_only=True)
            restore = median_seconds(lambda c=checkpoint_id: store.load(c), repeat)
            load = median_seconds(lambda p=path: torch.load(p, weights_only=True), repeat)
            rows.append((restore, load))
    shutil.rmtree(root)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", default="pretrain,bf16")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temp folder)")
    args = parser.parse_args()
    made = sequences.make_sequences(sequences.FULL, sequences.default_cache())
    work = Path(tempfile.mkdtemp(prefix="ds-restore-", dir=args.dir))
    try:
        for name in args.sequences.split(","):
            rows = measure(made[name], work, args.repeat)
            ratios = [restore / load for restore, load in rows]
            print(f"{name}: {len(rows)} versions, median of {args.repeat}")
            print(f"  {'version':>7} {'restore s':>10} {'torch.load s':>13} {'x':>6}")
            for i, ((restore, load), ratio) in enumerate(zip(rows, ratios, strict=True)):
                print(f"  {i:>7} {restore:>10.4f} {load:>13.4f} {ratio:>6.2f}")
            print(f"  worst {max(ratios):.2f}x, mean {statistics.mean(ratios):.2f}x torch.load")
            # Every version has the same size: the median load of all of them is a steadier
            # baseline than each version's own, which swings ~1.5x here from one to the next.
            typical = statistics.median(load for _, load in rows)
            slowest = max(restore for restore, _ in rows)
            print(f"  slowest restore {slowest:.4f} s: {slowest / typical:.2f}x median torch.load")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
