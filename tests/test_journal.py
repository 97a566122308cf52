"""Journal records: canonical round trips, malformed bytes refused, records of ref changes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

import deltastore
from deltastore import codecs, journal
from deltastore.catalog.engine import read_transaction
from deltastore.catalog.models import ObjectRow
from deltastore.errors import CorruptObjectError

ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
times = st.integers(min_value=0, max_value=2**62)
names = st.text(min_size=1, max_size=40)
records = st.one_of(
    st.builds(journal.RefRecord, times, names, st.sampled_from(["branch", "tag"]), st.none() | ids),
    st.builds(journal.ForgetRecord, times, st.dictionaries(ids, st.none() | ids, max_size=5)),
    st.builds(journal.ThinRecord, times, ids, st.lists(names, max_size=5).map(tuple)),
)


@given(records)
def test_records_round_trip_canonically(record: journal.Record) -> None:
    data = journal.to_bytes(record)
    assert journal.parse(data, "x" * 64) == record
    assert journal.to_bytes(journal.parse(data, "x" * 64)) == data
    assert data.isascii()


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"deltastore_record":2,"time_us":1,"op":"ref"}',
        b'{"deltastore_record":1,"time_us":1,"op":"rename"}',
        b'{"deltastore_record":1,"time_us":1,"op":"thin","checkpoint":"abc","key_paths":[]}',
        b'{"deltastore_record":1,"time_us":1,"op":"forget","parents":{"zz":null}}',
        b'{"deltastore_record":1,"op":"forget","parents":{}}',
    ],
)
def test_malformed_records_are_corrupt_objects(data: bytes) -> None:
    with pytest.raises(CorruptObjectError, match="journal record is malformed"):
        journal.parse(data, "f" * 64)


def _record_rows(store: deltastore.Store) -> list[str]:
    with read_transaction(store.engine) as conn:
        rows = conn.execute(select(ObjectRow.id).where(ObjectRow.kind == codecs.Kind.RECORD))
        return [r.id for r in rows]


def _records(store: deltastore.Store) -> list[journal.Record]:
    found = [journal.read(store.objects, i) for i in _record_rows(store)]
    return sorted(found, key=lambda r: r.time_us)


def test_ref_changes_write_records_the_catalog_lists(store: deltastore.Store) -> None:
    first = store.save({"w": np.arange(4, dtype=np.float32)}, "one")
    second = store.save({"w": np.arange(5, dtype=np.float32)}, "two")
    store.tag("v1", first)
    store.tag("v1", first)  # already there: nothing new to record
    store.tag("v1", second, force=True)
    store.branch("exp", first)
    store.delete_ref("v1")
    got = [
        (r.name, r.kind, r.checkpoint) for r in _records(store) if isinstance(r, journal.RefRecord)
    ]
    assert got == [
        ("v1", "tag", first),
        ("v1", "tag", second),
        ("exp", "branch", first),
        ("v1", "tag", None),
    ]
    for record_id in _record_rows(store):  # each one durable, readable and verified by its id
        assert store.objects.exists(record_id)


def test_a_refused_ref_change_leaves_no_catalog_record(store: deltastore.Store) -> None:
    first = store.save({"w": np.arange(4, dtype=np.float32)}, "one")
    second = store.save({"w": np.arange(5, dtype=np.float32)}, "two")
    store.tag("v1", first)
    with pytest.raises(deltastore.errors.RefExistsError):
        store.tag("v1", second)
    with pytest.raises(deltastore.errors.RefNotFoundError):
        store.delete_ref("nope")
    assert len(_record_rows(store)) == 1
