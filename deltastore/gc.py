"""Mark and sweep: delete every object no catalogued checkpoint needs.

Live objects are the manifests of the checkpoints in the catalog, every chunk
their entries list, every journal record the catalog lists (a rebuild
replays them), and, recursively, the delta base of each live object: a kept
delta is unreadable without its base even when the checkpoint that first
stored that base is long forgotten (DESIGN.md invariant 5).  Everything
else goes: the catalog rows first, in one transaction, then the files, so a
crash half-way leaves files the catalog does not name (the next gc takes
them), never a row naming a missing file.  Temporary files dead writers left
go too.

Nothing here locks: the caller (``Store.gc``) holds ``layout.collecting``,
which waits for every writer to commit and keeps new ones out, so no save
has objects on disk that the catalog does not list yet while this runs.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from deltastore import codecs
from deltastore.catalog import queries
from deltastore.catalog.engine import write_transaction
from deltastore.codecs import Kind
from deltastore.codecs.header import MAX_HEADER_BYTES
from deltastore.errors import CorruptObjectError
from deltastore.objects import ObjectStore
from deltastore.progress import Batched, Progress, ProgressFactory, maybe


def live_objects(
    conn: Connection,
    stored: dict[str, queries.StoredObject],
    *,
    except_checkpoints: Collection[str] = (),
    except_entries: Collection[tuple[str, int]] = (),
    marked: Batched | None = None,
) -> set[str]:
    """The mark: every object some catalogued checkpoint or record needs.

    With exceptions, the objects that would be live were those checkpoints
    (or those (checkpoint, entry index) pairs) gone: what dry runs report.
    ``marked`` counts each catalogued object the walk finds live.
    """
    live = {cid for cid in queries.checkpoint_ids(conn) if cid not in except_checkpoints}
    live |= queries.referenced_chunks(
        conn, except_checkpoints=except_checkpoints, except_entries=except_entries
    )
    live |= {object_id for object_id, o in stored.items() if o.kind == Kind.RECORD}
    pending = list(live)
    while pending:  # delta bases, transitively
        found = stored.get(pending.pop())
        if found is None:
            continue
        if marked is not None:
            marked.add()
        if found.base_id is not None and found.base_id not in live:
            live.add(found.base_id)
            pending.append(found.base_id)
    return live


@dataclass(frozen=True)
class Garbage:
    """What a sweep deletes: catalog rows, object files and temporary files, with sizes."""

    rows: dict[str, int]  # object id -> stored bytes, catalog rows
    files: dict[str, int]  # object id -> bytes, object files
    temporaries: dict[str, int]  # name -> bytes, temporary files of dead writers
    live: int

    @property
    def freed_bytes(self) -> int:
        return sum((self.rows | self.files).values()) + sum(self.temporaries.values())

    @property
    def object_count(self) -> int:
        return len(self.rows.keys() | self.files.keys())


def find_garbage(
    conn: Connection,
    objects: ObjectStore | None,
    *,
    except_checkpoints: Collection[str] = (),
    except_entries: Collection[tuple[str, int]] = (),
    progress: ProgressFactory | None = None,
) -> Garbage:
    """Mark, then list what is not live: catalog rows, and files when ``objects`` is given.

    Without ``objects`` only the catalog is looked at: what forget and thin
    report, without counting the objects of saves in flight as garbage.
    ``progress`` opens a bar over the catalog's objects, each counted once the
    mark has decided it: live ones as the walk reaches them, the rest at the
    end.  It opens before the reads (0.7 s of 75k objects, most of it the
    catalog's two big queries) so its delay counts from the mark's start.
    """
    total = 0 if progress is None else queries.object_totals(conn)[0]
    with maybe(progress, total, "gc mark") as advance:
        stored = queries.all_objects(conn)
        # The files are listed before the walk, so the bar is full when the mark is done.
        on_disk = [] if objects is None else list(objects.iter_ids())
        temporaries = {} if objects is None else dict(objects.iter_temporaries())
        marked = Batched(advance)
        live = live_objects(
            conn,
            stored,
            except_checkpoints=except_checkpoints,
            except_entries=except_entries,
            marked=marked,
        )
        rows = {oid: o.stored_bytes for oid, o in stored.items() if oid not in live}
        marked.add(len(rows))
        marked.flush()
    files: dict[str, int] = {}
    if objects is not None:
        for object_id in on_disk:
            if object_id not in live:
                known = stored.get(object_id)
                files[object_id] = known.stored_bytes if known else objects.size(object_id)
    return Garbage(rows, files, temporaries, len(live))


@dataclass(frozen=True)
class GcReport:
    """What ``Store.gc`` deleted (or, in a dry run, would delete)."""

    dry_run: bool
    objects: int  # objects deleted: catalog rows and/or files
    freed_bytes: int  # their bytes, temporary files included
    catalog_rows: int  # object rows removed from the catalog
    files: int  # object files deleted
    temporaries: int  # temporary files of dead writers deleted
    live_objects: int  # objects kept

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "objects": self.objects,
            "freed_bytes": self.freed_bytes,
            "catalog_rows": self.catalog_rows,
            "files": self.files,
            "temporaries": self.temporaries,
            "live_objects": self.live_objects,
        }


def report(garbage: Garbage, *, dry_run: bool) -> GcReport:
    return GcReport(
        dry_run=dry_run,
        objects=garbage.object_count,
        freed_bytes=garbage.freed_bytes,
        catalog_rows=len(garbage.rows),
        files=len(garbage.files),
        temporaries=len(garbage.temporaries),
        live_objects=garbage.live,
    )


def sweep(
    engine: Engine, objects: ObjectStore, garbage: Garbage, progress: Progress | None = None
) -> None:
    """Delete the garbage: catalog rows (one transaction), then files.

    The transaction also bumps the store's gc generation, which tells every
    writer that objects may have gone since its last save (save.py).  The
    caller holds the store's gc lock (``layout.collecting``) from the mark on.
    """
    if not (garbage.rows or garbage.files or garbage.temporaries):
        return
    with write_transaction(engine) as conn:
        queries.remove_objects(conn, garbage.rows)
        generation = int(queries.get_meta(conn).get(queries.GC_GENERATION, "0"))
        queries.set_meta(conn, {queries.GC_GENERATION: str(generation + 1)})
    for object_id in garbage.files:  # only now: never a row naming a missing file
        objects.delete(object_id)
        if progress:
            progress(1)
    for name in garbage.temporaries:
        objects.delete_temporary(name)


def unlisted_history(objects: ObjectStore, garbage: Garbage) -> bool:
    """Whether files the catalog does not list include a manifest or a journal record.

    A catalog that lists nothing while such files exist was recreated empty
    (an older deltastore, a copy without it): its history is on disk and gc
    must not sweep it.  Chunks alone are what saves that died before their
    manifest leave, in a store that never committed one: garbage.  An object
    whose header cannot be read counts as history (deleting is what cannot be
    undone).
    """
    for object_id, size in garbage.files.items():
        try:
            head = objects.read_head(object_id, MAX_HEADER_BYTES)
            kind = codecs.read_header(head, object_id, object_size=size).kind
        except CorruptObjectError:
            if not objects.exists(object_id):  # gone since it was listed
                continue
            return True
        if kind != Kind.CHUNK:
            return True
    return False
