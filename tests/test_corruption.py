"""A damaged object is always detected on load, and the error says where."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

import deltastore
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction

from .conftest import trained_like


@pytest.fixture
def saved(tmp_path: Path) -> tuple[deltastore.Store, str, dict[str, tuple[str, int]]]:
    """A store (small chunks: many objects) and a map object id -> (key path, chunk index)."""
    store = deltastore.open(tmp_path / "s", create=True, chunk_size=4096, progress=False)
    state = {
        "model": {"w": trained_like((32, 96)), "b": torch.arange(7.0)},
        "optim": [trained_like((40, 40), seed=3)],
    }
    store.save({"model": {"w": state["model"]["w"] * 0.5}, "optim": state["optim"]})
    cid = store.save(state)  # the second save holds deltas against the first
    with read_transaction(store.engine) as conn:
        chunks = queries.chunk_ids_of(conn, cid)
    where = {oid: (path, i) for path, ids in chunks.items() for i, oid in enumerate(ids)}
    yield store, cid, where
    store.close()


def _path(store: deltastore.Store, object_id: str) -> Path:
    return store.objects.path(object_id)  # type: ignore[attr-defined, no-any-return]


def _rewrite(path: Path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


def test_every_flipped_byte_is_detected_and_located(saved: tuple) -> None:  # type: ignore[type-arg]
    store, cid, where = saved
    rng = random.Random(5)
    targets = [*where, cid]
    for object_id in targets:
        path = _path(store, object_id)
        original = path.read_bytes()
        for position in {0, 5, 8, 20, len(original) - 1, rng.randrange(len(original))}:
            damaged = bytearray(original)
            damaged[position] ^= 1 << rng.randrange(8)
            _rewrite(path, bytes(damaged))
            with pytest.raises(deltastore.CorruptObjectError) as info:
                store.load(cid)
            err = info.value
            assert err.checkpoint_id == cid
            assert cid[:12] in str(err)
            if object_id in where:
                key_path, index = where[object_id]
                assert (err.key_path, err.chunk_index) == (key_path, index)
                assert f"entry {key_path!r}, chunk {index}" in str(err)
            _rewrite(path, original)
    assert store.load(cid)["model"]["b"].tolist() == list(range(7))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[: len(data) // 2], "truncated|header accounts for"),
        (lambda data: b"", "truncated header"),
        (lambda data: data + b"\x00", "header accounts for"),
    ],
)
def test_truncated_or_padded_objects(saved: tuple, damage: object, reason: str) -> None:  # type: ignore[type-arg]
    store, cid, where = saved
    object_id = next(iter(where))
    path = _path(store, object_id)
    _rewrite(path, damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(deltastore.CorruptObjectError, match=reason):
        store.load(cid)


def test_missing_object(saved: tuple) -> None:  # type: ignore[type-arg]
    store, cid, where = saved
    object_id, (key_path, index) = next(iter(where.items()))
    _path(store, object_id).unlink()
    with pytest.raises(deltastore.CorruptObjectError, match="object is missing") as info:
        store.load(cid)
    assert (info.value.key_path, info.value.chunk_index) == (key_path, index)


def test_swapped_valid_objects_are_detected(saved: tuple) -> None:  # type: ignore[type-arg]
    """Two intact objects under each other's names: each decodes, neither hashes right."""
    store, cid, where = saved
    a, b = [oid for oid, (path, _) in where.items() if path == "model/w"][:2]
    data_a, data_b = _path(store, a).read_bytes(), _path(store, b).read_bytes()
    _rewrite(_path(store, a), data_b)
    _rewrite(_path(store, b), data_a)
    with pytest.raises(deltastore.CorruptObjectError, match=r"do not hash|decodes to|without its"):
        store.load(cid)


def test_missing_manifest(saved: tuple) -> None:  # type: ignore[type-arg]
    store, cid, _ = saved
    _path(store, cid).unlink()
    with pytest.raises(deltastore.CorruptObjectError, match="object is missing") as info:
        store.load(cid)
    assert info.value.checkpoint_id == cid


def test_undamaged_entry_still_loads_beside_a_damaged_one(saved: tuple) -> None:  # type: ignore[type-arg]
    store, cid, where = saved
    damaged = next(oid for oid, (path, _) in where.items() if path == "model/w")
    _path(store, damaged).unlink()
    assert store.load_tensor(cid, "model/b").tolist() == list(range(7))
    with pytest.raises(deltastore.CorruptObjectError):
        store.load_tensor(cid, "model/w")
