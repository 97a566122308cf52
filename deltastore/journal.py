"""The journal: small record objects for the history changes no manifest tells.

The catalog is an index that must be rebuildable from the objects alone
(DESIGN.md §1).  Manifests tell every save and the branch it moved; three
other changes would be lost with ``catalog.sqlite``: a ref set or deleted by
hand (``tag``, ``branch``, ``delete_ref``), checkpoints forgotten by
retention, and entries thinned out of old checkpoints.  Each of them writes
one record object, durable, before the catalog transaction that makes it
(the write order of DESIGN.md §2), and ``rebuild`` replays the records in time
order over the manifests.

A record is canonical JSON, like a manifest, in an object of kind RECORD; its
id is the BLAKE3 of those bytes.  The catalog lists records in its objects
table, so gc keeps them.  A record whose transaction never committed (a
crash in between) is not in the catalog, and gc removes it like any other
object no checkpoint needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deltastore import codecs
from deltastore.catalog.queries import NewObject
from deltastore.errors import CorruptObjectError
from deltastore.ids import hex_digest, is_full_id
from deltastore.objects import ObjectStore

RECORD_VERSION = 1


@dataclass(frozen=True)
class RefRecord:
    """``name`` was pointed at ``checkpoint`` (None: the ref was deleted)."""

    time_us: int
    name: str
    kind: str  # refs.BRANCH or refs.TAG
    checkpoint: str | None


@dataclass(frozen=True)
class ForgetRecord:
    """Checkpoints dropped from the history, each with the parent it had.

    The parents let a rebuild join a kept child to its nearest kept
    ancestor, as the catalog did when the checkpoints were forgotten.
    """

    time_us: int
    parents: dict[str, str | None]


@dataclass(frozen=True)
class ThinRecord:
    """Entries removed from a kept checkpoint (its other entries stay restorable)."""

    time_us: int
    checkpoint: str
    key_paths: tuple[str, ...]


Record = RefRecord | ForgetRecord | ThinRecord


def to_bytes(record: Record) -> bytes:
    """The canonical bytes of a record (sorted keys, ASCII, no spaces)."""
    doc: dict[str, Any] = {"deltastore_record": RECORD_VERSION, "time_us": record.time_us}
    if isinstance(record, RefRecord):
        doc.update(op="ref", name=record.name, kind=record.kind, checkpoint=record.checkpoint)
    elif isinstance(record, ForgetRecord):
        doc.update(op="forget", parents=record.parents)
    else:
        doc.update(op="thin", checkpoint=record.checkpoint, key_paths=list(record.key_paths))
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def parse(data: bytes | bytearray, object_id: str) -> Record:
    """A record from its bytes; CorruptObjectError when they are not one."""
    try:
        doc = json.loads(data)
        if doc.get("deltastore_record") != RECORD_VERSION:
            raise ValueError(f"record version {doc.get('deltastore_record')!r}")
        time_us = int(doc["time_us"])
        op = doc["op"]
        if op == "ref":
            return RefRecord(
                time_us, str(doc["name"]), str(doc["kind"]), _optional_id(doc["checkpoint"])
            )
        if op == "forget":
            parents = {_id(child): _optional_id(parent) for child, parent in doc["parents"].items()}
            return ForgetRecord(time_us, parents)
        if op == "thin":
            paths = tuple(str(p) for p in doc["key_paths"])
            return ThinRecord(time_us, _id(doc["checkpoint"]), paths)
        raise ValueError(f"unknown op {op!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptObjectError(object_id, f"journal record is malformed: {exc}") from None


def _id(value: Any) -> str:
    if not isinstance(value, str) or not is_full_id(value):
        raise ValueError(f"bad id {value!r}")
    return value


def _optional_id(value: Any) -> str | None:
    return None if value is None else _id(value)


def write(
    objects: ObjectStore, records: Sequence[Record], codec: str = codecs.DEFAULT_CODEC
) -> list[NewObject]:
    """Store records durably (one flush for all); return the rows the caller lists in its
    catalog transaction."""
    rows = []
    for record in records:
        raw = to_bytes(record)
        record_id = hex_digest(raw)
        encoded = codecs.encode(raw, 1, kind=codecs.Kind.RECORD, codec=codec)
        objects.put_if_absent(record_id, encoded)
        rows.append(NewObject(record_id, codecs.Kind.RECORD, len(raw), len(encoded)))
    objects.flush()
    return rows


def read(objects: ObjectStore, record_id: str) -> Record:
    """A stored record, verified against its id."""
    raw = codecs.decode(objects.get(record_id), record_id, kind=codecs.Kind.RECORD)
    return parse(raw, record_id)
