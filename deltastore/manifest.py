"""The manifest: a checkpoint's canonical serialisation, and its id.

A manifest holds everything needed to restore a checkpoint and to rebuild the
catalog: parent, time, message, step, metrics, the tagged-JSON tree and the
entries with their chunk lists.  It is canonical JSON (sorted keys, no
spaces, ASCII, no NaN), so the same checkpoint always has the same bytes and
its id, the BLAKE3 of those bytes, names it like a git commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from deltastore import tree
from deltastore.errors import CorruptObjectError
from deltastore.ids import hex_digest, is_full_id

MANIFEST_VERSION = 1
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class ManifestEntry:
    key_path: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    element_size: int
    nbytes: int
    digest: str  # BLAKE3 of the concatenated 32-byte chunk ids
    chunks: tuple[str, ...]
    requires_grad: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": self.key_path,
            "kind": self.kind,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "element_size": self.element_size,
            "nbytes": self.nbytes,
            "digest": self.digest,
            "chunks": list(self.chunks),
        }
        if self.requires_grad:
            data["requires_grad"] = True
        return data


@dataclass(frozen=True)
class Manifest:
    parent: str | None
    branch: str | None
    created_at_us: int
    message: str
    step: int | None
    metrics: dict[str, float | int]
    chunk_size: int
    structure: tree.JSON
    entries: tuple[ManifestEntry, ...]

    def to_bytes(self) -> bytes:
        doc = {
            "deltastore_manifest": MANIFEST_VERSION,
            "parent": self.parent,
            "branch": self.branch,
            "created_at_us": self.created_at_us,
            "message": self.message,
            "step": self.step,
            "metrics": tree.flatten(self.metrics).structure,
            "chunk_size": self.chunk_size,
            "tree": self.structure,
            "entries": [e.to_json() for e in self.entries],
        }
        return json.dumps(
            doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode("ascii")

    @property
    def logical_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries)


def entry_digest(chunk_ids: list[str] | tuple[str, ...]) -> str:
    """An entry's digest: BLAKE3 over its chunk ids (32 bytes each), in order.

    Chunks are hashed anyway; hashing their ids instead of every byte a
    second time makes the digest cost nothing and verifies exactly as much.
    """
    return hex_digest(b"".join(bytes.fromhex(c) for c in chunk_ids))


def manifest_id(data: bytes) -> str:
    return hex_digest(data)


def parse(data: bytes | bytearray, checkpoint_id: str) -> Manifest:
    """Parse and validate a manifest object's bytes; CorruptObjectError if malformed."""
    try:
        doc = json.loads(data)
        if doc.get("deltastore_manifest") != MANIFEST_VERSION:
            raise ValueError(f"manifest version {doc.get('deltastore_manifest')!r}")
        entries = tuple(_parse_entry(e) for e in doc["entries"])
        structure = doc["tree"]
        indices = list(tree.iter_array_indices(structure))
        if sorted(indices) != list(range(len(entries))):
            raise ValueError("tree and entry list disagree")
        metrics = tree.unflatten(doc["metrics"], [])
        if not isinstance(metrics, dict):
            raise ValueError("metrics are not a dict")
        return Manifest(
            parent=_optional_id(doc["parent"]),
            branch=doc["branch"],
            created_at_us=int(doc["created_at_us"]),
            message=str(doc["message"]),
            step=doc["step"],
            metrics=metrics,
            chunk_size=int(doc["chunk_size"]),
            structure=structure,
            entries=entries,
        )
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CorruptObjectError(
            checkpoint_id, f"manifest is malformed: {exc}", checkpoint_id=checkpoint_id
        ) from None


def _optional_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_full_id(value):
        raise ValueError(f"bad id {value!r}")
    return value


def _parse_entry(e: dict[str, Any]) -> ManifestEntry:
    chunks = tuple(e["chunks"])
    if not all(isinstance(c, str) and is_full_id(c) for c in chunks):
        raise ValueError(f"bad chunk id in entry {e.get('path')!r}")
    shape = tuple(int(n) for n in e["shape"])
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimension in entry {e.get('path')!r}")
    return ManifestEntry(
        key_path=str(e["path"]),
        kind=str(e["kind"]),
        dtype=str(e["dtype"]),
        shape=shape,
        element_size=int(e["element_size"]),
        nbytes=int(e["nbytes"]),
        digest=str(e["digest"]),
        chunks=chunks,
        requires_grad=bool(e.get("requires_grad", False)),
    )
