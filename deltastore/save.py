"""Writing a checkpoint: hash, dedup, encode and store chunks, then the manifest.

The order is the store's crash-safety (DESIGN.md invariant 1): every object a
checkpoint needs is durable before the one catalog transaction that records
the checkpoint and moves the branch.  A failure before that transaction
leaves only unreferenced objects, which gc removes.

Chunks are hashed on the thread pool first; one catalog query then tells
which ids the store already holds (from any checkpoint, any branch), and only
the others are encoded and written, again on the pool.  Hashing, the plane
kernel, the compressors and file I/O all release the GIL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from deltastore import codecs, tree
from deltastore.arrays import ArrayBytes
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction, write_transaction
from deltastore.chunking import chunk_bounds, plane_width
from deltastore.errors import ConcurrentUpdateError, UnsupportedTypeError
from deltastore.ids import digest
from deltastore.info import CheckpointInfo, datetime_from_us
from deltastore.manifest import INT64_MAX, Manifest, ManifestEntry, entry_digest, manifest_id
from deltastore.objects import ObjectStore
from deltastore.refs import BRANCH

#: How often a save re-parents onto a branch that another process moved meanwhile.
MAX_COMMIT_ATTEMPTS = 8

Progress = Callable[[int], None]


@dataclass(frozen=True)
class _Chunk:
    entry: int
    index: int
    data: memoryview
    width: int


def validate_inputs(message: str, step: int | None, metrics: Any) -> dict[str, float | int]:
    """Check the scalar arguments of save; return the metrics as a plain dict."""
    if not isinstance(message, str):
        raise UnsupportedTypeError("message", type(message).__qualname__, "message must be a str")
    if step is not None and (type(step) is not int or not 0 <= step <= INT64_MAX):
        raise UnsupportedTypeError(
            "step", type(step).__qualname__, "step must be an int between 0 and 2**63-1"
        )
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise UnsupportedTypeError("metrics", type(metrics).__qualname__, "metrics must be a dict")
    clean: dict[str, float | int] = {}
    for key, value in metrics.items():
        if type(key) is not str:
            raise UnsupportedTypeError("metrics", type(key).__qualname__, "metric names are str")
        if type(value) is int or type(value) is float:
            clean[key] = value
        elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # 0-d tensor/array
            clean[key] = value.item()
        else:
            raise UnsupportedTypeError(
                f"metrics/{key}", type(value).__qualname__, "a metric is an int or a float"
            )
    return clean


class CheckpointWriter:
    """Writes one checkpoint; owns nothing beyond the call."""

    def __init__(
        self,
        engine: Engine,
        objects: ObjectStore,
        pool: Executor,
        *,
        chunk_size: int,
        codec: str,
    ) -> None:
        self.engine = engine
        self.objects = objects
        self.pool = pool
        self.chunk_size = chunk_size
        self.codec = codec

    # -- chunks ---------------------------------------------------------------------------------

    def _cut(self, leaves: Sequence[tuple[str, ArrayBytes]]) -> list[_Chunk]:
        chunks = []
        for i, (_, arr) in enumerate(leaves):
            width = plane_width(arr.dtype, arr.element_size)
            for n, (start, stop) in enumerate(chunk_bounds(len(arr.data), self.chunk_size)):
                chunks.append(_Chunk(i, n, arr.data[start:stop], width))
        return chunks

    def _encode_and_put(self, chunk: _Chunk, object_id: str) -> queries.NewObject:
        encoded = codecs.encode(chunk.data, chunk.width, codec=self.codec)
        self.objects.put_if_absent(object_id, encoded)
        return queries.NewObject(object_id, codecs.Kind.CHUNK, len(chunk.data), len(encoded), None)

    def write_chunks(
        self, leaves: Sequence[tuple[str, ArrayBytes]], progress: Progress | None
    ) -> tuple[list[list[str]], list[queries.NewObject]]:
        """Store every chunk the store lacks; return chunk ids per entry and the new objects."""
        chunks = self._cut(leaves)
        ids = [d.hex() for d in self.pool.map(lambda c: digest(c.data), chunks)]
        with read_transaction(self.engine) as conn:
            known = queries.known_object_ids(conn, set(ids))
        todo: dict[str, _Chunk] = {}
        for chunk, object_id in zip(chunks, ids, strict=True):
            if object_id in known:
                if progress:
                    progress(len(chunk.data))
            else:
                todo.setdefault(object_id, chunk)
        new_objects = []
        futures = [self.pool.submit(self._encode_and_put, c, i) for i, c in todo.items()]
        for future in futures:
            new = future.result()
            new_objects.append(new)
            if progress:
                progress(new.raw_bytes)
        per_entry: list[list[str]] = [[] for _ in leaves]
        for chunk, object_id in zip(chunks, ids, strict=True):
            per_entry[chunk.entry].append(object_id)
        return per_entry, new_objects

    # -- the checkpoint -------------------------------------------------------------------------

    def save(
        self,
        flat: tree.FlatState,
        *,
        branch: str,
        message: str,
        step: int | None,
        metrics: dict[str, float | int],
        progress: Progress | None = None,
    ) -> CheckpointInfo:
        with read_transaction(self.engine) as conn:
            head = queries.get_ref(conn, branch)
        parent = head[1] if head else None
        try:
            chunk_ids, new_objects = self.write_chunks(flat.leaves, progress)
        except BaseException:
            # Let the writes already started finish (or fail) now, so that their
            # errors do not surface in a later, unrelated save.
            with suppress(Exception):
                self.objects.flush()
            raise
        entries = tuple(
            ManifestEntry(
                key_path=path,
                kind=arr.kind,
                dtype=arr.dtype,
                shape=arr.shape,
                element_size=arr.element_size,
                nbytes=len(arr.data),
                digest=entry_digest(ids),
                chunks=tuple(ids),
                requires_grad=arr.requires_grad,
            )
            for (path, arr), ids in zip(flat.leaves, chunk_ids, strict=True)
        )
        chunk_bytes = sum(o.stored_bytes for o in new_objects)
        for _attempt in range(MAX_COMMIT_ATTEMPTS):
            manifest = Manifest(
                parent=parent,
                branch=branch,
                created_at_us=time.time_ns() // 1000,
                message=message,
                step=step,
                metrics=metrics,
                chunk_size=self.chunk_size,
                structure=flat.structure,
                entries=entries,
            )
            raw = manifest.to_bytes()
            checkpoint_id = manifest_id(raw)
            encoded = codecs.encode(raw, 1, kind=codecs.Kind.MANIFEST, codec=self.codec)
            self.objects.put_if_absent(checkpoint_id, encoded)
            self.objects.flush()  # every object durable before the catalog names it
            info = CheckpointInfo(
                id=checkpoint_id,
                parent=parent,
                created_at=datetime_from_us(manifest.created_at_us),
                message=message,
                step=step,
                metrics=metrics,
                branch=branch,
                entry_count=len(entries),
                logical_bytes=manifest.logical_bytes,
                stored_bytes=chunk_bytes + len(encoded),
            )
            manifest_object = queries.NewObject(
                checkpoint_id, codecs.Kind.MANIFEST, len(raw), len(encoded), None
            )
            with write_transaction(self.engine) as conn:
                current = queries.get_ref(conn, branch)
                current_id = current[1] if current else None
                if current_id == parent:
                    if queries.get_checkpoint(conn, checkpoint_id) is None:
                        queries.insert_checkpoint(
                            conn,
                            info,
                            manifest.created_at_us,
                            _manifest_entries(entries),
                            [*new_objects, manifest_object],
                        )
                    queries.set_ref(conn, branch, BRANCH, checkpoint_id, manifest.created_at_us)
                    return info
            # Another process moved the branch: our chunks stand, re-parent the manifest.
            parent = current_id
        raise ConcurrentUpdateError(branch, MAX_COMMIT_ATTEMPTS)


def _manifest_entries(entries: Sequence[ManifestEntry]) -> list[queries.NewEntry]:
    return [
        queries.NewEntry(
            key_path=e.key_path,
            kind=e.kind,
            dtype=e.dtype,
            shape=e.shape,
            nbytes=e.nbytes,
            digest=e.digest,
            chunk_ids=list(e.chunks),
        )
        for e in entries
    ]
