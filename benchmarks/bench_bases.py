"""What each choice of delta base would store on a sequence, and how many decodes it would cost.

    python benchmarks/bench_bases.py [--sequences pretrain,bf16] [--chunk-size-kib 4096]

Every version of a sequence is encoded against every earlier version with the store's own
encoder (``deltastore.codecs``: zigzag difference, planes, zstd; per entry the smaller of
delta and full, as the writer decides; a chunk equal to its base costs nothing), and on its
own.  From those sizes the script adds up what a scheme stores over the whole sequence:

``chain``            every version a delta on the one before (z4ai's delta mode; a restore
                     replays the whole history)
``chain, depth <= D`` the same, stored full every D + 1 versions
``keyframes K``      every delta on the last full version, the next full after K - 1 deltas
                     (the store's scheme, ``delta.KEYFRAME_INTERVAL``)
``two levels K, S``  full every S versions; every K-th version a delta on it; the others
                     deltas on the nearest of those (three decodes at most)

Stored bytes are over the logical bytes of the sequence (not over ``torch.save`` files, whose
pickle framing and small entries ``run.py`` counts).  Also printed: the mean size of a delta
over the distance (in versions) to its base, which is what every scheme trades against the
number of decodes a restore needs.  The sequences come from the ``run.py`` cache.

``--entropy`` adds, for the newest two versions, how close the encoder gets to what the delta
planes allow: the store's bytes (zstd level 1 per plane) against the empirical entropy of each
plane's bytes on their own (order 0), given the previous byte of the plane (order 1), and given
the same element's byte in the neighbouring plane; and z4ai's XOR delta where it is installed.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the suite as the package it is
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import sequences
from deltastore import codecs, tree
from deltastore.chunking import DEFAULT_CHUNK_SIZE, chunk_bounds

#: A version's raw bytes per key path, with the element width to encode them at.
Version = dict[str, tuple[np.ndarray, int]]
#: bases[j] is the version j is a delta on, or None where j is stored full.
Bases = list[int | None]


def versions(sequence: sequences.Sequence) -> list[Version]:
    """Every checkpoint of ``sequence`` as the store sees it: flat byte arrays per key path."""
    out = []
    for i in range(len(sequence.paths)):
        leaves = tree.flatten(sequence.load(i)).leaves
        out.append({path: (np.frombuffer(a.data, np.uint8), a.element_size) for path, a in leaves})
    return out


class Sizes:
    """Encoded sizes of every version, full and as a delta on each earlier version."""

    def __init__(self, data: list[Version], chunk_size: int) -> None:
        self.data = data
        self.chunk_size = chunk_size
        self.full = [{path: self._encode(raw, w) for path, (raw, w) in v.items()} for v in data]
        self.logical = [sum(len(raw) for raw, _ in v.values()) for v in data]
        self._pairs: dict[tuple[int, int], int] = {}

    def _encode(self, raw: np.ndarray, width: int, base: np.ndarray | None = None) -> int:
        total = 0
        for start, stop in chunk_bounds(len(raw), self.chunk_size):
            chunk = memoryview(raw[start:stop])
            if base is None:
                total += len(codecs.encode(chunk, width))
                continue
            old = base[start:stop]
            if np.array_equal(old, raw[start:stop]):
                continue  # the same chunk id: stored once
            total += len(codecs.encode(chunk, width, base=memoryview(old), base_id=bytes(32)))
        return total

    def stored(self, j: int, base: int | None) -> int:
        """Bytes version ``j`` stores on ``base`` (None: on its own)."""
        if base is None:
            return sum(self.full[j].values())
        if (base, j) not in self._pairs:
            total = 0
            for path, (raw, width) in self.data[j].items():
                old = self.data[base].get(path)
                if old is None or len(old[0]) != len(raw) or old[1] != width:
                    total += self.full[j][path]
                elif np.array_equal(old[0], raw):
                    continue
                else:
                    total += min(self._encode(raw, width, old[0]), self.full[j][path])
            self._pairs[base, j] = total
        return self._pairs[base, j]


def chain(n: int, depth: int | None = None) -> Bases:
    if depth is None:
        return [None, *range(n - 1)]
    return [None if j % (depth + 1) == 0 else j - 1 for j in range(n)]


def keyframes(n: int, interval: int) -> Bases:
    return [None if j % interval == 0 else j - j % interval for j in range(n)]


def two_levels(n: int, interval: int, span: int) -> Bases:
    bases: Bases = []
    for j in range(n):
        full = j - j % span
        if j == full:
            bases.append(None)
        elif j % interval == 0 or j - j % interval == full:
            bases.append(full)
        else:
            bases.append(j - j % interval)
    return bases


def decodes(bases: Bases) -> int:
    """The most decodes a version needs: its own and every base below it."""
    worst = 0
    for j in range(len(bases)):
        count, at = 1, bases[j]
        while at is not None:
            count, at = count + 1, bases[at]
        worst = max(worst, count)
    return worst


SCHEMES: list[tuple[str, Callable[[int], Bases]]] = [
    ("chain (z4ai's delta mode)", chain),
    *[(f"chain, depth <= {d}", lambda n, d=d: chain(n, d)) for d in (2, 3, 4)],
    *[(f"keyframes {k}", lambda n, k=k: keyframes(n, k)) for k in (3, 4, 5, 6)],
    *[
        (f"two levels {k}, {s}", lambda n, k=k, s=s: two_levels(n, k, s))
        for k, s in itertools.product((2, 3, 4), (8, 12))
    ],
]


def _entropy_bytes(plane: np.ndarray, context: np.ndarray | None = None) -> float:
    """Bytes an ideal coder needs for ``plane``, knowing ``context`` (one byte per byte)."""
    if context is None:
        context = np.zeros_like(plane)
    joint = np.bincount(context.astype(np.int64) * 256 + plane, minlength=65536)
    counts = joint.reshape(256, 256).astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = -np.nansum(counts * np.log2(np.where(counts > 0, counts / rows, 1)))
    return float(bits) / 8


def entropy_report(data: list[Version]) -> None:
    """The newest delta of each changed float entry: the store's size against entropy bounds."""
    from deltastore._native import split_planes, zigzag_diff  # what the encoder runs

    old, new = data[-2], data[-1]
    totals = dict.fromkeys(("raw", "store", "order 0", "order 1", "cross-plane", "z4ai"), 0.0)
    try:
        import z4ai  # type: ignore[import-not-found]
    except ImportError:
        z4ai = None
    for path, (raw, width) in new.items():
        if width not in (2, 4) or path not in old or len(raw) < 1024:
            continue
        base = old[path][0]
        if len(base) != len(raw) or np.array_equal(base, raw):
            continue
        diff = np.empty_like(raw)
        zigzag_diff(raw, base, diff, width)
        split = np.empty_like(raw)
        split_planes(diff, split, width)
        planes = split.reshape(width, -1)
        totals["raw"] += len(raw)
        totals["store"] += len(codecs.encode(memoryview(raw), width, base=base, base_id=bytes(32)))
        for i, plane in enumerate(planes):
            totals["order 0"] += _entropy_bytes(plane)
            totals["order 1"] += _entropy_bytes(plane[1:], plane[:-1])
            totals["cross-plane"] += _entropy_bytes(plane, planes[i - 1])
        if z4ai is not None:
            kind = {2: "bf16", 4: "fp32"}[width]
            totals["z4ai"] += len(z4ai.compress(np.bitwise_xor(raw, base).tobytes(), dtype=kind))
    print(f"  newest delta, changed float entries ({totals['raw'] / 2**20:.0f} MiB), over raw:")
    for label, value in totals.items():
        if label != "raw" and (label != "z4ai" or z4ai is not None):
            print(f"    {label:<12} {value / totals['raw']:.4f}")


def report(name: str, sizes: Sizes) -> None:
    n = len(sizes.data)
    logical = sum(sizes.logical)
    print(f"{name}: {n} versions, {logical / 2**20:.0f} MiB logical")
    full = sum(sizes.stored(j, None) for j in range(n)) / logical
    by_distance = []
    for d in range(1, n):
        stored = sum(sizes.stored(j, j - d) for j in range(d, n))
        by_distance.append(stored / sum(sizes.logical[d:]))
    print(f"  every version full: {full:.4f}")
    print(
        "  a delta over its base's distance: "
        + ", ".join(f"{d}: {r:.3f}" for d, r in enumerate(by_distance, start=1))
    )
    print(f"  {'scheme':<28} {'stored':>8} {'decodes':>8}")
    for label, make in SCHEMES:
        bases = make(n)
        stored = sum(sizes.stored(j, bases[j]) for j in range(n)) / logical
        print(f"  {label:<28} {stored:>8.4f} {decodes(bases):>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", default="pretrain,bf16")
    parser.add_argument("--chunk-size-kib", type=int, default=DEFAULT_CHUNK_SIZE >> 10)
    parser.add_argument("--entropy", action="store_true", help="add the entropy bounds")
    args = parser.parse_args()
    made = sequences.make_sequences(sequences.FULL, sequences.default_cache())
    for name in args.sequences.split(","):
        data = versions(made[name])
        report(name, Sizes(data, args.chunk_size_kib << 10))
        if args.entropy:
            entropy_report(data)


if __name__ == "__main__":
    main()
