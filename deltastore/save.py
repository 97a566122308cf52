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

import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Executor, Future, wait
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine

from deltastore import codecs, tree
from deltastore.arrays import ArrayBytes
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction, write_transaction
from deltastore.catalog.queries import StoredChunk
from deltastore.chunking import chunk_bounds, plane_width
from deltastore.codecs.header import HEAD_BYTES, peek_base_id
from deltastore.delta import (
    Base,
    BaseCopies,
    Kept,
    RecentChunks,
    delta_eligible,
    keyframe_of,
    parent_chunks,
    plan_bases,
    same_bytes,
)
from deltastore.errors import ConcurrentUpdateError, UnsupportedTypeError
from deltastore.ids import digest
from deltastore.info import CheckpointInfo, datetime_from_us
from deltastore.manifest import INT64_MAX, Manifest, ManifestEntry, entry_digest, manifest_id
from deltastore.objects import ObjectStore
from deltastore.progress import Progress
from deltastore.refs import BRANCH

#: Saves that reuse an entry's delta-or-full decision before it is measured again.
RECHECK_EVERY = 8
#: A delta larger than this fraction of the raw chunk is measured against the full encoding.
SUSPECT_DELTA = 0.8
#: How often a save re-parents onto a branch that another process moved meanwhile.
MAX_COMMIT_ATTEMPTS = 8
#: Chunks smaller than this (norms, biases, step counters, their optimizer state) are
#: processed several to a task, up to SMALL_TASK_BYTES: for a chunk of a few KiB the task
#: itself (submit, wake a worker, hand the GIL back and forth) cost more than its work.
SMALL_CHUNK_BYTES = 64 << 10
SMALL_TASK_BYTES = 1 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class _Chunk:
    entry: int
    index: int
    data: memoryview
    width: int
    keep: bool  # keep a copy as the next save's delta base


@dataclass(frozen=True)
class _Job:
    """One chunk's work, with what its task needs to know about its entry."""

    chunk: _Chunk
    parent_id: str | None  # the same chunk in the parent, if the entry lines up
    base: Base | None  # planned delta base
    decision: Future[bool] | None  # the entry's delta-or-full decision
    decides: bool  # this chunk makes that decision
    hint_key: tuple[str, str]  # (branch, key path): where the last decision is remembered


@dataclass(frozen=True)
class _Outcome:
    object_id: str
    new: queries.NewObject | None  # the object this save wrote
    kept: tuple[str, Kept] | None  # (id, raw bytes) of the chunk's keyframe: the next base
    on_disk: bool  # not written: an object file of that id exists, maybe uncatalogued
    raw_bytes: int


@dataclass
class _Written:  # mutable: new_objects is corrected after the writes land
    """What write_chunks did: chunk ids per entry, objects added, bases for the next save."""

    chunk_ids: list[list[str]]
    new_objects: list[queries.NewObject]
    recent: dict[str, Kept]
    deltas_on: dict[str, int]  # deltas on each keyframe planned as a base, this save's included


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
        self.copies = BaseCopies(chunk_size)
        self.recent = RecentChunks(self.copies)
        self._claim_lock = threading.Lock()
        # (branch, key path) -> (delta won, saves since it was measured)
        self._hints: dict[tuple[str, str], tuple[bool, int]] = {}
        # One save at a time per writer: the base copies are recycled between saves.
        self._save_lock = threading.Lock()
        # The store's gc generation when this writer last looked (see _after_gc).
        self._gc_generation: str | None = None
        # Deltas this writer made on each keyframe its last save used: the catalog's count
        # drops when gc collects deltas, and a kept-last-2 run would never re-key otherwise.
        self._deltas_made: dict[str, int] = {}

    # -- chunks ---------------------------------------------------------------------------------

    def _cut(self, leaves: Sequence[tuple[str, ArrayBytes]]) -> list[_Chunk]:
        chunks = []
        for i, (_, arr) in enumerate(leaves):
            width = plane_width(arr.dtype, arr.element_size)
            keep = self.delta and delta_eligible(arr)
            for n, (start, stop) in enumerate(chunk_bounds(len(arr.data), self.chunk_size)):
                chunks.append(_Chunk(i, n, arr.data[start:stop], width, keep))
        return chunks

    def _encode(
        self, chunk: _Chunk, base: Base | None, base_bytes: Kept | None, slot: int = 0
    ) -> list[bytes | memoryview]:
        if base is None:
            return codecs.encode_parts(chunk.data, chunk.width, codec=self.codec, slot=slot)
        if base_bytes is None:
            raise ValueError(f"a delta on {base.id[:16]} needs the base's bytes")
        return codecs.encode_parts(
            chunk.data,
            chunk.width,
            codec=self.codec,
            base=base_bytes,
            base_id=bytes.fromhex(base.id),
            slot=slot,
        )

    def _put(
        self, chunk: _Chunk, object_id: str, parts: list[bytes | memoryview], base: Base | None
    ) -> queries.NewObject:
        self.objects.put_parts(object_id, parts)
        return queries.NewObject(
            object_id,
            codecs.Kind.CHUNK,
            len(chunk.data),
            sum(len(p) for p in parts),
            base.id if base else None,
            base.depth + 1 if base else 0,
        )

    def _store_choosing(
        self, chunk: _Chunk, object_id: str, base: Base, base_bytes: Kept
    ) -> tuple[queries.NewObject, bool]:
        """Encode with and without the base, keep the smaller; say whether the delta won.

        A delta (the zigzag difference for 2-, 4- and 8-byte elements, XOR for
        other widths: codecs.default_delta) helps where values drift slowly
        (weights, Adam's second moment) and hurts where they do not (Adam's
        first moment): one chunk decides for its entry.
        """
        delta = self._encode(chunk, base, base_bytes, slot=1)
        full = self._encode(chunk, None, None, slot=0)
        if sum(len(p) for p in delta) < sum(len(p) for p in full):
            return self._put(chunk, object_id, delta, base), True
        return self._put(chunk, object_id, full, None), False

    def _decide(
        self, job: _Job, object_id: str, base_bytes: Kept
    ) -> tuple[queries.NewObject, bool]:
        """Store the deciding chunk and say whether its entry goes delta.

        Encoding both ways doubles the work of an entry's first chunk, and most
        entries of a model are a single chunk: so the last decision is reused
        for ``RECHECK_EVERY`` saves, and a delta that comes out nearly as large
        as the raw bytes is checked against the full encoding at once.
        """
        assert job.base is not None
        with self._claim_lock:
            hint = self._hints.get(job.hint_key)
        if hint is None or hint[1] >= RECHECK_EVERY:
            new, won = self._store_choosing(job.chunk, object_id, job.base, base_bytes)
            age = 0
        else:
            won, age = hint[0], hint[1] + 1
            base = job.base if won else None
            parts = self._encode(job.chunk, base, base_bytes)
            if won and sum(len(p) for p in parts) > SUSPECT_DELTA * len(job.chunk.data):
                new, won = self._store_choosing(job.chunk, object_id, job.base, base_bytes)
                age = 0
            else:
                new = self._put(job.chunk, object_id, parts, base)
        with self._claim_lock:
            self._hints[job.hint_key] = (won, age)
        return new, won

    def _unchanged(
        self, job: _Job, known: Mapping[str, StoredChunk], recent: dict[str, Kept]
    ) -> tuple[str, Kept] | None:
        """A kept copy the chunk still holds exactly the bytes of, and its id: the parent's
        version of the chunk, or the keyframe it is a delta of (those are the copies kept)."""
        for candidate in (job.parent_id, job.base.id if job.base else None):
            if candidate is None or candidate not in known:
                continue
            copy = recent.get(candidate)
            if copy is not None and same_bytes(job.chunk.data, copy):
                return candidate, copy
        return None

    def _base_bytes(self, base: Base, recent: dict[str, Kept]) -> Kept:
        """The raw bytes of a planned base: the kept copy, else decoded from the store."""
        kept = recent.get(base.id)
        return kept if kept is not None else self.load_chunk(base.id)

    def _process_all(
        self,
        jobs: list[_Job],
        known: Mapping[str, StoredChunk],
        claimed: set[str],
        recent: dict[str, Kept],
        snapshots: list[Kept],
    ) -> list[_Outcome]:
        """:meth:`_process` each job of one task, in order.

        If one fails, the decisions the task's later jobs owe their entries are
        failed too: chunks in other tasks wait for them.
        """
        outcomes: list[_Outcome] = []
        try:
            for job in jobs:
                outcomes.append(self._process(job, known, claimed, recent, snapshots))
        except BaseException as exc:
            _fail_decisions(jobs[len(outcomes) + 1 :], exc)
            raise
        return outcomes

    def _process(
        self,
        job: _Job,
        known: Mapping[str, StoredChunk],
        claimed: set[str],
        recent: dict[str, Kept],
        snapshots: list[Kept],
    ) -> _Outcome:
        """Hash one chunk; if the store lacks it, encode and write it; keep it as a base.

        A delta-eligible chunk equal to the parent's kept copy is the parent's
        chunk, found without hashing.  Otherwise it is copied first, and its id,
        its object and the next save's base all come from that private copy:
        the three agree even if the caller's memory changed meanwhile.

        A decider always settles its entry's decision, so the chunks waiting on
        it cannot hang (they were queued after it, so it is running or done).
        """
        try:
            size = len(job.chunk.data)
            snapshot: Kept | None = None
            if job.chunk.keep:
                same = self._unchanged(job, known, recent)
                if same is not None:
                    return _Outcome(same[0], None, same, False, size)
                snapshot = self.copies.copy(job.chunk.data)
                snapshots.append(snapshot)
                job = dataclasses.replace(
                    job, chunk=dataclasses.replace(job.chunk, data=memoryview(snapshot))
                )
            chunk = job.chunk
            object_id = digest(chunk.data).hex()
            own = (object_id, snapshot) if snapshot is not None else None
            with self._claim_lock:
                first = object_id not in claimed
                claimed.add(object_id)
            if object_id in known or not first:
                # Kept under its own id, even a delta's: an unchanged chunk is then compared,
                # not hashed, at the next save, which decodes the keyframe if it changes.
                return _Outcome(object_id, None, own, False, size)
            if self.objects.adopt(object_id):  # left by a dead save, or another's in flight
                return _Outcome(object_id, None, own, True, size)
            base_bytes: Kept | None = None
            if job.decides:
                assert job.base is not None and job.decision is not None
                base_bytes = self._base_bytes(job.base, recent)
                new, won = self._decide(job, object_id, base_bytes)
                job.decision.set_result(won)
            else:
                # Only a chunk with a base waits for its entry's decision: the decider is
                # the entry's first chunk with one, which may come after this chunk.
                decision = job.decision if job.base is not None else None
                base = job.base if decision is not None and decision.result() else None
                if base is not None:  # read only for a delta: a full entry needs no base
                    base_bytes = self._base_bytes(base, recent)
                new = self._put(chunk, object_id, self._encode(chunk, base, base_bytes), base)
            if snapshot is None:
                return _Outcome(object_id, new, None, False, size)
            # The next version's base: this chunk if it is a keyframe, else its keyframe.
            if new.base_id is None:
                return _Outcome(object_id, new, own, False, size)
            assert base_bytes is not None
            return _Outcome(object_id, new, (new.base_id, base_bytes), False, size)
        except BaseException as exc:
            if job.decides and job.decision is not None and not job.decision.done():
                job.decision.set_exception(exc)
            raise
        finally:
            if job.decides and job.decision is not None and not job.decision.done():
                job.decision.set_result(True)  # unchanged: its delta, if any, stays

    def _plan(
        self, leaves: Sequence[tuple[str, ArrayBytes]], chunks: list[_Chunk], parent: str | None
    ) -> tuple[
        list[list[str | None]], list[list[Base | None]], dict[str, StoredChunk], dict[str, int]
    ]:
        """Each chunk's counterpart in the parent, its planned base, what the catalog says of
        the parent's chunks and their keyframes, and the deltas on those keyframes.

        Every chunk of this save found among those is known to the catalog
        and is not written again.  A keyframe's deltas are the most of
        the catalog's count and this writer's own (gc lowers the first).
        """
        counts = [0] * len(leaves)
        for chunk in chunks:
            counts[chunk.entry] += 1
        none: list[list[Any]] = [[None] * n for n in counts]  # read only: shared is fine
        if parent is None:
            return none, none, {}, {}
        with read_transaction(self.engine) as conn:
            before = queries.entry_chunks_of(conn, parent)
            known = queries.stored_chunks(
                conn, {cid for entry in before.values() for cid in entry.chunk_ids}
            )
            keyframes = {k for k in (keyframe_of(c, known) for c in known) if k is not None}
            known.update(queries.stored_chunks(conn, keyframes - known.keys()))
            deltas_on = queries.delta_counts(conn, keyframes) if self.delta else {}
        for keyframe in keyframes:
            made = self._deltas_made.get(keyframe, 0)
            if made > deltas_on.get(keyframe, 0):
                deltas_on[keyframe] = made
        if not self.delta:
            return none, none, known, {}
        parents = parent_chunks(leaves, counts, before)
        return parents, plan_bases(parents, known, deltas_on), known, deltas_on

    def _jobs(
        self,
        chunks: list[_Chunk],
        parents: list[list[str | None]],
        plan: list[list[Base | None]],
        paths: Sequence[str],
        branch: str,
    ) -> list[_Job]:
        """One job per chunk; the first chunk with a base in each entry decides for the entry."""
        deciders: dict[int, int] = {}
        for chunk in chunks:
            if plan[chunk.entry][chunk.index] is not None:
                deciders.setdefault(chunk.entry, chunk.index)
        decisions: dict[int, Future[bool]] = {entry: Future() for entry in deciders}
        return [
            _Job(
                chunk,
                parents[chunk.entry][chunk.index],
                plan[chunk.entry][chunk.index],
                decisions.get(chunk.entry),
                deciders.get(chunk.entry) == chunk.index,
                (branch, paths[chunk.entry]),
            )
            for chunk in chunks
        ]

    def write_chunks(
        self,
        leaves: Sequence[tuple[str, ArrayBytes]],
        branch: str,
        parent: str | None,
        progress: Progress | None,
        snapshots: list[Kept],
    ) -> _Written:
        """Store every chunk the store lacks, as a delta where that pays.

        Each chunk is hashed, skipped if the store has it, else encoded and
        written; a large chunk is a task of its own, small ones share tasks
        (:func:`_tasks`), so the disk is busy from the first chunk on.  Deciders
        are queued first: a task waiting for its entry's decision only ever waits
        for a task that was sent before it, and a task cancelled before it ran
        fails the decisions it owed (else a task sent after it would wait for
        ever).  Every copy a task makes is added to ``snapshots``, for the caller
        to recycle those not kept once the save is over.
        """
        chunks = self._cut(leaves)
        parents, plan, known, deltas_on = self._plan(leaves, chunks, parent)
        jobs = self._jobs(chunks, parents, plan, [path for path, _ in leaves], branch)
        recent = self.recent.for_parent(branch, parent)
        claimed: set[str] = set()
        order = sorted(range(len(jobs)), key=lambda k: not jobs[k].decides)  # stable
        tasks = _tasks(order, [len(job.chunk.data) for job in jobs], [job.decides for job in jobs])
        futures: list[Future[list[_Outcome]]] = []
        try:
            for task in tasks:
                task_jobs = [jobs[k] for k in task]
                future = self.pool.submit(
                    self._process_all, task_jobs, known, claimed, recent, snapshots
                )
                if any(job.decides for job in task_jobs):
                    future.add_done_callback(functools.partial(_fail_if_cancelled, task_jobs))
                futures.append(future)
        except BaseException:  # interrupted while submitting: no task may outlive the save
            _cancel_and_wait(futures)
            raise
        done = _gather(futures, progress, lambda batch: sum(o.raw_bytes for o in batch))
        by_job: dict[int, _Outcome] = {}
        for task, batch in zip(tasks, done, strict=True):
            by_job.update(zip(task, batch, strict=True))
        outcomes = [by_job[k] for k in range(len(jobs))]
        new_objects = [o.new for o in outcomes if o.new is not None]
        new_objects.extend(self._uncatalogued(outcomes, chunks))
        per_entry: list[list[str]] = [[] for _ in leaves]
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            per_entry[chunk.entry].append(outcome.object_id)
        kept: dict[str, Kept] = {}  # the next save's bases: one copy per chunk id
        for outcome in outcomes:
            if outcome.kept is not None:
                kept.setdefault(*outcome.kept)
        planned = {b.id for entry in plan for b in entry if b is not None}
        on = {keyframe: deltas_on.get(keyframe, 0) for keyframe in planned}
        for new in new_objects:
            if new.base_id in on:
                on[new.base_id] += 1
        return _Written(per_entry, new_objects, kept, on)

    def _uncatalogued(
        self, outcomes: list[_Outcome], chunks: list[_Chunk]
    ) -> list[queries.NewObject]:
        """Objects found on disk that the catalog does not know (a dead save's): record them.

        Their size and base are read back from the file by :meth:`_as_stored`.
        """
        sizes = {
            o.object_id: len(c.data) for o, c in zip(outcomes, chunks, strict=True) if o.on_disk
        }
        if not sizes:
            return []
        with read_transaction(self.engine) as conn:
            known = queries.object_depths(conn, set(sizes))
        return [
            queries.NewObject(object_id, codecs.Kind.CHUNK, raw, -1, None, 0)
            for object_id, raw in sizes.items()
            if object_id not in known
        ]

    def _as_stored(self, objects: list[queries.NewObject]) -> list[queries.NewObject]:
        """Describe each object as it is on disk, not as this save encoded it.

        They differ when the id was already there (left by a save that died
        before its commit, or stored by a concurrent writer first): the catalog
        must record the base and size of the object that will be read.  Only
        those are read back: the objects found on disk (their size is not
        known yet) and the puts the object store says another writer won.
        """
        by_others = self.objects.put_by_others([n.id for n in objects if n.stored_bytes >= 0])
        result = []
        for new in objects:
            if new.stored_bytes >= 0 and new.id not in by_others:
                result.append(new)
                continue
            head = self.objects.read_head(new.id, HEAD_BYTES)
            base = peek_base_id(head, new.id)
            base_id = base.hex() if base is not None else None
            size = self.objects.size(new.id)
            if base_id == new.base_id and size == new.stored_bytes:
                result.append(new)
                continue
            depth = self._depth(base_id)
            result.append(queries.NewObject(new.id, new.kind, new.raw_bytes, size, base_id, depth))
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

    def _after_gc(self, generation: str | None) -> None:
        """Drop what earlier saves left in memory if a gc ran since (the caller holds the lock).

        A save decides what to skip only from the catalog and the disk, read
        under the writer lock (layout.writing) that gc cannot take meanwhile:
        nothing this writer carries from one save to the next tells it an
        object exists.  The chunk copies kept as delta bases are bytes named
        by their hash, right whatever gc did; they are dropped all the same,
        so that no knowledge older than a gc outlives it, whatever is cached
        here in the future.  Cost: the first save after a gc reads its delta
        bases back from the store.  The count of deltas made on each keyframe
        stays: it is about this writer's saves, not about what exists, and gc
        lowering the catalog's count is why it is kept (see _plan).
        """
        if generation != self._gc_generation:
            self.recent.clear()
            self._gc_generation = generation

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
        with self._save_lock:
            return self._save(
                flat, branch=branch, message=message, step=step, metrics=metrics, progress=progress
            )

    def _save(
        self,
        flat: tree.FlatState,
        *,
        branch: str,
        message: str,
        step: int | None,
        metrics: dict[str, float | int],
        progress: Progress | None,
    ) -> CheckpointInfo:
        with read_transaction(self.engine) as conn:
            head = queries.get_ref(conn, branch)
            self._after_gc(queries.get_meta(conn).get(queries.GC_GENERATION))
        parent = head[1] if head else None
        snapshots: list[Kept] = []
        remembered: dict[str, Kept] = {}
        try:
            try:
                written = self.write_chunks(flat.leaves, branch, parent, progress, snapshots)
            except BaseException:
                # Let the writes already started finish (or fail) now, so that their
                # errors do not surface in a later, unrelated save.
                with suppress(Exception):
                    self.objects.flush()
                raise
            info = self._commit(
                flat,
                written,
                branch=branch,
                parent=parent,
                message=message,
                step=step,
                metrics=metrics,
            )
            remembered = written.recent
            self._deltas_made = written.deltas_on
            return info
        finally:
            # Every task is done (write_chunks waits for all, even when one fails): the
            # copies not remembered as the branch's bases go back, whether the save
            # succeeded or not.
            in_use = {id(k) for k in remembered.values()}
            self.copies.recycle(k for k in snapshots if id(k) not in in_use)

    def _commit(
        self,
        flat: tree.FlatState,
        written: _Written,
        *,
        branch: str,
        parent: str | None,
        message: str,
        step: int | None,
        metrics: dict[str, float | int],
    ) -> CheckpointInfo:
        """Write the manifest, make every object durable, then record the checkpoint and move
        the branch in one catalog transaction (re-parenting if another writer moved it)."""
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
            try:
                self.objects.put_if_absent(checkpoint_id, encoded)
            except BaseException:
                # The chunks' writes may still be on the I/O pool: let them finish (or
                # fail) here, not into a later save's flush.
                with suppress(Exception):
                    self.objects.flush()
                raise
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


def _fail_decisions(jobs: Sequence[_Job], exc: BaseException) -> None:
    """Fail the decisions ``jobs`` owe their entries and will not make: the chunks waiting
    for them in other tasks then fail too, instead of waiting for ever."""
    for job in jobs:
        if job.decides and job.decision is not None and not job.decision.done():
            job.decision.set_exception(exc)


def _fail_if_cancelled(jobs: list[_Job], future: Future[list[_Outcome]]) -> None:
    """A task cancelled before it ran never decides for its entries."""
    if future.cancelled():
        _fail_decisions(jobs, CancelledError())


def _tasks(order: Sequence[int], sizes: Sequence[int], decides: Sequence[bool]) -> list[list[int]]:
    """Jobs in ``order`` (deciders first) grouped into tasks: a chunk of SMALL_CHUNK_BYTES or
    more alone, smaller ones together up to SMALL_TASK_BYTES.

    A job may wait for its entry's decider, so every decider is in a task
    submitted before the first task holding a job that is not one: small
    deciders still gathered are sent off before the first non-decider.
    """
    tasks: list[list[int]] = []
    small: list[int] = []
    small_bytes = 0
    deciding = True
    for k in order:
        if deciding and not decides[k]:
            deciding = False
            if small:
                tasks.append(small)
                small, small_bytes = [], 0
        if sizes[k] >= SMALL_CHUNK_BYTES:
            tasks.append([k])
            continue
        if small and small_bytes + sizes[k] > SMALL_TASK_BYTES:
            tasks.append(small)
            small, small_bytes = [], 0
        small.append(k)
        small_bytes += sizes[k]
    if small:
        tasks.append(small)
    return tasks


def _gather(
    futures: list[Future[T]],
    progress: Progress | None = None,
    weigh: Callable[[T], int] | None = None,
) -> list[T]:
    """Results in order; on the first error cancel the rest and wait for the running ones.

    Waiting matters: a task still running after the save gave up could leave
    a temporary file behind, or fail into a later save.
    """
    results = []
    try:
        for future in futures:
            result = future.result()
            results.append(result)
            if progress and weigh:
                progress(weigh(result))
    except BaseException:
        _cancel_and_wait(futures)
        raise
    return results


def _cancel_and_wait(futures: list[Future[T]]) -> None:
    """Cancel the tasks not started and wait for the running ones to end."""
    for future in futures:
        future.cancel()
    wait(futures)


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
