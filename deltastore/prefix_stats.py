"""Where a store's bytes go, per key prefix (``model``, ``optim/state``...), from the catalog alone.

Logical bytes are the entries' raw bytes summed under their prefix (over
every checkpoint, or over one).  Stored bytes count each object once, under
the prefix of the first entry that uses it (oldest checkpoint first, then
save order): an unchanged weight stored once and named by a hundred
checkpoints is counted once, where it first appeared.  Objects no entry
names (manifests, journal records, delta bases only kept for other deltas)
are summed apart as ``other_stored_bytes``.  Nothing is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from deltastore.catalog import audit
from deltastore.progress import Batched, ProgressFactory
from deltastore.progress import maybe as progress_bar


@dataclass(frozen=True)
class PrefixStats:
    """One key prefix: its logical and stored bytes."""

    prefix: str
    logical_bytes: int
    stored_bytes: int
    objects: int

    @property
    def ratio(self) -> float:
        return self.stored_bytes / self.logical_bytes if self.logical_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "objects": self.objects,
            "ratio": self.ratio,
        }


@dataclass(frozen=True)
class PrefixReport:
    """Every prefix at ``depth`` (largest stored first), over the store or one checkpoint."""

    depth: int
    checkpoint_id: str | None  # None: every checkpoint
    prefixes: tuple[PrefixStats, ...]
    #: Whole store: objects no entry names (manifests, records, bases of forgotten
    #: checkpoints).  One checkpoint: its manifest.
    other_stored_bytes: int

    @property
    def logical_bytes(self) -> int:
        return sum(p.logical_bytes for p in self.prefixes)

    @property
    def stored_bytes(self) -> int:
        return sum(p.stored_bytes for p in self.prefixes)

    def to_json(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "checkpoint_id": self.checkpoint_id,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "other_stored_bytes": self.other_stored_bytes,
            "prefixes": [p.to_json() for p in self.prefixes],
        }


def key_prefix(key_path: str, depth: int) -> str:
    """The first ``depth`` components of a key path (``/`` inside a key is escaped as ``~1``)."""
    return "/".join(key_path.split("/")[:depth])


def by_prefix(
    conn: Connection,
    depth: int,
    checkpoint_id: str | None = None,
    progress: ProgressFactory | None = None,
) -> PrefixReport:
    """Logical and stored bytes per key prefix of ``depth`` components.

    With ``checkpoint_id``, only that checkpoint's entries count, and stored
    bytes are those of the objects it names (each once), whatever saved them.
    ``progress`` opens a bar over the chunk list items read: one per chunk of
    every entry of every checkpoint, millions in a long run.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    logical: dict[str, int] = {}
    for key_path, nbytes in audit.logical_by_key_path(conn, checkpoint_id):
        prefix = key_prefix(key_path, depth)
        logical[prefix] = logical.get(prefix, 0) + nbytes
    sizes = audit.stored_sizes(conn)
    stored: dict[str, int] = {}
    counts: dict[str, int] = {}
    seen: set[str] = set()
    total = 0 if progress is None else audit.chunk_reference_count(conn, checkpoint_id)
    with progress_bar(progress, total, "stats") as advance:
        read = Batched(advance)
        for object_id, key_path in audit.chunk_references(conn, checkpoint_id):
            read.add()
            if object_id in seen:
                continue
            seen.add(object_id)
            prefix = key_prefix(key_path, depth)
            stored[prefix] = stored.get(prefix, 0) + sizes.get(object_id, 0)
            counts[prefix] = counts.get(prefix, 0) + 1
        read.flush()
    prefixes = sorted(
        (
            PrefixStats(p, logical.get(p, 0), stored.get(p, 0), counts.get(p, 0))
            for p in logical.keys() | stored.keys()
        ),
        key=lambda s: (-s.stored_bytes, -s.logical_bytes, s.prefix),
    )
    if checkpoint_id is None:
        other = sum(sizes.values()) - sum(stored.values())
    else:
        other = sizes.get(checkpoint_id, 0)  # its manifest
    return PrefixReport(depth, checkpoint_id, tuple(prefixes), other)
