"""The plumbing behind ``deltastore cat``: one object at a time, as it is stored.

For debugging a store by hand: an object's header as the decoder reads it,
a chunk's decoded bytes, a manifest's or a journal record's JSON, and the
journal records the catalog lists.  Objects are named by a full id or by a
unique prefix of at least 6 hex digits of an id the catalog lists (a full id
of an object the catalog does not list, a dead save's, is read from disk all
the same).  Everything read is verified against its id, as a restore does.
Asking for the wrong kind of object (a chunk as a record) is a user's slip,
not damage: the header is read first, and WrongObjectKindError names the
``cat`` that reads the object.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from deltastore import codecs, journal
from deltastore.catalog import audit, queries
from deltastore.catalog.engine import read_transaction
from deltastore.codecs import Header, Kind
from deltastore.errors import (
    AmbiguousObjectError,
    ObjectNotFoundError,
    RefNotFoundError,
    WrongObjectKindError,
)
from deltastore.ids import MIN_PREFIX_LEN, is_full_id, is_id_prefix
from deltastore.info import datetime_from_us

if TYPE_CHECKING:
    from deltastore.store import Store


def resolve_object(store: Store, text: str) -> str:
    """The full id of the object ``text`` names; ObjectNotFoundError if none or several."""
    name = text.strip().lower()
    if is_full_id(name):
        if store.objects.exists(name):
            return name
        raise ObjectNotFoundError(text, "no object of this id is stored")
    if not is_id_prefix(name):
        raise ObjectNotFoundError(
            text, f"name an object by its id or {MIN_PREFIX_LEN} or more of its first hex digits"
        )
    with read_transaction(store.engine) as conn:
        matches = queries.object_ids_with_prefix(conn, name)
    if len(matches) > 1:
        raise AmbiguousObjectError(text, matches)
    if not matches:
        raise ObjectNotFoundError(text, "no object the catalog lists starts with it")
    return matches[0]


def header(store: Store, object_id: str) -> dict[str, Any]:
    """An object's header, as JSON: what it is and how each plane is stored."""
    data = store.objects.get(object_id)
    found: Header = codecs.read_header(data, object_id)
    return {
        "id": object_id,
        "kind": found.kind.name.lower(),
        "transform": found.transform.name.lower().replace("_", "-"),
        "element_width": found.element_width,
        "raw_length": found.raw_length,
        "stored_length": len(data),
        "header_length": found.payload_offset,
        "base_id": None if found.base_id is None else found.base_id.hex(),
        "planes": [
            {"codec": p.codec.name.lower(), "stored_length": p.stored_length} for p in found.planes
        ],
    }


def chunk(store: Store, object_id: str) -> bytes:
    """A chunk's raw bytes: its delta chain decoded and the result checked against its id."""
    _of_kind(store, object_id, Kind.CHUNK)  # the reader reads it again: plumbing, not a hot path
    return store.read_chunk(object_id)


def manifest(store: Store, ref: str) -> Any:
    """A checkpoint's manifest as parsed JSON (verified against the checkpoint id).

    ``ref`` is any ref expression; failing that, an object id or prefix, so a
    forgotten checkpoint's manifest can be read until gc removes it.
    """
    try:
        checkpoint_id = store.resolve(ref)
    except RefNotFoundError as exc:
        try:
            checkpoint_id = resolve_object(store, ref)
        except ObjectNotFoundError:
            raise exc from None
    return json.loads(_raw(store, checkpoint_id, Kind.MANIFEST))


def record(store: Store, object_id: str) -> Any:
    """A journal record as parsed JSON (verified against its id, and checked well-formed)."""
    raw = _raw(store, object_id, Kind.RECORD)
    journal.parse(raw, object_id)
    return json.loads(raw)


def records(store: Store) -> list[dict[str, Any]]:
    """Every journal record the catalog lists, newest first: id, time, op and what it did.

    Where ``cat record`` gets its ids: the records of ref changes, forgets
    and thins, which no manifest tells.
    """
    with read_transaction(store.engine) as conn:
        ids = audit.record_ids(conn)
    found = [(journal.read(store.objects, i), i) for i in ids]
    found.sort(key=lambda pair: (pair[0].time_us, pair[1]), reverse=True)
    return [
        {
            "id": record_id,
            "time": datetime_from_us(r.time_us).isoformat(),
            "time_us": r.time_us,
            "op": _op(r),
            "summary": _summary(r),
        }
        for r, record_id in found
    ]


def _op(record: journal.Record) -> str:
    if isinstance(record, journal.RefRecord):
        return "ref"
    return "forget" if isinstance(record, journal.ForgetRecord) else "thin"


def _summary(record: journal.Record) -> str:
    if isinstance(record, journal.RefRecord):
        target = "deleted" if record.checkpoint is None else f"-> {record.checkpoint[:12]}"
        return f"{record.kind} {record.name!r} {target}"
    if isinstance(record, journal.ForgetRecord):
        return f"forgot {len(record.parents)} checkpoint(s)"
    paths = len(record.key_paths)
    return f"thinned {paths} entr{'y' if paths == 1 else 'ies'} of {record.checkpoint[:12]}"


def _of_kind(store: Store, object_id: str, kind: Kind) -> bytes:
    """The object's bytes, once its header says it is a ``kind`` (WrongObjectKindError if not)."""
    data = store.objects.get(object_id)
    found = codecs.read_header(data, object_id).kind
    if found != kind:
        raise WrongObjectKindError(object_id, found.name.lower(), kind.name.lower())
    return data


def _raw(store: Store, object_id: str, kind: Kind) -> bytearray:
    return codecs.decode(_of_kind(store, object_id, kind), object_id, kind=kind)
