"""Recreate ``catalog.sqlite`` from the objects alone, when it is lost or damaged.

The catalog is an index (DESIGN.md §1): manifests tell every checkpoint,
its entries and chunk lists and the branch its save moved; journal records
tell ref changes, forgets and thins (docs/format.md §4a); object headers
tell kinds, sizes and delta bases.  ``rebuild`` reads them all (headers
only, for chunks), lets :mod:`deltastore.replay` decide every row, writes
the new catalog to a temporary file in the store folder, then, under the
store lock, moves the old catalog and its ``-wal``/``-shm`` aside as
``catalog.sqlite.broken-<UTC time>`` (never deleted) and renames the new one
in.  It holds the lock gc holds (``layout.collecting``), so no save, forget
or gc of another process writes meanwhile.  Without ``force`` it refuses a
catalog that opens and passes a quick verify.

What a rebuild cannot know, and so gets differently from the catalog it replaces:

* Objects that no kept checkpoint or record needs are not listed (gc frees
  them); the old catalog listed those of forgotten or thinned checkpoints
  until gc ran.
* A checkpoint's stored bytes count the objects it needs that no earlier
  checkpoint needed; identical to what save recorded for a history nothing
  was forgotten or thinned from (then each object counts where it is needed
  first, not where the forgotten save added it).
* A journal record whose catalog transaction never committed (a crash in
  between, or a ref change refused by a race with another process) is
  replayed as if it had; gc removes such records, so only a rebuild before
  the next gc sees them.  Likewise a save whose manifest was durable when the
  process died before its commit comes back as a checkpoint (all its objects
  are durable, so it loads).
* Refs replay in time order of manifest and record timestamps; two processes
  moving one branch in the same instant may replay in the other order.
* A store with no manifest keeps the chunk size of the old catalog if that
  can still be read, else the default.

Run it while no other process uses the store: a process that has the old
catalog open goes on writing into the file moved aside once the lock is gone.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from deltastore import codecs, journal, layout, manifest, replay
from deltastore.catalog import migrate, queries
from deltastore.catalog.engine import make_engine, read_transaction, write_transaction
from deltastore.chunking import DEFAULT_CHUNK_SIZE
from deltastore.codecs import Kind
from deltastore.codecs.header import MAX_HEADER_BYTES
from deltastore.durable import fsync_dir, fsync_file
from deltastore.errors import CatalogIntactError, CorruptObjectError
from deltastore.manifest import Manifest
from deltastore.objects import LocalObjectStore, ObjectStore
from deltastore.progress import map_batched
from deltastore.replay import ObjectHead
from deltastore.verify import Problem, Verifier

#: With progress left to the default, a bar shows on a terminal from this many objects
#: (a few hundred MiB of default-sized chunks, as Store's bars).
PROGRESS_MIN_OBJECTS = 256
SIDE_FILES = ("", "-wal", "-shm")


@dataclass(frozen=True)
class RebuildReport:
    """What the rebuilt catalog holds and what could not be recovered."""

    path: Path
    moved_aside: Path | None  # where the old catalog went (None: there was none)
    checkpoints: int
    refs: int
    objects: int  # objects the new catalog lists
    unlisted_objects: int  # objects on disk nothing needs (gc frees them)
    forgotten: int  # manifests left out because a forget record names them
    abandoned: int  # manifests of commit attempts that never committed
    problems: tuple[Problem, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "moved_aside": None if self.moved_aside is None else str(self.moved_aside),
            "checkpoints": self.checkpoints,
            "refs": self.refs,
            "objects": self.objects,
            "unlisted_objects": self.unlisted_objects,
            "forgotten": self.forgotten,
            "abandoned": self.abandoned,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True)
class _Scanned:
    head: ObjectHead | None
    manifest: Manifest | None = None
    record: journal.Record | None = None
    problem: Problem | None = None


def rebuild(
    path: str | os.PathLike[str], *, force: bool = False, progress: bool | None = None
) -> RebuildReport:
    """Recreate the store's catalog from its objects; see the module docstring.

    Raises CatalogIntactError when the catalog opens and passes a quick
    verify (``force=True`` rebuilds anyway), StoreNotFoundError when ``path``
    is not a store.
    """
    root = Path(path)
    layout.check_format(root)
    objects = LocalObjectStore(root / layout.OBJECTS_DIR)
    try:
        with (
            ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="rebuild") as pool,
            layout.store_lock(root),
            layout.collecting(root),  # no save, forget or gc writes while the objects are read
        ):
            old_meta = _check_old_catalog(root, objects, pool, force)
            plan, problems = _plan(objects, pool, progress)
            chunk_size = plan.chunk_size or int(old_meta.get("chunk_size", DEFAULT_CHUNK_SIZE))
            fresh = _write_catalog(root, plan, chunk_size)
            moved = _swap_in(root, fresh)
    finally:
        objects.close()
    return RebuildReport(
        path=root,
        moved_aside=moved,
        checkpoints=len(plan.checkpoints),
        refs=len(plan.refs),
        objects=len(plan.objects),
        unlisted_objects=plan.unlisted,
        forgotten=plan.forgotten,
        abandoned=plan.abandoned,
        problems=tuple(problems + plan.problems),
    )


def _check_old_catalog(
    root: Path, objects: ObjectStore, pool: ThreadPoolExecutor, force: bool
) -> dict[str, str]:
    """The old catalog's settings if it can be read; CatalogIntactError if it is healthy.

    Healthy: it opens, its schema is this deltastore's (an older one is
    upgraded first, as opening the store would), a quick verify finds no
    problem, and it is not empty while objects are on disk (earlier versions
    made such an empty one when asked to open a store whose catalog was deleted).
    """
    if not (root / layout.CATALOG_FILE).exists():
        return {}
    engine = make_engine(layout.catalog_url(root))
    try:
        try:
            if not migrate.current_revisions(engine):
                return {}  # not a catalog: SQLite opens an empty or foreign file as empty
            with read_transaction(engine) as conn:
                meta = queries.get_meta(conn)
            if force:
                return meta
            if not migrate.check(engine):  # SchemaVersionError for a newer deltastore's
                migrate.upgrade(engine)
            report = Verifier(engine, objects, pool, _no_progress).run(full=False)
        except (SQLAlchemyError, CorruptObjectError, OSError):
            return {}
        if report.ok and not (report.checkpoints == 0 and report.unlisted_objects):
            raise CatalogIntactError(str(root))
        return meta
    finally:
        engine.dispose()


@contextmanager
def _no_progress(total: int, desc: str) -> Iterator[None]:
    yield None


def _plan(
    objects: ObjectStore, pool: ThreadPoolExecutor, progress: bool | None
) -> tuple[replay.Plan, list[Problem]]:
    ids = list(objects.iter_ids())
    show = progress
    if show is None:
        show = len(ids) >= PROGRESS_MIN_OBJECTS and sys.stderr.isatty()
    heads: dict[str, ObjectHead] = {}
    manifests: dict[str, Manifest] = {}
    records: dict[str, journal.Record] = {}
    problems: list[Problem] = []
    with tqdm(total=len(ids), desc="rebuild", unit="obj", disable=not show) as bar:
        for scanned in map_batched(pool, lambda i: _scan(objects, i), ids, bar.update):
            if scanned.problem is not None:
                problems.append(scanned.problem)
            if scanned.head is None:
                continue
            heads[scanned.head.id] = scanned.head
            if scanned.manifest is not None:
                manifests[scanned.head.id] = scanned.manifest
            if scanned.record is not None:
                records[scanned.head.id] = scanned.record
    return replay.plan(heads, manifests, records), problems


def _scan(objects: ObjectStore, object_id: str) -> _Scanned:
    """One object's header; for a manifest or a record, its parsed content too."""
    try:
        size = objects.size(object_id)
        head = objects.read_head(object_id, MAX_HEADER_BYTES)
        header = codecs.read_header(head, object_id, object_size=size)
    except CorruptObjectError as exc:
        return _Scanned(None, problem=Problem(object_id, f"unreadable, left out: {exc.reason}"))
    base = header.base_id.hex() if header.base_id is not None else None
    found = ObjectHead(object_id, header.kind, header.raw_length, size, base)
    if header.kind == Kind.CHUNK:
        return _Scanned(found)
    try:
        raw = codecs.decode(objects.get(object_id), object_id, kind=header.kind)
        if header.kind == Kind.MANIFEST:
            return _Scanned(found, manifest=manifest.parse(raw, object_id))
        return _Scanned(found, record=journal.parse(raw, object_id))
    except CorruptObjectError as exc:
        what = "checkpoint" if header.kind == Kind.MANIFEST else "journal record"
        reason = f"{what} lost, its object is corrupt: {exc.reason}"
        checkpoint = object_id if header.kind == Kind.MANIFEST else None
        return _Scanned(None, problem=Problem(object_id, reason, checkpoint))


def _write_catalog(root: Path, plan: replay.Plan, chunk_size: int) -> Path:
    """Write the planned rows to a new SQLite file in the store folder; return its path."""
    fresh = root / f".{layout.CATALOG_FILE}.rebuild-{os.getpid()}"
    _remove(fresh)  # left by a rebuild that died: ours, not the user's
    engine = make_engine(f"sqlite:///{fresh}")
    try:
        migrate.upgrade(engine)
        with write_transaction(engine) as conn:
            queries.set_meta(conn, {"chunk_size": str(chunk_size)})
            queries.insert_objects(conn, plan.objects)
            for c in plan.checkpoints:
                queries.insert_checkpoint(conn, c.info, c.created_at_us, c.entries, [])
            for name, kind, checkpoint_id, time_us in plan.refs:
                queries.set_ref(conn, name, kind, checkpoint_id, time_us)
        _settle(engine)
        engine.dispose()
        fsync_file(fresh)
    except BaseException:
        engine.dispose()
        _remove(fresh)
        raise
    return fresh


def _remove(catalog: Path) -> None:
    for suffix in SIDE_FILES:
        Path(f"{catalog}{suffix}").unlink(missing_ok=True)


def _settle(engine: Engine) -> None:
    """Fold the WAL into the file and leave WAL mode: the new catalog is one file to rename.

    On the driver's connection: the engine begins a transaction on every
    statement, and SQLite changes journal mode only outside one.
    """
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.execute("PRAGMA journal_mode=DELETE")
        cursor.close()
    finally:
        raw.close()


def _swap_in(root: Path, fresh: Path) -> Path | None:
    """Move the old catalog and its side files aside, then rename the new one in."""
    catalog = root / layout.CATALOG_FILE
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = root / f"{layout.CATALOG_FILE}.broken-{stamp}"
    n = 1
    while any(Path(f"{aside}{s}").exists() for s in SIDE_FILES):
        aside = root / f"{layout.CATALOG_FILE}.broken-{stamp}-{n}"
        n += 1
    moved = False
    for suffix in SIDE_FILES:  # a stale -wal beside the new file would be replayed into it
        old = Path(f"{catalog}{suffix}")
        if old.exists():
            old.rename(f"{aside}{suffix}")
            moved = True
    fresh.rename(catalog)
    fsync_dir(root)
    return aside if moved else None
