"""The catalog reads (and the one bulk write) of verify, rebuild, stats by prefix and cat.

Kept apart from ``queries`` because they answer questions about the catalog
as a whole (is every row it holds backed by an object? which entry first
named this object?) rather than the per-checkpoint reads a save or a load
makes.  Like ``queries``, every function takes an open ``Connection`` and
speaks in plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, func, or_, select

from deltastore.catalog.models import (
    Base,
    CheckpointRow,
    EntryChunkRow,
    EntryRow,
    ObjectRow,
    RefRow,
)
from deltastore.codecs.header import Kind


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


_checkpoints, _entries, _entry_chunks, _objects, _refs = map(
    _table, (CheckpointRow, EntryRow, EntryChunkRow, ObjectRow, RefRow)
)
#: Ids per IN (...) query: below SQLite's limit on bound parameters, as in queries.
_BATCH = 900


@dataclass(frozen=True)
class CatalogObject:
    """One row of the objects table."""

    id: str
    kind: int
    raw_bytes: int
    stored_bytes: int
    base_id: str | None
    depth: int


@dataclass(frozen=True)
class ChunkRef:
    """Where an object is used: chunk ``chunk_index`` of entry ``key_path`` of a checkpoint."""

    checkpoint_id: str
    key_path: str
    chunk_index: int


def all_objects(conn: Connection) -> dict[str, CatalogObject]:
    rows = conn.execute(
        select(
            _objects.c.id,
            _objects.c.kind,
            _objects.c.raw_bytes,
            _objects.c.stored_bytes,
            _objects.c.base_id,
            _objects.c.depth,
        )
    )
    return {
        r.id: CatalogObject(r.id, r.kind, r.raw_bytes, r.stored_bytes, r.base_id, r.depth)
        for r in rows
    }


def checkpoint_ids(conn: Connection) -> list[str]:
    """Every checkpoint id, oldest first."""
    rows = conn.execute(
        select(_checkpoints.c.id).order_by(_checkpoints.c.created_at_us, _checkpoints.c.id)
    )
    return [r.id for r in rows]


def checkpoints_without_manifest(conn: Connection) -> list[tuple[str, int | None]]:
    """(checkpoint id, kind of its object row or None) where that row is missing or no manifest."""
    rows = conn.execute(
        select(_checkpoints.c.id, _objects.c.kind)
        .outerjoin(_objects, _objects.c.id == _checkpoints.c.id)
        .where(or_(_objects.c.id.is_(None), _objects.c.kind != int(Kind.MANIFEST)))
    )
    return [(r.id, r.kind) for r in rows]


def chunks_not_listed(conn: Connection) -> list[tuple[str, ChunkRef, int | None]]:
    """(object id, where, kind of its row or None) of chunk list items with no chunk row."""
    rows = conn.execute(
        _chunk_list_items(_objects.c.kind)
        .outerjoin(_objects, _objects.c.id == _entry_chunks.c.object_id)
        .where(or_(_objects.c.id.is_(None), _objects.c.kind != int(Kind.CHUNK)))
    )
    return [(r.object_id, ChunkRef(r.checkpoint_id, r.key_path, r.chunk_idx), r.kind) for r in rows]


def entries_with_wrong_chunk_count(conn: Connection) -> list[tuple[str, str, int, int]]:
    """(checkpoint id, key path, recorded count, listed chunks) where they differ."""
    listed = (
        select(
            _entry_chunks.c.checkpoint_id,
            _entry_chunks.c.entry_idx,
            func.count().label("n"),
        )
        .group_by(_entry_chunks.c.checkpoint_id, _entry_chunks.c.entry_idx)
        .subquery()
    )
    n = func.coalesce(listed.c.n, 0)
    rows = conn.execute(
        select(_entries.c.checkpoint_id, _entries.c.key_path, _entries.c.chunk_count, n.label("n"))
        .outerjoin(
            listed,
            and_(
                listed.c.checkpoint_id == _entries.c.checkpoint_id,
                listed.c.entry_idx == _entries.c.idx,
            ),
        )
        .where(_entries.c.chunk_count != n)
    )
    return [(r.checkpoint_id, r.key_path, r.chunk_count, r.n) for r in rows]


def checkpoints_with_wrong_totals(conn: Connection) -> list[tuple[str, int, int, int, int]]:
    """(id, entry_count, entry rows, logical_bytes, sum of entry bytes) where they differ."""
    sums = (
        select(
            _entries.c.checkpoint_id,
            func.count().label("n"),
            func.sum(_entries.c.nbytes).label("nbytes"),
        )
        .group_by(_entries.c.checkpoint_id)
        .subquery()
    )
    n = func.coalesce(sums.c.n, 0)
    nbytes = func.coalesce(sums.c.nbytes, 0)
    rows = conn.execute(
        select(
            _checkpoints.c.id,
            _checkpoints.c.entry_count,
            n.label("n"),
            _checkpoints.c.logical_bytes,
            nbytes.label("nbytes"),
        )
        .outerjoin(sums, sums.c.checkpoint_id == _checkpoints.c.id)
        .where(or_(_checkpoints.c.entry_count != n, _checkpoints.c.logical_bytes != nbytes))
    )
    return [(r.id, r.entry_count, r.n, r.logical_bytes, r.nbytes) for r in rows]


def dangling_checkpoint_links(conn: Connection) -> list[tuple[str, str, str]]:
    """(what, name, missing checkpoint id) for parents and refs naming no checkpoint.

    Foreign keys forbid both, but a catalog copied or edited by other tools
    may not have enforced them.
    """
    parent = _checkpoints.alias("parent")
    parents = conn.execute(
        select(_checkpoints.c.id, _checkpoints.c.parent_id)
        .outerjoin(parent, parent.c.id == _checkpoints.c.parent_id)
        .where(_checkpoints.c.parent_id.is_not(None), parent.c.id.is_(None))
    )
    refs = conn.execute(
        select(_refs.c.name, _refs.c.checkpoint_id)
        .outerjoin(_checkpoints, _checkpoints.c.id == _refs.c.checkpoint_id)
        .where(_checkpoints.c.id.is_(None))
    )
    found = [("parent of checkpoint", r.id, r.parent_id) for r in parents]
    found.extend(("ref", r.name, r.checkpoint_id) for r in refs)
    return found


def _chunk_list_items(*extra: Any) -> Any:
    """Chunk list items (object, checkpoint, chunk index) with their entry's key path."""
    return select(
        _entry_chunks.c.object_id,
        _entry_chunks.c.checkpoint_id,
        _entries.c.key_path,
        _entry_chunks.c.chunk_idx,
        *extra,
    ).join(
        _entries,
        and_(
            _entries.c.checkpoint_id == _entry_chunks.c.checkpoint_id,
            _entries.c.idx == _entry_chunks.c.entry_idx,
        ),
    )


def _chunk_refs_query(checkpoint_id: str | None = None) -> Any:
    """Every chunk list item with its key path, oldest checkpoint first, in save order."""
    query = (
        _chunk_list_items()
        .join(_checkpoints, _checkpoints.c.id == _entry_chunks.c.checkpoint_id)
        .order_by(
            _checkpoints.c.created_at_us,
            _checkpoints.c.id,
            _entry_chunks.c.entry_idx,
            _entry_chunks.c.chunk_idx,
        )
    )
    if checkpoint_id is not None:
        query = query.where(_entry_chunks.c.checkpoint_id == checkpoint_id)
    return query


def first_references(conn: Connection, ids: Iterable[str]) -> dict[str, tuple[ChunkRef, int]]:
    """For each id some chunk list names: its first use (oldest checkpoint) and how many uses."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, tuple[ChunkRef, int]] = {}
    for start in range(0, len(wanted), _BATCH):
        batch = wanted[start : start + _BATCH]
        rows = conn.execute(_chunk_refs_query().where(_entry_chunks.c.object_id.in_(batch)))
        for r in rows:
            if r.object_id in found:
                first, count = found[r.object_id]
                found[r.object_id] = (first, count + 1)
            else:
                found[r.object_id] = (ChunkRef(r.checkpoint_id, r.key_path, r.chunk_idx), 1)
    return found


def chunk_references(
    conn: Connection, checkpoint_id: str | None = None
) -> Iterator[tuple[str, str]]:
    """(object id, key path) of every chunk list item, oldest checkpoint first, in save order."""
    for r in conn.execute(_chunk_refs_query(checkpoint_id)):
        yield r.object_id, r.key_path


def chunk_reference_count(conn: Connection, checkpoint_id: str | None = None) -> int:
    """How many items :func:`chunk_references` yields (a progress bar's total)."""
    query = select(func.count()).select_from(_entry_chunks)
    if checkpoint_id is not None:
        query = query.where(_entry_chunks.c.checkpoint_id == checkpoint_id)
    return int(conn.execute(query).scalar_one())


def stored_sizes(conn: Connection) -> dict[str, int]:
    """Stored bytes of every object."""
    rows = conn.execute(select(_objects.c.id, _objects.c.stored_bytes))
    return {r.id: r.stored_bytes for r in rows}


def logical_by_key_path(
    conn: Connection, checkpoint_id: str | None = None
) -> list[tuple[str, int]]:
    """(key path, its bytes summed over every checkpoint or over one) per key path."""
    query = select(_entries.c.key_path, func.sum(_entries.c.nbytes).label("nbytes")).group_by(
        _entries.c.key_path
    )
    if checkpoint_id is not None:
        query = query.where(_entries.c.checkpoint_id == checkpoint_id)
    return [(r.key_path, int(r.nbytes)) for r in conn.execute(query)]


def record_ids(conn: Connection) -> list[str]:
    """Ids of every journal record the catalog lists."""
    rows = conn.execute(select(_objects.c.id).where(_objects.c.kind == int(Kind.RECORD)))
    return [r.id for r in rows]
