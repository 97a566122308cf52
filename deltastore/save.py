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
from concurrent.futures import Executor, Future, wait
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine

from deltastore import codecs, tree
from deltastore.arrays import ArrayBytes
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction, write_transaction
from deltastore.chunking import chunk_bounds, plane_width
from deltastore.codecs.header import HEAD_BYTES, peek_base_id
from deltastore.delta import Base, RecentChunks, delta_eligible, plan_bases
from deltastore.errors import ConcurrentUpdateError, UnsupportedTypeError
from deltastore.ids import digest
from deltastore.info import CheckpointInfo, datetime_from_us
from deltastore.manifest import INT64_MAX, Manifest, ManifestEntry, entry_digest, manifest_id
from deltastore.objects import ObjectStore
from deltastore.refs import BRANCH

#: How often a save re-parents onto a branch that another process moved meanwhile.
MAX_COMMIT_ATTEMPTS = 8

Progress = Callable[[int], None]
T = TypeVar("T")


@dataclass(frozen=True)
class _Chunk:
    entry: int
    index: int
    data: memoryview
    width: int
    keep: bool  # keep a copy as the next save's delta base


@dataclass
class _Written:  # mutable: new_objects is corrected after the writes land
    """What write_chunks did: chunk ids per entry, objects added, bases for the next save."""

    chunk_ids: list[list[str]]
    new_objects: list[queries.NewObject]
    recent: dict[str, bytes]


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
        load_chunk: Callable[[str], bytes],
        *,
        chunk_size: int,
        codec: str,
        delta: bool = True,
    ) -> None:
        self.engine = engine
        self.objects = objects
        self.pool = pool
        self.load_chunk = load_chunk  # verified raw bytes of a stored chunk (a delta base)
        self.chunk_size = chunk_size
        self.codec = codec
        self.delta = delta
        self.recent = RecentChunks()

    # -- chunks ---------------------------------------------------------------------------------

    def _cut(self, leaves: Sequence[tuple[str, ArrayBytes]]) -> list[_Chunk]:
        chunks = []
        for i, (_, arr) in enumerate(leaves):
            width = plane_width(arr.dtype, arr.element_size)
            keep = self.delta and delta_eligible(arr)
            for n, (start, stop) in enumerate(chunk_bounds(len(arr.data), self.chunk_size)):
                chunks.append(_Chunk(i, n, arr.data[start:stop], width, keep))
        return chunks

    @staticmethod
    def _hash(chunk: _Chunk, recent: dict[str, bytes]) -> tuple[str, bytes | None]:
        object_id = digest(chunk.data).hex()
        if not chunk.keep:
            return object_id, None
        # Unchanged since the parent: share its copy.  Otherwise copy now, while the
        # caller's tensors are guaranteed unchanged (the optimizer updates them in place).
        kept = recent.get(object_id)
        return object_id, kept if kept is not None else bytes(chunk.data)

    def _encode(
        self, chunk: _Chunk, base: Base | None, recent: dict[str, bytes]
    ) -> tuple[bytes, Base | None]:
        if base is None:
            return codecs.encode(chunk.data, chunk.width, codec=self.codec), None
        base_bytes = recent.get(base.id)
        if base_bytes is None:
            base_bytes = self.load_chunk(base.id)
        encoded = codecs.encode(
            chunk.data,
            chunk.width,
            codec=self.codec,
            base=base_bytes,
            base_id=bytes.fromhex(base.id),
        )
        return encoded, base

    def _put(
        self, chunk: _Chunk, object_id: str, encoded: bytes, base: Base | None
    ) -> queries.NewObject:
        self.objects.put_if_absent(object_id, encoded)
        return queries.NewObject(
            object_id,
            codecs.Kind.CHUNK,
            len(chunk.data),
            len(encoded),
            base.id if base else None,
            base.depth + 1 if base else 0,
        )

    def _store_chunk(
        self, chunk: _Chunk, object_id: str, base: Base | None, recent: dict[str, bytes]
    ) -> queries.NewObject:
        encoded, used = self._encode(chunk, base, recent)
        return self._put(chunk, object_id, encoded, used)

    def _store_choosing(
        self, chunk: _Chunk, object_id: str, base: Base, recent: dict[str, bytes]
    ) -> tuple[queries.NewObject, bool]:
        """Encode with and without the base, keep the smaller; say whether the delta won.

        XOR helps where values drift slowly (weights, Adam's second moment) and
        hurts where they do not (Adam's first moment): one chunk decides for its entry.
        """
        delta, _ = self._encode(chunk, base, recent)
        full, _ = self._encode(chunk, None, recent)
        if len(delta) < len(full):
            return self._put(chunk, object_id, delta, base), True
        return self._put(chunk, object_id, full, None), False

    def _plan(
        self, leaves: Sequence[tuple[str, ArrayBytes]], chunks: list[_Chunk], parent: str | None
    ) -> list[list[Base | None]]:
        counts = [0] * len(leaves)
        for chunk in chunks:
            counts[chunk.entry] += 1
        if not self.delta or parent is None:
            return [[None] * n for n in counts]
        with read_transaction(self.engine) as conn:
            before = queries.entry_chunks_of(conn, parent)
            depths = queries.object_depths(
                conn, {cid for entry in before.values() for cid in entry.chunk_ids}
            )
        return plan_bases(leaves, counts, before, depths)

    def write_chunks(
        self,
        leaves: Sequence[tuple[str, ArrayBytes]],
        branch: str,
        parent: str | None,
        progress: Progress | None,
    ) -> _Written:
        """Store every chunk the store lacks, as a delta where that pays."""
        chunks = self._cut(leaves)
        recent = self.recent.for_parent(branch, parent)
        hashed = list(self.pool.map(lambda c: self._hash(c, recent), chunks))
        ids = [object_id for object_id, _ in hashed]
        recent_next = {object_id: copy for object_id, copy in hashed if copy is not None}
        del hashed
        with read_transaction(self.engine) as conn:
            known = set(queries.object_depths(conn, set(ids)))
        plan = self._plan(leaves, chunks, parent)

        todo: dict[str, _Chunk] = {}
        for chunk, object_id in zip(chunks, ids, strict=True):
            if object_id in known:
                if progress:
                    progress(len(chunk.data))
            else:
                todo.setdefault(object_id, chunk)
        # Wave 1: the first new chunk of each entry that has a base decides delta or full.
        deciders: dict[int, tuple[str, _Chunk, Base]] = {}
        for object_id, chunk in todo.items():
            base = plan[chunk.entry][chunk.index]
            if base is not None and chunk.entry not in deciders:
                deciders[chunk.entry] = (object_id, chunk, base)
        entries = list(deciders)
        choices = _gather(
            [
                self.pool.submit(self._store_choosing, c, i, base, recent)
                for i, c, base in deciders.values()
            ]
        )
        use_delta = {entry: won for entry, (_, won) in zip(entries, choices, strict=True)}
        new_objects = [new for new, _ in choices]
        if progress:
            progress(sum(new.raw_bytes for new in new_objects))
        # Wave 2: everything else, following its entry's decision.
        decided = {object_id for object_id, _, _ in deciders.values()}
        rest = [
            self.pool.submit(
                self._store_chunk,
                c,
                i,
                plan[c.entry][c.index] if use_delta.get(c.entry) else None,
                recent,
            )
            for i, c in todo.items()
            if i not in decided
        ]
        new_objects.extend(_gather(rest, progress))
        per_entry: list[list[str]] = [[] for _ in leaves]
        for chunk, object_id in zip(chunks, ids, strict=True):
            per_entry[chunk.entry].append(object_id)
        return _Written(per_entry, new_objects, recent_next)

    def _as_stored(self, objects: list[queries.NewObject]) -> list[queries.NewObject]:
        """Describe each object as it is on disk, not as this save encoded it.

        They differ when the id was already there (left by a save that died
        before its commit, or stored by a concurrent writer first): the catalog
        must record the base and size of the object that will be read.
        """
        result = []
        for new in objects:
            head = self.objects.read_head(new.id, HEAD_BYTES)
            base = peek_base_id(head, new.id)
            base_id = base.hex() if base is not None else None
            size = self.objects.size(new.id)
            if base_id == new.base_id and size == new.stored_bytes:
                result.append(new)
                continue
            depth = self._depth(base_id)
            result.append(
                queries.NewObject(new.id, new.kind, new.raw_bytes, size, base_id, depth)
            )
        return result

    def _depth(self, base_id: str | None) -> int:
        """Chain depth of an object whose base is ``base_id``, from the catalog or the headers."""
        depth = 0
        while base_id is not None:
            with read_transaction(self.engine) as conn:
                known = queries.object_depths(conn, [base_id])
            if base_id in known:
                return depth + 1 + known[base_id]
            depth += 1
            base = peek_base_id(self.objects.read_head(base_id, HEAD_BYTES), base_id)
            base_id = base.hex() if base is not None else None
        return depth

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
            written = self.write_chunks(flat.leaves, branch, parent, progress)
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
            for (path, arr), ids in zip(flat.leaves, written.chunk_ids, strict=True)
        )
        chunk_bytes = sum(o.stored_bytes for o in written.new_objects)
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
            written.new_objects = self._as_stored(written.new_objects)
            chunk_bytes = sum(o.stored_bytes for o in written.new_objects)
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
                            [*written.new_objects, manifest_object],
                        )
                    queries.set_ref(conn, branch, BRANCH, checkpoint_id, manifest.created_at_us)
            if current_id == parent:
                self.recent.remember(branch, checkpoint_id, written.recent)
                return info
            # Another process moved the branch: our chunks stand, re-parent the manifest.
            parent = current_id
        raise ConcurrentUpdateError(branch, MAX_COMMIT_ATTEMPTS)


def _gather(futures: list[Future[T]], progress: Progress | None = None) -> list[T]:
    """Results in order; on the first error cancel the rest and wait for the running ones.

    Waiting matters: a task still running after the save gave up could leave
    a temporary file behind, or fail into a later save.
    """
    results = []
    try:
        for future in futures:
            result = future.result()
            results.append(result)
            if progress and isinstance(result, queries.NewObject):
                progress(result.raw_bytes)
    except BaseException:
        for future in futures:
            future.cancel()
        wait(futures)
        raise
    return results


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
