"""A damaged object is always detected on load, and the error says where (DESIGN.md invariant 3).

The fixture saves three checkpoints with small chunks (so entries have many
objects), deltas two deep, a chunk shared by two positions, width-1 chunks and
objects of both codecs.  Every test damages objects on disk and then loads
*every* checkpoint: those that read a damaged object must raise
CorruptObjectError naming the checkpoint, the entry and the chunk; the others
must still load bit-exact.  No other exception type, never wrong data.
"""

from __future__ import annotations

import random
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import deltastore
from deltastore import codecs
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction
from deltastore.codecs import Transform
from deltastore.objects import LocalObjectStore

from .conftest import assert_same, chained_deltas, trained_like

CHUNK_SIZE = 4096
Location = tuple[str, int]  # (key path, chunk index)


def _drift(shape: tuple[int, ...], step: int) -> torch.Tensor:
    """A small update, as one optimiser step makes: deltas against the parent pay."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(shape, generator=g) * 1e-5


def _rows_updated(w: torch.Tensor, step: int) -> torch.Tensor:
    """A sparse update (as of embedding rows): the delta's planes all compress."""
    updated = w.clone()
    updated[:4] += _drift(updated[:4].shape, step)
    return updated


def _states() -> list[dict[str, Any]]:
    w = trained_like((32, 96))  # fp32, 12288 bytes: 3 chunks
    emb = trained_like((48, 64), seed=1).bfloat16()  # 6144 bytes: 2 chunks
    exp_avg = trained_like((40, 40), seed=3)  # 6400 bytes: 2 chunks
    model = {"w": w, "emb": emb, "b": torch.arange(7.0)}
    first: dict[str, Any] = {
        "model": model,
        "optim": {"state": {0: {"exp_avg": exp_avg, "step": torch.tensor(1.0)}}},
        "mask": (torch.arange(5000) % 7).to(torch.uint8),  # width 1: untransformed objects
        "zeros": torch.zeros(2048),  # two identical chunks: one object read at two positions
        "hist": np.linspace(-1.0, 1.0, 700),  # numpy float64, 2 chunks
        # complex128: planes (and deltas) by its 8-byte components
        "phase": torch.polar(
            torch.ones(300, dtype=torch.float64), torch.linspace(0, 3, 300).double()
        ),
        "step": 1,
    }
    w2 = w + _drift(w.shape, 2)
    second: dict[str, Any] = {
        **first,
        "model": {**model, "w": w2},
        "optim": {"state": {0: {"exp_avg": exp_avg * 0.9, "step": torch.tensor(2.0)}}},
        "step": 2,
    }
    third: dict[str, Any] = {
        **second,
        "model": {
            **model,
            "w": _rows_updated(w2, 3),  # a delta of a delta
            "emb": (emb.float() + _drift(emb.shape, 4)).bfloat16(),
        },
        "hist": first["hist"] + 1e-9,
        "phase": first["phase"] * (1 + 1e-12),
        "step": 3,
    }
    return [first, second, third]


@dataclass
class Saved:
    """A store, what each checkpoint holds, and how its objects depend on each other."""

    store: deltastore.Store
    states: dict[str, Any]  # checkpoint id -> the state saved under it
    chunks: dict[str, dict[str, list[str]]]  # checkpoint id -> key path -> chunk ids
    bases: dict[str, str]  # delta object id -> its base's id

    def path(self, object_id: str) -> Path:
        objects = self.store.objects
        assert isinstance(objects, LocalObjectStore)
        return objects.path(object_id)

    def object_ids(self) -> list[str]:
        """Every object file under objects/, chunks and manifests alike."""
        root = self.store.root / "objects"
        return sorted(p.parent.name + p.name for p in root.glob("*/*") if p.is_file())

    def labels(self) -> dict[str, str]:
        """Object id -> a name that is the same in every run (manifest ids hold the save time)."""
        labels: dict[str, str] = {}
        for n, (checkpoint_id, entries) in enumerate(self.chunks.items()):
            labels[checkpoint_id] = f"manifest {n}"
            for key_path, ids in entries.items():
                for index, object_id in enumerate(ids):
                    labels.setdefault(object_id, f"checkpoint {n} {key_path} {index}")
        return labels

    def chain(self, object_id: str) -> list[str]:
        """The objects a chunk's decode reads: itself, its base, its base's base..."""
        chain = [object_id]
        while chain[-1] in self.bases:
            chain.append(self.bases[chain[-1]])
        return chain

    def readers(self, checkpoint_id: str, damaged: set[str]) -> set[Location]:
        """The chunks of a checkpoint whose decode reads one of the damaged objects."""
        return {
            (key_path, index)
            for key_path, ids in self.chunks[checkpoint_id].items()
            for index, object_id in enumerate(ids)
            if damaged.intersection(self.chain(object_id))
        }

    def location(self, object_id: str) -> tuple[str, Location]:
        """Some (checkpoint, chunk) that reads ``object_id`` directly."""
        for checkpoint_id, entries in self.chunks.items():
            for key_path, ids in entries.items():
                if object_id in ids:
                    return checkpoint_id, (key_path, ids.index(object_id))
        raise AssertionError(f"{object_id} is read by no chunk")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    root = tmp_path_factory.mktemp("corruption") / "store"
    states = _states()
    ids: list[str] = []
    # Deltas of deltas, as stores written before session 5 chain them: the deepest case.
    with (
        chained_deltas(),
        deltastore.open(root, create=True, chunk_size=CHUNK_SIZE, progress=False) as store,
    ):
        ids += [store.save(states[0], step=1), store.save(states[1], step=2)]
    # The third save comes from a new handle: LZ4 objects, bases read back from disk.
    store = deltastore.open(root, codec="lz4", progress=False)
    with chained_deltas():
        ids.append(store.save(states[2], step=3))
    with read_transaction(store.engine) as conn:
        chunks = {cid: queries.chunk_ids_of(conn, cid) for cid in ids}
    saved = Saved(store, dict(zip(ids, states, strict=True)), chunks, {})
    for object_id in saved.object_ids():
        header = codecs.read_header(saved.path(object_id).read_bytes(), object_id)
        if header.base_id is not None:
            saved.bases[object_id] = header.base_id.hex()
    yield saved
    store.close()


@pytest.fixture
def fresh(saved: Saved) -> Iterator[Saved]:
    """The shared store; every object file is put back as it was after the test."""
    originals = {oid: saved.path(oid).read_bytes() for oid in saved.object_ids()}
    yield saved
    for object_id, data in originals.items():
        _rewrite(saved.path(object_id), data)


def _rewrite(path: Path, data: bytes) -> None:
    if path.exists():
        path.chmod(0o644)  # objects are written read-only
    path.write_bytes(data)
    path.chmod(0o444)


def assert_detected(saved: Saved, damaged: set[str], *, may_survive: bool = False) -> None:
    """Load every checkpoint: those reading a damaged object fail, located; the rest are exact.

    ``may_survive``: the damage left an object that still decodes to the bytes
    its id names (see the flip test); loading may then succeed, but bit-exact.
    """
    for checkpoint_id, state in saved.states.items():
        locations = saved.readers(checkpoint_id, damaged)
        if checkpoint_id not in damaged and not locations:
            assert_same(saved.store.load(checkpoint_id), state)
            continue
        try:
            loaded = saved.store.load(checkpoint_id)
        except deltastore.CorruptObjectError as err:
            assert err.checkpoint_id == checkpoint_id
            assert f"in checkpoint {checkpoint_id[:12]}" in str(err)
            if checkpoint_id in damaged:  # the manifest: no entry to name
                assert err.object_id == checkpoint_id
                assert (err.key_path, err.chunk_index) == (None, None)
            else:
                assert (err.key_path, err.chunk_index) in locations
                assert f"entry {err.key_path!r}, chunk {err.chunk_index}: " in str(err)
        else:
            assert may_survive, f"damage to {sorted(damaged)} went unnoticed"
            assert_same(loaded, state)


def test_fixture_covers_deltas_chains_sharing_and_both_codecs(saved: Saved) -> None:
    """The other tests are only as strong as the store they damage."""
    ids = saved.object_ids()
    assert set(ids) == set(saved.store.objects.iter_ids())
    referenced = set(saved.states) | {
        oid
        for entries in saved.chunks.values()
        for chunk_ids in entries.values()
        for oid in chunk_ids
    }
    assert set(ids) == referenced == set(saved.labels())  # each file: a manifest or a chunk
    assert max(len(saved.chain(oid)) for oid in ids) >= 3  # a delta of a delta
    third = list(saved.states)[-1]
    assert saved.chunks[third]["zeros"][0] == saved.chunks[third]["zeros"][1]
    assert len(saved.chunks[third]["model/w"]) == 3
    plane_codecs: set[codecs.PlaneCodec] = set()
    transforms: set[Transform] = set()
    for object_id in ids:
        header = codecs.read_header(saved.path(object_id).read_bytes(), object_id)
        plane_codecs.update(p.codec for p in header.planes)
        transforms.add(header.transform)
    assert {codecs.PlaneCodec.LZ4, codecs.PlaneCodec.ZSTD, codecs.PlaneCodec.ZERO} <= plane_codecs
    # Writers make XOR deltas no more (zigzag differences replaced them); the golden
    # store's tests read XOR objects.
    assert transforms == set(Transform) - {Transform.XOR_PLANES}


def _still_decodes(saved: Saved, object_id: str, data: bytes) -> bool:
    """True when ``data`` decodes, verified, to the bytes ``object_id`` names."""
    try:
        header = codecs.read_header(data, object_id)
        if header.kind == codecs.Kind.MANIFEST:
            codecs.decode(data, object_id)
            return True
        base = None
        if header.base_id is not None:
            base = saved.store._reader.read_chunk(header.base_id.hex())
        out = bytearray(header.raw_length)
        codecs.decode_into(data, object_id, memoryview(out), base=base)
    except deltastore.CorruptObjectError:
        return False
    return True


def test_every_flipped_byte_is_detected_and_located(fresh: Saved) -> None:
    """One bit of every object file, once in its header and once in its payload."""
    for object_id, label in fresh.labels().items():
        rng = random.Random(f"1461 {label}")  # positions do not depend on ids or save times
        path = fresh.path(object_id)
        original = path.read_bytes()
        header = codecs.read_header(original, object_id)
        flips = [(rng.randrange(header.payload_offset), rng.randrange(8))]
        if header.payload_offset < len(original):
            flips.append((rng.randrange(header.payload_offset, len(original)), rng.randrange(8)))
        for position, bit in flips:
            damaged = bytearray(original)
            damaged[position] ^= 1 << bit
            _rewrite(path, bytes(damaged))
            # Some flips leave a valid object: an untransformed object ignores its element
            # width, and an LZ4 match offset may move within a run of equal bytes.  Those
            # may load, bit-exact; every other flip must be detected and located.
            benign = _still_decodes(fresh, object_id, bytes(damaged))
            assert_detected(fresh, {object_id}, may_survive=benign)
        _rewrite(path, original)
    for checkpoint_id, state in fresh.states.items():
        assert_same(fresh.store.load(checkpoint_id), state)


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _empty(data: bytes) -> bytes:
    return b""


def _padded(data: bytes) -> bytes:
    return data + b"\x00"


@pytest.mark.parametrize("damage", [_half, _empty, _padded], ids=["truncated", "empty", "padded"])
def test_every_truncated_empty_or_padded_object_is_detected(
    fresh: Saved, damage: Callable[[bytes], bytes]
) -> None:
    for object_id in fresh.object_ids():
        path = fresh.path(object_id)
        original = path.read_bytes()
        _rewrite(path, damage(original))
        assert_detected(fresh, {object_id})
        _rewrite(path, original)


def test_every_missing_object_is_detected(fresh: Saved) -> None:
    for object_id in fresh.object_ids():
        path = fresh.path(object_id)
        original = path.read_bytes()
        path.unlink()
        assert_detected(fresh, {object_id})
        checkpoint_id = object_id if object_id in fresh.states else fresh.location(object_id)[0]
        with pytest.raises(deltastore.CorruptObjectError, match="object is missing"):
            fresh.store.load(checkpoint_id)
        _rewrite(path, original)


def test_missing_chunk_error_names_checkpoint_entry_and_chunk(fresh: Saved) -> None:
    checkpoint_id = next(iter(fresh.states))
    object_id = fresh.chunks[checkpoint_id]["optim/state/0/exp_avg"][1]
    fresh.path(object_id).unlink()
    with pytest.raises(deltastore.CorruptObjectError) as info:
        fresh.store.load(checkpoint_id)
    assert str(info.value) == (
        f"corrupt object {object_id[:16]} in checkpoint {checkpoint_id[:12]}, "
        "entry 'optim/state/0/exp_avg', chunk 1: object is missing"
    )
    assert (info.value.object_id, info.value.reason) == (object_id, "object is missing")


def test_corrupt_manifest_is_named_with_its_checkpoint(fresh: Saved) -> None:
    checkpoint_id = list(fresh.states)[1]
    path = fresh.path(checkpoint_id)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40
    _rewrite(path, bytes(data))
    with pytest.raises(deltastore.CorruptObjectError) as info:
        fresh.store.load(checkpoint_id)
    assert str(info.value).startswith(
        f"corrupt object {checkpoint_id[:16]} in checkpoint {checkpoint_id[:12]}: "
    )
    with pytest.raises(deltastore.CorruptObjectError):
        fresh.store.load_tensor(checkpoint_id, "model/b")  # one entry needs the manifest too


def _swap(saved: Saved, a: str, b: str) -> None:
    data_a, data_b = saved.path(a).read_bytes(), saved.path(b).read_bytes()
    _rewrite(saved.path(a), data_b)
    _rewrite(saved.path(b), data_a)


def _swap_cases(saved: Saved) -> dict[str, tuple[str, str]]:
    first, second, third = saved.states
    w1, w3 = saved.chunks[first]["model/w"], saved.chunks[third]["model/w"]
    return {
        "two chunks of one entry": (w1[0], w1[1]),
        "chunks of different entries": (w1[2], saved.chunks[first]["mask"][0]),
        "a delta and its base": (w3[0], saved.bases[w3[0]]),
        "a chunk and a manifest": (w1[0], second),
        "two manifests": (first, third),
    }


@pytest.mark.parametrize(
    "case",
    [
        "two chunks of one entry",
        "chunks of different entries",
        "a delta and its base",
        "a chunk and a manifest",
        "two manifests",
    ],
)
def test_valid_objects_under_each_others_names_are_detected(fresh: Saved, case: str) -> None:
    """Each object is intact and decodes; only the hash (or the kind) gives it away.

    A delta stored under its base's name names itself as its own base: the
    reader must stop at the chain limit, not recurse forever.
    """
    a, b = _swap_cases(fresh)[case]
    _swap(fresh, a, b)
    assert_detected(fresh, {a, b})


def test_undamaged_entries_load_beside_a_damaged_one(fresh: Saved) -> None:
    checkpoint_id = list(fresh.states)[-1]
    state = fresh.states[checkpoint_id]
    entries = fresh.chunks[checkpoint_id]
    damaged = entries["model/w"][-1]
    fresh.path(damaged).unlink()
    for key_path in entries:
        if key_path == "model/w":
            with pytest.raises(deltastore.CorruptObjectError) as info:
                fresh.store.load_tensor(checkpoint_id, key_path)
            assert (info.value.key_path, info.value.chunk_index) == ("model/w", 2)
            assert info.value.checkpoint_id == checkpoint_id
            continue
        assert_same(fresh.store.load_tensor(checkpoint_id, key_path), _leaf(state, key_path))


def _leaf(state: Any, key_path: str) -> Any:
    """The value at a key path ("optim/state/0/exp_avg": the 0 is an int key)."""
    node = state
    for part in key_path.split("/"):
        node = node[part] if part in node else node[int(part)]
    return node


def _delta_in(saved: Saved) -> tuple[str, str, Location]:
    """(checkpoint, delta object, its location): chunk 0 of model/w in the last checkpoint."""
    checkpoint_id = list(saved.states)[-1]
    object_id = saved.chunks[checkpoint_id]["model/w"][0]
    assert object_id in saved.bases
    return checkpoint_id, object_id, ("model/w", 0)


def test_damaged_delta_header_is_blamed_on_the_delta_not_its_base(fresh: Saved) -> None:
    """Regression: a delta whose raw-length field was damaged was reported as its intact base.

    The reader allocated the base's buffer from the delta's (damaged) raw
    length and decoded the base into it first; the base then failed the size
    check and the error named the base, an object with nothing wrong with it.
    Whoever repairs the store from the message would replace the wrong file.
    """
    checkpoint_id, object_id, location = _delta_in(fresh)
    path = fresh.path(object_id)
    original = path.read_bytes()
    header = codecs.read_header(original, object_id)
    base_id_field = range(16, 48)  # a damaged base id names a missing base, rightly
    for position in range(header.payload_offset):
        if position in base_id_field:
            continue
        damaged = bytearray(original)
        # Bits 32 and up of the raw length claim gigabytes; 0x80 there exceeds the cap.
        damaged[position] ^= 0x80 if position in range(12, 16) else 0x01
        _rewrite(path, bytes(damaged))
        with pytest.raises(deltastore.CorruptObjectError) as info:
            fresh.store.load(checkpoint_id)
        err = info.value
        assert (err.key_path, err.chunk_index) == location, position
        assert err.object_id == object_id, f"header byte {position}: {err}"
    _rewrite(path, original)


def test_damaged_delta_raw_length_is_refused_before_allocating_it(fresh: Saved) -> None:
    """Regression: one flipped bit of a delta's raw length made load allocate what it claimed.

    The header check bounds the raw length at 2^34, so bit 33 had load zero
    8 GiB for the base before noticing the chunk is 4 KiB (MemoryError, not
    CorruptObjectError, on a smaller machine).  Here bit 26 claims 64 MiB.
    """
    checkpoint_id, object_id, _ = _delta_in(fresh)
    path = fresh.path(object_id)
    data = bytearray(path.read_bytes())
    (raw_length,) = struct.unpack_from("<Q", data, 8)
    struct.pack_into("<Q", data, 8, raw_length | 1 << 26)
    _rewrite(path, bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(deltastore.CorruptObjectError):
            fresh.store.load_tensor(checkpoint_id, "model/w")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak >> 20} MiB for a 12 KiB entry"


def test_damaged_base_is_named_not_the_delta_read_through_it(fresh: Saved) -> None:
    """Regression: since restore stopped hashing a delta's bases, a damaged base is not named.

    The chain below a delta is decoded unverified; only the chunk asked for is
    hashed.  Wrong bytes in a base are still detected (the delta's hash
    fails), but the error then blames the delta, which is intact, and not the
    base whose file is damaged.  Checking the chain again once the hash has
    failed would name the right object at no cost on the good path.
    """
    first, second, _ = fresh.states
    base_id = fresh.chunks[first]["model/w"][0]
    delta_id = fresh.chunks[second]["model/w"][0]
    assert fresh.bases[delta_id] == base_id
    path = fresh.path(base_id)
    data = bytearray(path.read_bytes())
    header = codecs.read_header(bytes(data), base_id)
    assert header.planes[0].codec == codecs.PlaneCodec.RAW  # a flip there decodes, wrongly
    data[header.payload_offset] ^= 0x01
    _rewrite(path, bytes(data))
    for checkpoint_id in (first, second):
        with pytest.raises(deltastore.CorruptObjectError) as info:
            fresh.store.load(checkpoint_id)
        err = info.value
        assert (err.checkpoint_id, err.key_path, err.chunk_index) == (checkpoint_id, "model/w", 0)
        assert err.object_id == base_id, f"checkpoint {checkpoint_id[:12]}: {err}"
