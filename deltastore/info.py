"""What the store reports about checkpoints: plain, immutable records.

A leaf module (imports nothing internal), shared by the store, the catalog
queries and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


def datetime_from_us(us: int) -> datetime:
    """Catalog time (microseconds since the epoch, UTC) as an aware datetime."""
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc)


@dataclass(frozen=True)
class CheckpointInfo:
    """One saved version, as ``store.log()`` and ``store.info()`` report it."""

    id: str
    parent: str | None
    created_at: datetime
    message: str
    step: int | None
    metrics: dict[str, float | int]
    branch: str | None
    entry_count: int
    logical_bytes: int  # the arrays' raw bytes
    stored_bytes: int  # bytes of objects this save added to the store

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def ratio(self) -> float:
        """Stored over logical bytes of this save (0 for an empty state)."""
        return self.stored_bytes / self.logical_bytes if self.logical_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent": self.parent,
            "created_at": self.created_at.isoformat(),
            "message": self.message,
            "step": self.step,
            "metrics": self.metrics,
            "branch": self.branch,
            "entry_count": self.entry_count,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
        }


@dataclass(frozen=True)
class EntryInfo:
    """One array entry of a checkpoint."""

    key_path: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    digest: str
    chunk_count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "key_path": self.key_path,
            "kind": self.kind,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "nbytes": self.nbytes,
            "digest": self.digest,
            "chunk_count": self.chunk_count,
        }


@dataclass(frozen=True)
class StoreStats:
    """Sizes of the whole store; ``checkpoints`` newest first."""

    checkpoint_count: int
    object_count: int
    logical_bytes: int  # sum over checkpoints of their arrays' bytes
    stored_bytes: int  # sum of every object's stored size
    checkpoints: list[CheckpointInfo] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.stored_bytes / self.logical_bytes if self.logical_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint_count": self.checkpoint_count,
            "object_count": self.object_count,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "ratio": self.ratio,
            "checkpoints": [c.to_json() for c in self.checkpoints],
        }
