"""Comparing two checkpoints entry by entry: what was added, removed, retyped or changed.

Entries are matched by key path.  Whether an entry is identical is read from
the catalog alone: same dtype, same shape and same digest (the BLAKE3 of its
chunk ids, which are BLAKE3s of the raw bytes) mean the same bytes, so a diff
of two checkpoints that share most of their weights decodes only what
changed.  Changed entries are decoded in batches of at most ``BATCH_BYTES``
per side (all their chunks in parallel) and measured by ``array_diff``.

An entry ``thin`` removed from one side (or both) is ``thinned``, not added
or removed: the catalog no longer lists it, but that side's manifest, which
is immutable, still does.  The store hands both sides over as the catalog
lists them (``load.ListedCheckpoint``), which names the thinned entries.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from deltastore import arrays
from deltastore.array_diff import ArrayDifference, ElementType, compare_arrays
from deltastore.errors import CorruptObjectError
from deltastore.info import CheckpointInfo, EntryInfo
from deltastore.load import CheckpointReader, ListedCheckpoint
from deltastore.manifest import Manifest, ManifestEntry
from deltastore.progress import Progress, ProgressFactory

ADDED = "added"
REMOVED = "removed"
CHANGED_TYPE = "changed_type"
CHANGED = "changed"
IDENTICAL = "identical"
THINNED = "thinned"
#: Every entry status, in the order of the JSON summary.
STATUSES = (ADDED, REMOVED, CHANGED_TYPE, CHANGED, IDENTICAL, THINNED)

#: Raw bytes of changed entries decoded at once per side: bounds the diff's memory
#: to about twice this, whatever the model's size (one larger entry is its own batch).
BATCH_BYTES = 256 << 20


@dataclass(frozen=True)
class EntryDiff:
    """One key path in either checkpoint; ``a``/``b`` are None where it is absent.

    A THINNED entry names the sides ``thin`` removed it from in ``thinned_in``
    ("a", "b" or both); its other side, if it has the entry, is in ``a``/``b``.
    """

    key_path: str
    status: str  # one of STATUSES
    a: EntryInfo | None
    b: EntryInfo | None
    stats: ArrayDifference | None = None  # set for CHANGED only
    thinned_in: tuple[str, ...] = ()

    @property
    def relative(self) -> float | None:
        return None if self.stats is None else self.stats.relative

    def to_json(self) -> dict[str, Any]:
        def side(entry: EntryInfo | None) -> dict[str, Any] | None:
            if entry is None:
                return None
            return {"dtype": entry.dtype, "shape": list(entry.shape), "nbytes": entry.nbytes}

        return {
            "key_path": self.key_path,
            "status": self.status,
            "a": side(self.a),
            "b": side(self.b),
            "stats": None if self.stats is None else self.stats.to_json(),
            "thinned_in": list(self.thinned_in),
        }


@dataclass(frozen=True)
class MetricDelta:
    """A metric in either checkpoint; ``delta`` is ``b - a`` when both have it."""

    name: str
    a: float | int | None
    b: float | int | None

    @property
    def status(self) -> str:
        if self.a is None:
            return ADDED
        if self.b is None:
            return REMOVED
        same = self.a == self.b or (math.isnan(self.a) and math.isnan(self.b))
        return IDENTICAL if same else CHANGED

    @property
    def delta(self) -> float | int | None:
        return None if self.a is None or self.b is None else self.b - self.a

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "a": self.a,
            "b": self.b,
            "delta": self.delta,
        }


@dataclass(frozen=True)
class CheckpointDiff:
    """How checkpoint ``b`` differs from ``a``.

    ``entries`` come largest change first: added, removed and retyped entries,
    then changed ones by relative change (NaN first, then inf, then
    descending; integer and bool entries, which have none, by the fraction
    of elements changed), then thinned ones, then identical ones; ties keep
    checkpoint order.
    """

    a: CheckpointInfo
    b: CheckpointInfo
    prefix: str | None
    entries: list[EntryDiff]
    metrics: list[MetricDelta]

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    def to_json(self) -> dict[str, Any]:
        def side(info: CheckpointInfo) -> dict[str, Any]:
            return {"id": info.id, "step": info.step, "message": info.message}

        return {
            "a": side(self.a),
            "b": side(self.b),
            "prefix": self.prefix,
            "summary": {status: self.count(status) for status in STATUSES},
            "entries": [e.to_json() for e in self.entries],
            "metrics": [m.to_json() for m in self.metrics],
        }


def classify(
    entries_a: list[EntryInfo],
    entries_b: list[EntryInfo],
    prefix: str | None = None,
    thinned: tuple[Collection[str], Collection[str]] = ((), ()),
) -> list[EntryDiff]:
    """Match entries by key path and say what happened to each, from catalog facts alone.

    ``thinned``: the key paths each side's manifest lists and its catalog rows
    no longer have (``thin`` removed them); those entries are THINNED, first
    in the order of a's manifest, then b's.
    """
    wanted = (lambda path: path.startswith(prefix)) if prefix else (lambda path: True)
    gone = {
        path: tuple(side for side, paths in zip("ab", thinned, strict=True) if path in paths)
        for path in (*thinned[0], *thinned[1])
        if wanted(path)
    }
    by_path_a = {e.key_path: e for e in entries_a}
    by_path_b = {e.key_path: e for e in entries_b if wanted(e.key_path)}
    result = [
        EntryDiff(path, THINNED, by_path_a.get(path), by_path_b.pop(path, None), None, sides)
        for path, sides in gone.items()
    ]
    for a in entries_a:
        if not wanted(a.key_path) or a.key_path in gone:
            continue
        b = by_path_b.pop(a.key_path, None)
        if b is None:
            result.append(EntryDiff(a.key_path, REMOVED, a, None))
        elif (a.dtype, a.shape) != (b.dtype, b.shape):
            result.append(EntryDiff(a.key_path, CHANGED_TYPE, a, b))
        elif a.digest == b.digest and a.nbytes == b.nbytes:
            result.append(EntryDiff(a.key_path, IDENTICAL, a, b))
        else:
            result.append(EntryDiff(a.key_path, CHANGED, a, b))
    result.extend(EntryDiff(b.key_path, ADDED, None, b) for b in by_path_b.values())
    return result


def compare_metrics(a: dict[str, float | int], b: dict[str, float | int]) -> list[MetricDelta]:
    """Every metric of either checkpoint: a's in their order, then those only b has."""
    return [MetricDelta(name, a.get(name), b.get(name)) for name in {**a, **b}]


def _rank(entry: EntryDiff) -> tuple[int, float]:
    if entry.status in (ADDED, REMOVED, CHANGED_TYPE):
        return (0, 0.0)
    if entry.status == THINNED:  # nothing to measure, and no news: thin was asked for
        return (4, 0.0)
    if entry.status == IDENTICAL or entry.stats is None:
        return (5, 0.0)
    relative = entry.stats.relative
    if relative is None:
        return (3, -entry.stats.changed_fraction)
    if math.isnan(relative):
        return (1, 0.0)
    return (2, -relative)


def _batches(changed: list[EntryDiff]) -> Iterator[list[EntryDiff]]:
    batch: list[EntryDiff] = []
    size = 0
    for entry in changed:
        assert entry.a is not None
        if batch and size + entry.a.nbytes > BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry.a.nbytes
    if batch:
        yield batch


class CheckpointComparer:
    """Runs a diff with the store's reader and thread pool."""

    def __init__(self, reader: CheckpointReader, progress: ProgressFactory) -> None:
        self.reader = reader
        self.progress = progress

    def diff(
        self, a: ListedCheckpoint, b: ListedCheckpoint, prefix: str | None = None
    ) -> CheckpointDiff:
        if a.entries is None or b.entries is None:
            raise ValueError("diff needs both checkpoints read with their entry rows")
        classified = classify(a.entries, b.entries, prefix, (a.thinned, b.thinned))
        sides = [_Side.of(a), _Side.of(b)]
        stats = self._measure(sides, [e for e in classified if e.status == CHANGED])
        measured = [
            dataclasses.replace(e, stats=stats[e.key_path]) if e.key_path in stats else e
            for e in classified
        ]
        measured.sort(key=_rank)
        return CheckpointDiff(
            a.info, b.info, prefix, measured, compare_metrics(a.info.metrics, b.info.metrics)
        )

    def _measure(self, sides: list[_Side], changed: list[EntryDiff]) -> dict[str, ArrayDifference]:
        """Decode the changed entries of both sides, batch by batch, and compare them."""
        if not changed:
            return {}
        total = 2 * sum(e.a.nbytes for e in changed if e.a)  # a changed entry keeps its size
        result: dict[str, ArrayDifference] = {}
        with self.progress(total, "diff") as progress:
            for batch in _batches(changed):
                result.update(self._measure_batch(sides, batch, progress))
        return result

    def _measure_batch(
        self, sides: list[_Side], batch: list[EntryDiff], progress: Progress | None
    ) -> dict[str, ArrayDifference]:
        """One batch: its arrays live only while this runs."""
        side_a, side_b = sides
        wanted = [side_a.entry(e.key_path) for e in batch]
        values_a = self.reader.restore_entries(side_a.id, side_a.manifest, wanted, progress)
        values_b = self.reader.restore_entries(
            side_b.id, side_b.manifest, [side_b.entry(e.key_path) for e in batch], progress
        )
        pairs = [
            (
                ElementType.of(entry.kind, entry.dtype),
                arrays.to_bytes(value_a, entry.key_path).data,
                arrays.to_bytes(value_b, entry.key_path).data,
            )
            for entry, value_a, value_b in zip(wanted, values_a, values_b, strict=True)
        ]
        differences = compare_arrays(pairs, self.reader.pool)
        return dict(zip((e.key_path for e in batch), differences, strict=True))


@dataclass(frozen=True)
class _Side:
    """One checkpoint of a diff, with its manifest entries by key path."""

    id: str
    manifest: Manifest
    by_path: dict[str, ManifestEntry]

    @classmethod
    def of(cls, listed: ListedCheckpoint) -> _Side:
        m = listed.manifest
        return cls(listed.id, m, {e.key_path: e for e in m.entries})

    def entry(self, key_path: str) -> ManifestEntry:
        found = self.by_path.get(key_path)
        if found is None:  # the catalog is an index of the manifests: they must agree
            raise CorruptObjectError(
                self.id,
                f"the manifest has no entry {key_path!r}, which the catalog lists",
                checkpoint_id=self.id,
                key_path=key_path,
            )
        return found
