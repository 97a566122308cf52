"""Every catalog read and write the store makes, in one place.

Functions take an open SQLAlchemy ``Connection`` (inside the caller's
transaction) and speak in plain values and ``deltastore.info`` records, so the
store never builds SQL itself and a PostgreSQL catalog differs only in the
dialect-specific insert-or-ignore below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from deltastore.catalog.models import (
    CheckpointRow,
    EntryChunkRow,
    EntryRow,
    ObjectRow,
    RefRow,
    StoreMeta,
)
from deltastore.info import CheckpointInfo, EntryInfo, datetime_from_us

_checkpoints = cast(Table, CheckpointRow.__table__)
_entries = cast(Table, EntryRow.__table__)
_entry_chunks = cast(Table, EntryChunkRow.__table__)
_objects = cast(Table, ObjectRow.__table__)
_refs = cast(Table, RefRow.__table__)
_meta = cast(Table, StoreMeta.__table__)

# SQLite's limit on bound parameters is 32766 (older builds 999); stay below both.
_BATCH = 900


@dataclass(frozen=True)
class NewObject:
    id: str
    kind: int
    raw_bytes: int
    stored_bytes: int
    base_id: str | None = None
    depth: int = 0


@dataclass(frozen=True)
class NewEntry:
    key_path: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    digest: str
    chunk_ids: list[str]
    #: Indices of chunks whose object is lost (found by rebuild): the entry stays listed, so
    #: a load of it fails naming the chunk, but no row points at an object that is not there.
    lost: frozenset[int] = frozenset()


def metrics_to_json(metrics: dict[str, float | int]) -> dict[str, Any]:
    """Metrics as strict JSON (PostgreSQL rejects NaN): non-finite floats become strings."""
    return {
        k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }


def metrics_from_json(data: dict[str, Any]) -> dict[str, float | int]:
    return {k: (float(v) if isinstance(v, str) else v) for k, v in data.items()}


def _insert_ignore(conn: Connection, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT rows, skipping those whose primary key exists (put-if-absent for rows)."""
    if not rows:
        return
    dialect = conn.dialect.name
    stmt: Any
    if dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    elif dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two catalogs above are supported
        raise NotImplementedError(f"catalog dialect {dialect!r}")
    for start in range(0, len(rows), _BATCH):
        conn.execute(stmt, list(rows[start : start + _BATCH]))


# -- store settings -----------------------------------------------------------------------------


def get_meta(conn: Connection) -> dict[str, str]:
    return {row.key: row.value for row in conn.execute(select(_meta))}


def set_meta(conn: Connection, values: dict[str, str]) -> None:
    """Set store settings, replacing the values of keys already set."""
    conn.execute(delete(_meta).where(_meta.c.key.in_(list(values))))
    _insert_ignore(conn, _meta, [{"key": k, "value": v} for k, v in values.items()])


# -- refs ---------------------------------------------------------------------------------------


def get_ref(conn: Connection, name: str) -> tuple[str, str] | None:
    """(kind, checkpoint id) of a ref, or None."""
    row = conn.execute(select(_refs.c.kind, _refs.c.checkpoint_id).where(_refs.c.name == name))
    found = row.first()
    return None if found is None else (found.kind, found.checkpoint_id)


def set_ref(conn: Connection, name: str, kind: str, checkpoint_id: str, now_us: int) -> None:
    conn.execute(delete(_refs).where(_refs.c.name == name))
    conn.execute(
        _refs.insert().values(
            name=name, kind=kind, checkpoint_id=checkpoint_id, updated_at_us=now_us
        )
    )


def delete_ref(conn: Connection, name: str) -> bool:
    """Remove a ref; False when there was none."""
    return bool(conn.execute(delete(_refs).where(_refs.c.name == name)).rowcount)


def list_refs(conn: Connection) -> list[tuple[str, str, str]]:
    """(name, kind, checkpoint id) of every ref, by name."""
    rows = conn.execute(select(_refs.c.name, _refs.c.kind, _refs.c.checkpoint_id).order_by("name"))
    return [(r.name, r.kind, r.checkpoint_id) for r in rows]


# -- checkpoints --------------------------------------------------------------------------------


def _info(row: Any) -> CheckpointInfo:
    return CheckpointInfo(
        id=row.id,
        parent=row.parent_id,
        created_at=datetime_from_us(row.created_at_us),
        message=row.message,
        step=row.step,
        metrics=metrics_from_json(row.metrics),
        branch=row.branch,
        entry_count=row.entry_count,
        logical_bytes=row.logical_bytes,
        stored_bytes=row.stored_bytes,
    )


def get_checkpoint(conn: Connection, checkpoint_id: str) -> CheckpointInfo | None:
    row = conn.execute(select(_checkpoints).where(_checkpoints.c.id == checkpoint_id)).first()
    return None if row is None else _info(row)


def ids_with_prefix(conn: Connection, prefix: str, limit: int = 10) -> list[str]:
    """Checkpoint ids starting with ``prefix`` (hex digits only: LIKE wildcards never occur)."""
    return _with_prefix(conn, _checkpoints, prefix, limit)


def object_ids_with_prefix(conn: Connection, prefix: str, limit: int = 10) -> list[str]:
    """Object ids starting with ``prefix`` (hex digits only), for the plumbing's short ids."""
    return _with_prefix(conn, _objects, prefix, limit)


def _with_prefix(conn: Connection, table: Table, prefix: str, limit: int) -> list[str]:
    rows = conn.execute(
        select(table.c.id).where(table.c.id.like(prefix + "%")).order_by(table.c.id).limit(limit)
    )
    return [r.id for r in rows]


def all_checkpoints(conn: Connection) -> list[CheckpointInfo]:
    """Every checkpoint, newest first."""
    rows = conn.execute(
        select(_checkpoints).order_by(_checkpoints.c.created_at_us.desc(), _checkpoints.c.id.desc())
    )
    return [_info(r) for r in rows]


def insert_objects(conn: Connection, objects: Iterable[tuple[NewObject, int]]) -> None:
    """List objects (each with its creation time) unless the catalog has them already.

    Journal records are listed too, so that gc keeps them.
    """
    _insert_ignore(
        conn,
        _objects,
        [
            {
                "id": o.id,
                "kind": o.kind,
                "raw_bytes": o.raw_bytes,
                "stored_bytes": o.stored_bytes,
                "base_id": o.base_id,
                "depth": o.depth,
                "created_at_us": created_at_us,
            }
            for o, created_at_us in objects
        ],
    )


def insert_checkpoint(
    conn: Connection,
    info: CheckpointInfo,
    created_at_us: int,
    entries: Sequence[NewEntry],
    objects: Iterable[NewObject],
) -> None:
    """Record a checkpoint, its entries and chunk lists, and any objects new to the catalog."""
    insert_objects(conn, ((o, created_at_us) for o in objects))
    conn.execute(
        _checkpoints.insert().values(
            id=info.id,
            parent_id=info.parent,
            created_at_us=created_at_us,
            message=info.message,
            step=info.step,
            metrics=metrics_to_json(info.metrics),
            branch=info.branch,
            entry_count=info.entry_count,
            logical_bytes=info.logical_bytes,
            stored_bytes=info.stored_bytes,
        )
    )
    entry_rows: list[dict[str, Any]] = []
    chunk_rows: list[dict[str, Any]] = []
    for idx, entry in enumerate(entries):
        entry_rows.append(
            {
                "checkpoint_id": info.id,
                "idx": idx,
                "key_path": entry.key_path,
                "kind": entry.kind,
                "dtype": entry.dtype,
                "shape": list(entry.shape),
                "nbytes": entry.nbytes,
                "digest": entry.digest,
                "chunk_count": len(entry.chunk_ids),
            }
        )
        chunk_rows.extend(
            {"checkpoint_id": info.id, "entry_idx": idx, "chunk_idx": i, "object_id": object_id}
            for i, object_id in enumerate(entry.chunk_ids)
            if i not in entry.lost
        )
    for table, rows in ((_entries, entry_rows), (_entry_chunks, chunk_rows)):
        for start in range(0, len(rows), _BATCH):
            conn.execute(table.insert(), rows[start : start + _BATCH])


def entries_of(conn: Connection, checkpoint_id: str) -> list[EntryInfo]:
    rows = conn.execute(
        select(_entries).where(_entries.c.checkpoint_id == checkpoint_id).order_by(_entries.c.idx)
    )
    return [
        EntryInfo(
            key_path=r.key_path,
            kind=r.kind,
            dtype=r.dtype,
            shape=tuple(r.shape),
            nbytes=r.nbytes,
            digest=r.digest,
            chunk_count=r.chunk_count,
        )
        for r in rows
    ]


def _chunk_rows(conn: Connection, checkpoint_id: str, *entry_columns: Any) -> Any:
    """A checkpoint's chunk rows in entry and chunk order: each with its ``object_id`` and
    the ``entry_columns`` of its entry."""
    return conn.execute(
        select(*entry_columns, _entry_chunks.c.object_id)
        .join(
            _entry_chunks,
            (_entry_chunks.c.checkpoint_id == _entries.c.checkpoint_id)
            & (_entry_chunks.c.entry_idx == _entries.c.idx),
        )
        .where(_entries.c.checkpoint_id == checkpoint_id)
        .order_by(_entry_chunks.c.entry_idx, _entry_chunks.c.chunk_idx)
    )


def chunk_ids_of(conn: Connection, checkpoint_id: str) -> dict[str, list[str]]:
    """Key path -> chunk ids in order, for every entry of a checkpoint."""
    rows = _chunk_rows(conn, checkpoint_id, _entries.c.key_path)
    chunks: dict[str, list[str]] = {}
    for r in rows:
        chunks.setdefault(r.key_path, []).append(r.object_id)
    return chunks


def batches(values: Iterable[str]) -> Iterator[list[str]]:
    """``values`` in lists short enough for one ``IN (...)`` (SQLite binds at most 999)."""
    wanted = list(values)
    for start in range(0, len(wanted), _BATCH):
        yield wanted[start : start + _BATCH]


@dataclass(frozen=True)
class StoredChunk:
    """What the catalog says of a stored object: its chain depth and its delta base."""

    depth: int
    base_id: str | None


def stored_chunks(conn: Connection, ids: Iterable[str]) -> dict[str, StoredChunk]:
    """Depth and base of each of ``ids`` the catalog knows (absent ids are left out)."""
    found: dict[str, StoredChunk] = {}
    for batch in batches(ids):
        rows = conn.execute(
            select(_objects.c.id, _objects.c.depth, _objects.c.base_id).where(
                _objects.c.id.in_(batch)
            )
        )
        found.update((r.id, StoredChunk(r.depth, r.base_id)) for r in rows)
    return found


def delta_counts(conn: Connection, base_ids: Iterable[str]) -> dict[str, int]:
    """How many objects the catalog lists as deltas on each of ``base_ids`` (none: absent)."""
    found: dict[str, int] = {}
    for batch in batches(base_ids):
        rows = conn.execute(
            select(_objects.c.base_id, func.count().label("n"))
            .where(_objects.c.base_id.in_(batch))
            .group_by(_objects.c.base_id)
        )
        found.update((r.base_id, int(r.n)) for r in rows)
    return found


def object_depths(conn: Connection, ids: Iterable[str]) -> dict[str, int]:
    """Delta chain depth of each of ``ids`` the catalog knows (absent ids are left out)."""
    return {object_id: c.depth for object_id, c in stored_chunks(conn, ids).items()}


@dataclass(frozen=True)
class EntryChunks:
    dtype: str
    shape: tuple[int, ...]
    chunk_ids: list[str]


def entry_chunks_of(conn: Connection, checkpoint_id: str) -> dict[str, EntryChunks]:
    """Key path -> dtype, shape and chunk ids: what a delta against this checkpoint needs.

    One query over the chunk rows, with just the columns a save plans with: every
    save reads its parent's, and a model's hundreds of small entries made the whole
    entry rows the larger part of a save's catalog reads.
    """
    rows = _chunk_rows(conn, checkpoint_id, _entries.c.key_path, _entries.c.dtype, _entries.c.shape)
    found: dict[str, EntryChunks] = {}
    for r in rows:
        entry = found.get(r.key_path)
        if entry is None:
            entry = found[r.key_path] = EntryChunks(r.dtype, tuple(r.shape), [])
        entry.chunk_ids.append(r.object_id)
    return found


def object_totals(conn: Connection) -> tuple[int, int]:
    """(number of objects, their stored bytes)."""
    row = conn.execute(select(func.count(), func.coalesce(func.sum(_objects.c.stored_bytes), 0)))
    count, total = row.one()
    return int(count), int(total)


# -- retention and gc (deltastore.forget, deltastore.thin, deltastore.gc) -----------------------

#: store_meta key gc bumps in its sweep transaction: a writer that sees it change drops
#: what it remembered of the store across saves (save.py).
GC_GENERATION = "gc_generation"


def checkpoint_ids(conn: Connection) -> set[str]:
    return {r.id for r in conn.execute(select(_checkpoints.c.id))}


@dataclass(frozen=True)
class StoredObject:
    """What gc needs of an object row: its kind, its delta base and its size."""

    kind: int
    base_id: str | None
    stored_bytes: int


def all_objects(conn: Connection) -> dict[str, StoredObject]:
    rows = conn.execute(
        select(_objects.c.id, _objects.c.kind, _objects.c.base_id, _objects.c.stored_bytes)
    )
    return {r.id: StoredObject(r.kind, r.base_id, r.stored_bytes) for r in rows}


def referenced_chunks(
    conn: Connection,
    *,
    except_checkpoints: Collection[str] = (),
    except_entries: Collection[tuple[str, int]] = (),
) -> set[str]:
    """Every object an entry of a catalogued checkpoint lists as a chunk.

    The exceptions answer "and if these checkpoints, or these (checkpoint,
    entry index) pairs, were gone?" for dry runs.
    """
    if not except_checkpoints and not except_entries:
        return {r.object_id for r in conn.execute(select(_entry_chunks.c.object_id).distinct())}
    rows = conn.execute(
        select(_entry_chunks.c.checkpoint_id, _entry_chunks.c.entry_idx, _entry_chunks.c.object_id)
    )
    return {
        r.object_id
        for r in rows
        if r.checkpoint_id not in except_checkpoints
        and (r.checkpoint_id, r.entry_idx) not in except_entries
    }


@dataclass(frozen=True)
class EntryRef:
    """An entry row's index, key path and size: what thin selects and removes."""

    idx: int
    key_path: str
    nbytes: int


def entry_refs(conn: Connection, checkpoint_ids: Iterable[str]) -> dict[str, list[EntryRef]]:
    """Checkpoint id -> its entries in save order, for each of ``checkpoint_ids``."""
    wanted = list(checkpoint_ids)
    found: dict[str, list[EntryRef]] = {cid: [] for cid in wanted}
    for start in range(0, len(wanted), _BATCH):
        rows = conn.execute(
            select(_entries.c.checkpoint_id, _entries.c.idx, _entries.c.key_path, _entries.c.nbytes)
            .where(_entries.c.checkpoint_id.in_(wanted[start : start + _BATCH]))
            .order_by(_entries.c.checkpoint_id, _entries.c.idx)
        )
        for r in rows:
            found[r.checkpoint_id].append(EntryRef(r.idx, r.key_path, r.nbytes))
    return found


def key_paths_of(conn: Connection, checkpoint_id: str) -> set[str]:
    """The key paths a checkpoint still has (its manifest may list more: thinned ones)."""
    rows = conn.execute(
        select(_entries.c.key_path).where(_entries.c.checkpoint_id == checkpoint_id)
    )
    return {r.key_path for r in rows}


def remove_entries(conn: Connection, checkpoint_id: str, entries: Sequence[EntryRef]) -> None:
    """Drop entries (and their chunk lists) from a checkpoint; its totals shrink with them."""
    for start in range(0, len(entries), _BATCH):
        idxs = [e.idx for e in entries[start : start + _BATCH]]
        conn.execute(
            delete(_entry_chunks).where(
                (_entry_chunks.c.checkpoint_id == checkpoint_id)
                & _entry_chunks.c.entry_idx.in_(idxs)
            )
        )
        conn.execute(
            delete(_entries).where(
                (_entries.c.checkpoint_id == checkpoint_id) & _entries.c.idx.in_(idxs)
            )
        )
    conn.execute(
        update(_checkpoints)
        .where(_checkpoints.c.id == checkpoint_id)
        .values(
            entry_count=_checkpoints.c.entry_count - len(entries),
            logical_bytes=_checkpoints.c.logical_bytes - sum(e.nbytes for e in entries),
        )
    )


def reparent(conn: Connection, parents: Mapping[str, str | None]) -> None:
    """Point each checkpoint of ``parents`` at its new parent."""
    for child, parent in parents.items():
        conn.execute(
            update(_checkpoints).where(_checkpoints.c.id == child).values(parent_id=parent)
        )


def remove_checkpoints(
    conn: Connection, ids: Collection[str], progress: Callable[[int], None] | None = None
) -> None:
    """Delete checkpoints with their entries and chunk lists (not their objects: gc does).

    No kept checkpoint and no ref may point at them any more (re-parent and
    delete refs first): the foreign keys are checked statement by statement.
    ``progress`` is told of each batch of checkpoints deleted.
    """
    wanted = list(ids)
    batches = [wanted[start : start + _BATCH] for start in range(0, len(wanted), _BATCH)]
    for batch in batches:  # first cut the links among them, so any batch order is valid
        conn.execute(
            update(_checkpoints).where(_checkpoints.c.id.in_(batch)).values(parent_id=None)
        )
    for batch in batches:
        conn.execute(delete(_entry_chunks).where(_entry_chunks.c.checkpoint_id.in_(batch)))
        conn.execute(delete(_entries).where(_entries.c.checkpoint_id.in_(batch)))
        conn.execute(delete(_checkpoints).where(_checkpoints.c.id.in_(batch)))
        if progress:
            progress(len(batch))


def remove_objects(conn: Connection, ids: Collection[str]) -> None:
    """Delete object rows (gc, before it deletes their files)."""
    wanted = list(ids)
    for start in range(0, len(wanted), _BATCH):
        conn.execute(delete(_objects).where(_objects.c.id.in_(wanted[start : start + _BATCH])))
