"""Which chunk a new chunk is stored as a delta against, and where its bytes come from.

The base of chunk ``i`` of entry ``path`` is chunk ``i`` of the same entry in
the parent checkpoint, when dtype and shape match (docs/format.md).  Delta
chains are bounded: a chunk whose base already sits ``MAX_DEPTH`` decodes
deep is stored full (a keyframe), so restoring any version costs at most
``MAX_DEPTH + 1`` decodes per chunk however long the history grows.

A save reads its bases from :class:`RecentChunks`, the raw bytes this process
saved last on the branch, so a training loop never reads its parent back from
disk; only the first save after a restart decodes the parent's chunks.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from deltastore.arrays import ArrayBytes
from deltastore.catalog.queries import EntryChunks

#: Longest delta chain a writer creates (see docs/design-delta.md for the measurement).
MAX_DEPTH = 8
#: Entries smaller than this are stored full: a delta would save a few bytes at
#: the cost of a base lookup, and a copy kept in memory.
MIN_DELTA_BYTES = 4096


@dataclass(frozen=True)
class Base:
    id: str
    depth: int


def delta_eligible(arr: ArrayBytes) -> bool:
    """Entries worth a delta: multi-byte elements (floats, mostly) of some size."""
    return arr.element_size >= 2 and len(arr.data) >= MIN_DELTA_BYTES


def plan_bases(
    leaves: Sequence[tuple[str, ArrayBytes]],
    chunk_counts: Sequence[int],
    parent: dict[str, EntryChunks],
    depths: dict[str, int],
) -> list[list[Base | None]]:
    """For every chunk of every leaf, its delta base (or None for a full object)."""
    plan: list[list[Base | None]] = []
    for (path, arr), count in zip(leaves, chunk_counts, strict=True):
        before = parent.get(path)
        if (
            before is None
            or not delta_eligible(arr)
            or before.dtype != arr.dtype
            or before.shape != arr.shape
            or len(before.chunk_ids) != count
        ):
            plan.append([None] * count)
            continue
        row: list[Base | None] = []
        for base_id in before.chunk_ids:
            depth = depths.get(base_id)
            row.append(None if depth is None or depth >= MAX_DEPTH else Base(base_id, depth))
        plan.append(row)
    return plan


class RecentChunks:
    """Raw bytes of the delta-eligible chunks last saved on each branch by this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_branch: dict[str, tuple[str, dict[str, bytes]]] = {}

    def for_parent(self, branch: str, parent_id: str | None) -> dict[str, bytes]:
        """The cached chunks if they are the parent's, else an empty dict."""
        with self._lock:
            cached = self._by_branch.get(branch)
        if cached is None or cached[0] != parent_id:
            return {}
        return cached[1]

    def remember(self, branch: str, checkpoint_id: str, chunks: dict[str, bytes]) -> None:
        with self._lock:
            self._by_branch[branch] = (checkpoint_id, chunks)

    def forget(self, branch: str) -> None:
        with self._lock:
            self._by_branch.pop(branch, None)
