"""The store: the one object users hold.  ``deltastore.open(path)`` returns it.

It ties the layers together (tree, codecs through the writer and reader,
objects, catalog) and holds the store-wide resources: the catalog engine and
the thread pool that runs chunk work on every core.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DatabaseError

from deltastore import codecs, journal, layout, refs, tree
from deltastore.catalog import migrate, queries
from deltastore.catalog.engine import make_engine, read_transaction, write_transaction
from deltastore.chunking import DEFAULT_CHUNK_SIZE
from deltastore.diff import CheckpointComparer, CheckpointDiff
from deltastore.errors import (
    CatalogDamagedError,
    CorruptObjectError,
    RefExistsError,
    RefNotFoundError,
)
from deltastore.exchange.export import export_checkpoint, export_target
from deltastore.exchange.imports import import_into
from deltastore.forget import ForgetReport
from deltastore.forget import forget as forget_checkpoints
from deltastore.gc import GcReport, find_garbage, sweep, unlisted_history
from deltastore.gc import report as gc_report
from deltastore.info import CheckpointInfo, EntryInfo, StoreStats
from deltastore.load import CheckpointReader, ListedCheckpoint, read_manifest
from deltastore.objects import LocalObjectStore, ObjectStore
from deltastore.prefix_stats import PrefixReport, by_prefix
from deltastore.progress import BYTES, CHECKPOINTS, CHUNKS, OBJECTS, Progress, ProgressFactory
from deltastore.progress import bar as progress_bar
from deltastore.refs import DEFAULT_BRANCH
from deltastore.retention import KeepPolicy
from deltastore.save import CheckpointWriter, validate_inputs
from deltastore.thin import ThinReport
from deltastore.thin import thin as thin_entries
from deltastore.verify import Verifier, VerifyReport

#: gc's sweep shows a bar from the first object: a default bar draws only once the work has
#: lasted a second (deltastore.progress), which a size threshold guessed wrong.
PROGRESS_MIN_OBJECTS = 1


def open(
    path: str | os.PathLike[str],
    create: bool = False,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    codec: str = codecs.DEFAULT_CODEC,
    progress: bool | None = None,
    durable: bool = True,
    delta: bool = True,
) -> Store:
    """Open the store at ``path``; with ``create=True`` make it first if it does not exist.

    ``chunk_size`` applies to a new store only (it is fixed at creation).
    ``codec`` ("zstd" or "lz4") is used for what this handle writes.
    ``progress``: show progress bars (default: when stderr is a terminal).
    ``durable=False`` skips the fsync of each object: a save is then still
    atomic against a killed process (the page cache survives it) but a power
    loss may make the newest checkpoints unreadable (restore detects it by
    hash; it never returns wrong bytes).  fsync costs the disk's write
    bandwidth, which torch.save does not pay.
    ``delta=False`` stores every changed chunk in full (no XOR against the
    parent, and no copy of the last saved state kept in memory).
    """
    root = Path(path)
    if create and not layout.is_store(root):
        init(root, chunk_size=chunk_size)
    return Store(
        root,
        codec=codec,
        progress=progress,
        objects=LocalObjectStore(root / layout.OBJECTS_DIR, durable=durable),
        delta=delta,
    )


def init(path: str | os.PathLike[str], *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Path:
    """Create an empty store (idempotent for an existing store)."""
    root = Path(path)
    if chunk_size <= 0 or chunk_size % 16:
        raise ValueError(f"chunk_size must be a positive multiple of 16, not {chunk_size}")
    layout.prepare_new(root)
    with layout.store_lock(root):
        if layout.is_store(root):
            return root
        LocalObjectStore.create(root / layout.OBJECTS_DIR)
        engine = make_engine(layout.catalog_url(root))
        try:
            migrate.upgrade(engine)
            with write_transaction(engine) as conn:
                queries.set_meta(conn, {"chunk_size": str(chunk_size)})
        finally:
            engine.dispose()
        layout.write_format(root)  # last: a half-made store is never taken for a store
    return root


def _check_catalog_file(root: Path) -> None:
    """CatalogDamagedError when the store's catalog file is gone or empty.

    init writes the catalog before FORMAT, so a store without one lost it.  SQLite
    would create a fresh, empty catalog in its place, which lists no object: the
    store looked empty and gc deleted every object, the very ones rebuild needs.
    """
    catalog = root / layout.CATALOG_FILE
    try:
        empty = catalog.stat().st_size == 0
    except FileNotFoundError:
        raise CatalogDamagedError(str(root), f"{layout.CATALOG_FILE} is missing") from None
    wal = Path(f"{catalog}-wal")  # in WAL mode the pages may all still sit in the -wal
    if empty and not (wal.exists() and wal.stat().st_size > 0):
        raise CatalogDamagedError(str(root), f"{layout.CATALOG_FILE} is empty")


class Store:
    """A deltastore store: save, load, and inspect checkpoints."""

    def __init__(
        self,
        root: Path,
        *,
        codec: str = codecs.DEFAULT_CODEC,
        progress: bool | None = None,
        objects: ObjectStore | None = None,
        catalog_url: str | None = None,
        delta: bool = True,
    ) -> None:
        self._format_current = layout.check_format(root) >= layout.STORE_FORMAT
        if codec not in codecs.CODECS:
            raise ValueError(f"unknown codec {codec!r}; choose one of {codecs.CODECS}")
        if catalog_url is None:
            _check_catalog_file(root)
        self.root = root
        self.codec = codec
        self.progress = progress
        self.objects = objects or LocalObjectStore(root / layout.OBJECTS_DIR)
        self.engine = make_engine(catalog_url or layout.catalog_url(root))
        try:
            self._ensure_schema()
            with read_transaction(self.engine) as conn:
                meta = queries.get_meta(conn)
        except DatabaseError as exc:
            self.engine.dispose()
            cause = exc.orig
            busy = isinstance(cause, sqlite3.OperationalError)  # locked, busy: not damage
            if isinstance(cause, sqlite3.DatabaseError) and not busy:
                raise CatalogDamagedError(str(root), str(cause)) from None
            raise
        except BaseException:
            self.engine.dispose()
            raise
        self.chunk_size = int(meta.get("chunk_size", DEFAULT_CHUNK_SIZE))
        self._pool = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="deltastore"
        )
        self._reader = CheckpointReader(self.objects, self._pool)
        self._writer = CheckpointWriter(
            self.engine,
            self.objects,
            self._pool,
            self._reader.read_chunk,
            chunk_size=self.chunk_size,
            codec=codec,
            delta=delta,
        )

    def _ensure_schema(self) -> None:
        if migrate.check(self.engine):
            return
        with layout.store_lock(self.root):
            if not migrate.check(self.engine):  # another process may have upgraded meanwhile
                migrate.upgrade(self.engine)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the thread pool and the catalog connections."""
        self._pool.shutdown(wait=True)
        self.objects.close()
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<deltastore.Store {str(self.root)!r}>"

    def _progress(
        self, total: int, desc: str, unit: str = BYTES, min_total: int = 0
    ) -> AbstractContextManager[Progress | None]:
        """A bar as :mod:`deltastore.progress` draws them, as ``self.progress`` says."""
        return progress_bar(total, desc, show=self.progress, unit=unit, min_total=min_total)

    def _counting(self, unit: str) -> ProgressFactory:
        """Bars that count ``unit`` (objects, checkpoints) instead of bytes."""
        return functools.partial(self._progress, unit=unit)

    # -- writing --------------------------------------------------------------------------------

    def save(
        self,
        state: Any,
        message: str = "",
        *,
        step: int | None = None,
        metrics: dict[str, float | int] | None = None,
        branch: str = refs.DEFAULT_BRANCH,
    ) -> str:
        """Save a state as a new checkpoint on ``branch``; return its 64-hex id.

        The state is a tree of dicts, lists, tuples, scalars and arrays
        (DESIGN.md); anything else raises UnsupportedTypeError before anything
        is written.  Chunks the store already holds are not written again.
        """
        refs.validate_name(branch)
        clean_metrics = validate_inputs(message, step, metrics)
        self._upgrade_format()
        flat = tree.flatten(state)
        total = sum(len(arr.data) for _, arr in flat.leaves)
        # The writer lock: gc must not sweep this save's objects before its commit lists them.
        with layout.writing(self.root), self._progress(total, "save") as progress:
            info = self._writer.save(
                flat,
                branch=branch,
                message=message,
                step=step,
                metrics=clean_metrics,
                progress=progress,
            )
        return info.id

    # -- refs -----------------------------------------------------------------------------------

    def tag(self, name: str, ref: str = refs.DEFAULT_BRANCH, *, force: bool = False) -> str:
        """Name the checkpoint ``ref`` points at; return its id.

        An existing tag moves only with ``force`` (RefExistsError otherwise);
        a branch of that name is never replaced by a tag.
        """
        return self._set_ref(name, refs.TAG, ref, force)

    def branch(self, name: str, ref: str = refs.DEFAULT_BRANCH, *, force: bool = False) -> str:
        """Start branch ``name`` at ``ref``'s checkpoint; return its id."""
        return self._set_ref(name, refs.BRANCH, ref, force)

    def delete_ref(self, name: str) -> None:
        """Remove a tag or branch (the checkpoints stay until gc); RefNotFoundError if none."""
        with read_transaction(self.engine) as conn:
            existing = queries.get_ref(conn, name)
        if existing is None:
            raise RefNotFoundError(name, "no branch or tag of that name")
        now_us = time.time_ns() // 1000
        self._upgrade_format()
        with layout.writing(self.root):  # the record is unlisted until the commit: no gc
            [record] = self._journal([journal.RefRecord(now_us, name, existing[0], None)])
            with write_transaction(self.engine) as conn:
                if not queries.delete_ref(conn, name):
                    raise RefNotFoundError(name, "no branch or tag of that name")
                queries.insert_objects(conn, [(record, now_us)])

    def _set_ref(self, name: str, kind: str, ref: str, force: bool) -> str:
        refs.validate_name(name)
        with read_transaction(self.engine) as conn:
            checkpoint_id = refs.resolve(conn, ref)
            if queries.get_ref(conn, name) == (kind, checkpoint_id):
                return checkpoint_id  # already there: nothing to record
            self._check_ref_move(conn, name, kind, checkpoint_id, force)
        now_us = time.time_ns() // 1000
        self._upgrade_format()
        with layout.writing(self.root):  # the record is unlisted until the commit: no gc
            [record] = self._journal([journal.RefRecord(now_us, name, kind, checkpoint_id)])
            with write_transaction(self.engine) as conn:
                if queries.get_checkpoint(conn, checkpoint_id) is None:  # forgotten meanwhile
                    raise RefNotFoundError(ref, "the checkpoint was removed meanwhile")
                self._check_ref_move(conn, name, kind, checkpoint_id, force)
                queries.set_ref(conn, name, kind, checkpoint_id, now_us)
                queries.insert_objects(conn, [(record, now_us)])
        return checkpoint_id

    @staticmethod
    def _check_ref_move(
        conn: Connection, name: str, kind: str, checkpoint_id: str, force: bool
    ) -> None:
        existing = queries.get_ref(conn, name)
        moved = existing is not None and existing != (kind, checkpoint_id)
        if existing is not None and moved and (not force or existing[0] != kind):
            raise RefExistsError(name, existing[0], existing[1])

    def _journal(self, records: Sequence[journal.Record]) -> list[queries.NewObject]:
        """Write journal records (durable) before the catalog transaction they explain.

        The caller raised the store's format (:meth:`_upgrade_format`) before it took the
        writer lock.
        """
        assert self._format_current, "call _upgrade_format() before layout.writing"
        return journal.write(self.objects, records, self.codec)

    def _upgrade_format(self) -> None:
        """Raise an older store's FORMAT before writing objects it could not read.

        Always before ``layout.writing``, never inside: the upgrade takes the store
        lock, which rebuild holds while it waits for every writer to leave; a writer
        asking for it from inside the writer lock deadlocked with a rebuild.
        """
        if not self._format_current:
            layout.upgrade_format(self.root)
            self._format_current = True

    # -- reading --------------------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """The full checkpoint id of a ref expression (branch, tag, id, prefix, ``~N``)."""
        with read_transaction(self.engine) as conn:
            return refs.resolve(conn, ref)

    def load(self, ref: str = refs.DEFAULT_BRANCH) -> Any:
        """Restore a whole state, bit-exact and verified against its hashes.

        Entries ``thin`` removed are left out: gone from their dicts, None in
        their lists and tuples.
        """
        with (
            self._reading(ref) as listed,
            self._progress(listed.info.logical_bytes, "load") as progress,
        ):
            return self._reader.load(listed, progress)

    def load_tensor(self, ref: str, key_path: str) -> Any:
        """Restore one array entry without decoding the others.

        EntryNotFoundError if the checkpoint has no such entry (EntryThinnedError,
        a subclass, if ``thin`` removed it).
        """
        with self._reading(ref) as listed:
            return self._reader.load_entry(listed, key_path)

    @contextmanager
    def _reading(self, ref: str, *, entries: bool = False) -> Iterator[ListedCheckpoint]:
        """Checkpoint ``ref`` as the catalog lists it (:meth:`_listed`), for the block to read.

        Reads (load, export, diff) take no lock (gc.py): an object gone mid-read
        is corruption only if the catalog still lists the checkpoint it was read
        for; one that forget and gc removed meanwhile is RefNotFoundError.  A diff
        nests two: each answers for errors naming its own checkpoint.
        """
        checkpoint_id = self.resolve(ref)
        try:
            yield self._listed(ref, checkpoint_id, entries=entries)
        except CorruptObjectError as exc:
            if exc.checkpoint_id not in (None, checkpoint_id):
                raise
            with read_transaction(self.engine) as conn:
                gone = queries.get_checkpoint(conn, checkpoint_id) is None
            if gone:
                raise RefNotFoundError(
                    ref, "the checkpoint was forgotten and collected while it was read"
                ) from None
            raise

    def _listed(self, ref: str, checkpoint_id: str, *, entries: bool) -> ListedCheckpoint:
        """The checkpoint as the catalog lists it now, its manifest without thinned entries.

        What load, export and diff read: thin removes entries from the catalog
        only, as manifests are immutable.  ``entries``: also the catalog's entry
        rows (diff).  Reads the manifest, so it runs inside :meth:`_reading`,
        which tells a concurrent gc from corruption.
        """
        with read_transaction(self.engine) as conn:
            found = queries.get_checkpoint(conn, checkpoint_id)
            rows = queries.entries_of(conn, checkpoint_id) if entries else None
            present = (
                {e.key_path for e in rows}
                if rows is not None
                else queries.key_paths_of(conn, checkpoint_id)
            )
        if found is None:  # forgotten since resolve()
            raise RefNotFoundError(ref, "the checkpoint was removed meanwhile")
        saved = read_manifest(self.objects, checkpoint_id)
        return ListedCheckpoint.of(found, present, saved, rows)

    def info(self, ref: str) -> CheckpointInfo:
        checkpoint_id = self.resolve(ref)
        with read_transaction(self.engine) as conn:
            found = queries.get_checkpoint(conn, checkpoint_id)
        if found is None:  # resolve() just saw it: only a concurrent gc could get here
            raise RefNotFoundError(ref)
        return found

    def entries(self, ref: str) -> list[EntryInfo]:
        """The array entries of a checkpoint, in save order."""
        checkpoint_id = self.resolve(ref)
        with read_transaction(self.engine) as conn:
            return queries.entries_of(conn, checkpoint_id)

    def diff(self, a: str, b: str, prefix: str | None = None) -> CheckpointDiff:
        """How checkpoint ``b`` differs from ``a``, entry by entry, and their metric deltas.

        Identical entries are found in the catalog without decoding; changed
        ones are decoded and measured (max abs difference, L2 norm of the
        difference, relative change, fraction of elements changed).
        ``prefix`` keeps only key paths starting with it (e.g. ``"model/"``).
        """
        with self._reading(a, entries=True) as side_a, self._reading(b, entries=True) as side_b:
            return CheckpointComparer(self._reader, self._progress).diff(side_a, side_b, prefix)

    def log(
        self, ref: str = refs.DEFAULT_BRANCH, limit: int | None = None
    ) -> Iterator[CheckpointInfo]:
        """Checkpoints from ``ref`` back along its parents, newest first.

        An empty store (or a branch with no checkpoints yet) yields nothing.
        """
        try:
            checkpoint_id: str | None = self.resolve(ref)
        except RefNotFoundError:
            if ref == refs.DEFAULT_BRANCH:
                return
            raise
        count = 0
        with read_transaction(self.engine) as conn:
            while checkpoint_id is not None and (limit is None or count < limit):
                found = queries.get_checkpoint(conn, checkpoint_id)
                if found is None:
                    raise CorruptObjectError(checkpoint_id, "parent missing from the catalog")
                yield found
                count += 1
                checkpoint_id = found.parent

    def refs(self) -> dict[str, tuple[str, str]]:
        """name -> (kind, checkpoint id) for every branch and tag."""
        with read_transaction(self.engine) as conn:
            return {name: (kind, cid) for name, kind, cid in queries.list_refs(conn)}

    def stats(self) -> StoreStats:
        """Logical and stored bytes of the whole store, and per checkpoint."""
        with read_transaction(self.engine) as conn:
            checkpoints = queries.all_checkpoints(conn)
            object_count, stored = queries.object_totals(conn)
        return StoreStats(
            checkpoint_count=len(checkpoints),
            object_count=object_count,
            logical_bytes=sum(c.logical_bytes for c in checkpoints),
            stored_bytes=stored,
            checkpoints=checkpoints,
        )

    # -- checking and accounting ----------------------------------------------------------------

    def verify(self, *, full: bool = False) -> VerifyReport:
        """Check the catalog against the objects; with ``full`` also decode and re-hash all.

        Quick: every object the catalog lists exists with its recorded size,
        and every object it mentions (chunk, manifest, delta base) is listed.
        Full: every object decoded once (delta chains resolved) and re-hashed,
        and every manifest compared with its checkpoint's catalog rows.
        Problems are reported, not raised: see ``VerifyReport.problems``.
        """
        return Verifier(
            self.engine, self.objects, self._pool, self._progress, self._counting(OBJECTS)
        ).run(full=full)

    def stats_by_prefix(self, depth: int = 1, ref: str | None = None) -> PrefixReport:
        """Logical and stored bytes per key prefix of ``depth`` components, from the catalog.

        Over every checkpoint, or over checkpoint ``ref`` alone; each object is
        counted once, under the prefix of the first entry that uses it.
        """
        checkpoint_id = None if ref is None else self.resolve(ref)
        with read_transaction(self.engine) as conn:
            return by_prefix(conn, depth, checkpoint_id, self._counting(CHUNKS))

    def read_chunk(self, object_id: str) -> bytes:
        """A chunk object's raw bytes, its delta chain resolved, verified against its id."""
        return self._reader.read_chunk(object_id)

    # -- export and import ----------------------------------------------------------------------

    def export(
        self,
        ref: str,
        path: str | os.PathLike[str],
        *,
        format: str | None = None,
        prefix: str | None = None,
    ) -> Path:
        """Write checkpoint ``ref`` (or its subtree at key path ``prefix``) to a file.

        ``format`` is "safetensors" (the array entries, named by key path below
        the prefix; non-array leaves are left out) or "torch" (``torch.save`` of
        the tree, loadable with ``torch.load(weights_only=True)``; numpy arrays
        become tensors); by default the extension decides (.safetensors, .pt,
        .pth).  The file appears whole or not at all.
        """
        target = export_target(path, format, prefix)
        with self._reading(ref) as listed:
            return export_checkpoint(self._reader, listed, target, self._progress)

    def import_path(
        self,
        path: str | os.PathLike[str],
        *,
        branch: str = DEFAULT_BRANCH,  # `refs` is a method by now
        message: str | None = None,
        step: int | None = None,
    ) -> list[str]:
        """Save a .pt/.pth/.bin/.safetensors file, a Hugging Face model folder or a folder
        of checkpoints as checkpoints on ``branch``, in order; return their ids.

        Torch files are read with ``torch.load(weights_only=True)`` only.  Every
        file is checked before the first checkpoint is saved.
        """
        return import_into(self, path, branch=branch, message=message, step=step)

    # -- retention and gc -----------------------------------------------------------------------

    def forget(
        self,
        policy: KeepPolicy,
        *,
        branches: Sequence[str] | None = None,
        dry_run: bool = False,
    ) -> ForgetReport:
        """Drop from the history the checkpoints ``policy`` keeps on no branch.

        The policy runs over each branch's log (all branches by default),
        newest first; branch heads always stay; tags pointing at forgotten
        checkpoints are deleted (``KeepPolicy(tagged=True)`` keeps them
        instead).  Kept children are joined to their nearest kept ancestor.
        Objects stay until :meth:`gc`; the report says what it would free.
        ``dry_run`` changes nothing.
        """
        if dry_run:
            return forget_checkpoints(self.engine, policy, branches, None)
        self._upgrade_format()
        with layout.writing(self.root):
            return forget_checkpoints(
                self.engine, policy, branches, self._journal, self._counting(CHECKPOINTS)
            )

    def thin(
        self,
        pattern: str,
        *,
        keep_newest: int,
        branches: Sequence[str] | None = None,
        dry_run: bool = False,
    ) -> ThinReport:
        """Remove the entries whose key path matches ``pattern`` from older checkpoints.

        ``pattern`` is an fnmatch glob over whole key paths in which ``*``
        also matches ``/`` (``"optim/*"``: all optimizer state).  The newest
        ``keep_newest`` (>= 1) checkpoints of every branch stay whole; so does
        every checkpoint off the chosen ``branches`` (default: all).  Loading
        a thinned checkpoint leaves the entries out; :meth:`gc` frees their
        chunks where nothing else needs them.  ``dry_run`` changes nothing.
        """
        if dry_run:
            return thin_entries(self.engine, pattern, keep_newest, branches, None)
        self._upgrade_format()
        with layout.writing(self.root):
            return thin_entries(
                self.engine,
                pattern,
                keep_newest,
                branches,
                self._journal,
                self._counting(CHECKPOINTS),
            )

    def gc(self, *, dry_run: bool = False) -> GcReport:
        """Delete every object no checkpoint in the catalog needs (mark and sweep).

        Kept: manifests, chunks, the delta bases they decode against (however
        deep), journal records.  Waits for saves in flight (other processes'
        too) to commit and holds new ones back until done, so a concurrent
        save never loses an object.  ``dry_run`` only counts.
        """
        with layout.collecting(self.root):
            with read_transaction(self.engine) as conn:
                garbage = find_garbage(conn, self.objects, progress=self._counting(OBJECTS))
            if garbage.live == 0 and unlisted_history(self.objects, garbage):
                # Nothing listed, not even the record of a forget that emptied the store, while
                # manifests are on disk: a catalog recreated empty looks so.
                raise CatalogDamagedError(
                    str(self.root / layout.CATALOG_FILE),
                    f"it lists nothing while {len(garbage.files)} objects are on disk, so gc "
                    "deletes none of them",
                )
            if not dry_run:
                with self._progress(
                    len(garbage.files), "gc", unit="obj", min_total=PROGRESS_MIN_OBJECTS
                ) as progress:
                    sweep(self.engine, self.objects, garbage, progress)
        return gc_report(garbage, dry_run=dry_run)
