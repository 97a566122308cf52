"""Which chunk a new chunk is stored as a delta against, and where its bytes come from.

Every delta is taken against a keyframe: the full object of the same chunk
(same entry path and index, same dtype and shape) that the parent's version
of the chunk is, or is a delta of.  A keyframe takes at most
``KEYFRAME_INTERVAL - 1`` deltas; the next changed version of the chunk is
stored full and becomes the next keyframe.  So restoring any version costs
at most two decodes per chunk (its keyframe and its own delta) however long
the history grows, and a delta spans at most ``KEYFRAME_INTERVAL - 1``
versions of drift.  Measured against deltas on the parent with chains capped
at two (three decodes): the same bytes stored within half a point, and the
slowest restore a third faster (docs/decisions.md).

A save reads its bases from :class:`RecentChunks`, the raw bytes of the
keyframes this process saved or used last on the branch, so a training loop
never reads its parent back from disk; only the first save after a restart
decodes its bases.  The same copies tell a save which chunks did not change
since their keyframe (frozen layers, a state saved twice) by comparison, which
costs a third of hashing them.  Each copy is a private snapshot whose own bytes
were hashed to its id, so an equal chunk has that id.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from deltastore.arrays import ArrayBytes
from deltastore.catalog.queries import EntryChunks, StoredChunk
from deltastore.memory import huge_page_buffer

#: Versions of a chunk per keyframe: the keyframe and at most KEYFRAME_INTERVAL - 1 deltas on it.
KEYFRAME_INTERVAL = 4
#: Deepest object a writer creates: a delta on a full object.  Readers follow deeper chains
#: (stores written before session 5 chained deltas on deltas, two deep).
MAX_DEPTH = 1
#: Entries smaller than this are stored full: a delta would save a few bytes at
#: the cost of a base lookup, and a copy kept in memory.
MIN_DELTA_BYTES = 4096
#: Chunk buffers mapped at once for base copies (64 MiB at the default chunk size).
SLAB_CHUNKS = 16


@dataclass(frozen=True)
class Base:
    id: str
    depth: int


def keyframe_of(object_id: str, known: Mapping[str, StoredChunk]) -> str | None:
    """The full object ``object_id`` is, or is a delta of; None if unknown or deeper."""
    stored = known.get(object_id)
    if stored is None or stored.depth > MAX_DEPTH:
        return None
    return object_id if stored.depth == 0 else stored.base_id


def base_for(
    object_id: str, known: Mapping[str, StoredChunk], deltas_on: Mapping[str, int]
) -> Base | None:
    """The base of the next version of the chunk stored as ``object_id``, or None for a keyframe.

    ``deltas_on`` counts the deltas the catalog lists on each keyframe: one
    that has its ``KEYFRAME_INTERVAL - 1`` gets no more.  Counting deltas, not
    saves, lets a chunk that stays unchanged keep its keyframe.
    """
    keyframe = keyframe_of(object_id, known)
    if keyframe is None or keyframe not in known or known[keyframe].depth != 0:
        return None  # only a full object the catalog lists is a base: it is durable
    if deltas_on.get(keyframe, 0) >= KEYFRAME_INTERVAL - 1:
        return None
    return Base(keyframe, 0)


def delta_eligible(arr: ArrayBytes) -> bool:
    """Entries worth a delta: multi-byte elements (floats, mostly) of some size."""
    return arr.element_size >= 2 and len(arr.data) >= MIN_DELTA_BYTES


def _parent_entry(
    path: str, arr: ArrayBytes, count: int, parent: dict[str, EntryChunks]
) -> EntryChunks | None:
    """The parent's entry of this leaf when its chunks line up with the leaf's, for a delta."""
    before = parent.get(path)
    if (
        before is None
        or not delta_eligible(arr)
        or before.dtype != arr.dtype
        or before.shape != arr.shape
        or len(before.chunk_ids) != count
    ):
        return None
    return before


def parent_chunks(
    leaves: Sequence[tuple[str, ArrayBytes]],
    chunk_counts: Sequence[int],
    parent: dict[str, EntryChunks],
) -> list[list[str | None]]:
    """For every chunk of every leaf, the id of the same chunk in the parent (or None)."""
    result: list[list[str | None]] = []
    for (path, arr), count in zip(leaves, chunk_counts, strict=True):
        before = _parent_entry(path, arr, count, parent)
        result.append(list(before.chunk_ids) if before is not None else [None] * count)
    return result


def plan_bases(
    parents: Sequence[Sequence[str | None]],
    known: Mapping[str, StoredChunk],
    deltas_on: Mapping[str, int],
) -> list[list[Base | None]]:
    """For every chunk of every leaf, its delta base (or None for a full object).

    ``parents`` is what :func:`parent_chunks` returns; ``known`` describes the
    parent's chunks the catalog knows, ``deltas_on`` counts the deltas on their
    keyframes (:func:`base_for`).
    """
    return [
        [
            base_for(chunk_id, known, deltas_on) if chunk_id is not None else None
            for chunk_id in entry
        ]
        for entry in parents
    ]


def same_bytes(a: memoryview | bytes, b: memoryview | bytes) -> bool:
    """Whether two buffers hold the same bytes, with the GIL released.

    Compares 8 bytes at a time after a short prefix, which settles a changed
    chunk at once (trained weights change everywhere): ~80 us per MiB against
    ~230 for BLAKE3, so an unchanged chunk is recognised by its kept copy for a
    third of the cost of hashing it.
    """
    if len(a) != len(b):
        return False
    x, y = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
    if len(x) % 8 == 0:
        x, y = x.view(np.uint64), y.view(np.uint64)
    head = min(len(x), 64)
    return bool((x[:head] == y[:head]).all()) and bool((x == y).all())


#: A kept copy of a chunk: a view of a recycled buffer, or of its own array for a short one.
Kept = memoryview | bytes


class BaseCopies:
    """Chunk-sized buffers, recycled from one save to the next, for the copies kept as bases.

    A copy into fresh memory page-faults, at a cost near hashing and
    compressing the chunk together.  So buffers come in slabs backed by huge
    pages where the kernel allows (``deltastore.memory``), and a training
    loop, which replaces its bases at every save, reuses the buffers the last
    save's copies displaced: the writer holds at most two copies of its
    delta-eligible state and maps memory only while it grows.  Callers serialize saves (the
    writer's lock), so a buffer is recycled only once the save that read it
    has finished.
    """

    def __init__(self, chunk_size: int, slab_chunks: int = SLAB_CHUNKS) -> None:
        self.chunk_size = chunk_size
        self.slab_chunks = slab_chunks
        self._lock = threading.Lock()
        self._free: list[memoryview] = []
        self._ours: set[int] = set()  # id() of every buffer handed out, to recycle only those

    def _grow(self) -> None:
        size = self.chunk_size * self.slab_chunks
        slab = huge_page_buffer(size)
        views = [slab[i : i + self.chunk_size] for i in range(0, size, self.chunk_size)]
        self._ours.update(id(v) for v in views)
        self._free.extend(views)

    def copy(self, data: memoryview) -> Kept:
        # numpy copies with the GIL released; a memoryview assignment (or bytes())
        # holds it, and a first save's copies (page faults into fresh memory) then
        # stalled the other encoder every time it came back from hashing or compressing.
        if len(data) != self.chunk_size:
            # A short tail chunk, or a whole entry smaller than a chunk: most entries of
            # a small model.  The allocator reuses the memory from one save to the next.
            tail = np.empty(len(data), np.uint8)
            np.copyto(tail, np.frombuffer(data, np.uint8))
            return tail.data
        with self._lock:
            if not self._free:
                self._grow()
            view = self._free.pop()
        np.copyto(np.frombuffer(view, np.uint8), np.frombuffer(data, np.uint8))
        return view

    def recycle(self, kept: Iterable[Kept]) -> None:
        """Take back the buffers of copies nobody will read again."""
        with self._lock:
            self._free.extend(
                k
                for k in kept
                if isinstance(k, memoryview) and len(k) == self.chunk_size and id(k) in self._ours
            )


class RecentChunks:
    """Raw bytes of the delta-eligible chunks last saved on each branch by this process."""

    def __init__(self, copies: BaseCopies) -> None:
        self.copies = copies
        self._lock = threading.Lock()
        self._by_branch: dict[str, tuple[str, dict[str, Kept]]] = {}

    def for_parent(self, branch: str, parent_id: str | None) -> dict[str, Kept]:
        """The cached chunks if they are the parent's, else an empty dict."""
        with self._lock:
            cached = self._by_branch.get(branch)
        if cached is None or cached[0] != parent_id:
            return {}
        return cached[1]

    def remember(self, branch: str, checkpoint_id: str, chunks: dict[str, Kept]) -> None:
        """Keep ``chunks`` as the branch's bases; recycle the copies they replace."""
        with self._lock:
            before = self._by_branch.get(branch)
            self._by_branch[branch] = (checkpoint_id, chunks)
        if before is not None:
            still_used = {id(k) for k in chunks.values()}
            self.copies.recycle(k for k in before[1].values() if id(k) not in still_used)

    def forget(self, branch: str) -> None:
        with self._lock:
            self._by_branch.pop(branch, None)

    def clear(self) -> None:
        """Drop every branch's copies (after a gc) and recycle their buffers."""
        with self._lock:
            dropped, self._by_branch = self._by_branch, {}
        unique = {id(k): k for _, chunks in dropped.values() for k in chunks.values()}
        self.copies.recycle(unique.values())
