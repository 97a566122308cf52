"""Large objects of a durable store are written with O_DIRECT; what the file system refuses
is written buffered; either way an object's file holds exactly its bytes."""

from __future__ import annotations

import ctypes
import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import deltastore
from deltastore.objects import direct
from deltastore.objects.local import LocalObjectStore
from tests.conftest import trained_like


def _supports_direct(folder: Path) -> bool:
    if not direct.O_DIRECT:
        return False
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | direct.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    (folder / "probe").unlink()
    return True


@pytest.fixture
def objects(tmp_path: Path) -> LocalObjectStore:
    root = tmp_path / "objects"
    LocalObjectStore.create(root)
    store = LocalObjectStore(root, durable=True)
    yield store
    store.close()


def _object(size: int, seed: int = 0) -> tuple[str, bytes]:
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return f"{seed:02x}" + "ab" * 31, data


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(
        st.integers(direct.MIN_BYTES - 1, direct.MIN_BYTES + 3 * direct.ALIGN + 1),
        min_size=1,
        max_size=3,
    )
)
def test_objects_of_any_length_are_stored_exactly(tmp_path_factory, sizes: list[int]) -> None:
    root = tmp_path_factory.mktemp("o") / "objects"
    LocalObjectStore.create(root)
    store = LocalObjectStore(root, durable=True)
    try:
        written = {}
        for seed, size in enumerate(sizes):
            object_id, data = _object(size, seed)
            cut = size // 3  # in parts, as the encoder hands them over
            store.put_parts(object_id, [data[:cut], memoryview(data)[cut:]])
            written[object_id] = data
        store.flush()
        for object_id, data in written.items():
            assert store.path(object_id).read_bytes() == data
        assert not list(root.rglob(".tmp-*"))
    finally:
        store.close()


def test_large_objects_go_direct_where_the_file_system_takes_it(
    objects: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _supports_direct(objects.root):
        # Linux's ext4, xfs, btrfs and (since 6.6) tmpfs take it: a skip on CI means the
        # probe or the platform changed, not that direct writes work.
        pytest.skip("this file system refuses O_DIRECT")
    calls = []
    real_write = direct.write
    monkeypatch.setattr(direct, "write", lambda *a: calls.append(a[2]) or real_write(*a))
    small_id, small = _object(direct.MIN_BYTES - 1, 1)
    large_id, large = _object(direct.MIN_BYTES + 5, 2)
    objects.put_parts(small_id, [small])
    objects.put_parts(large_id, [large])
    objects.flush()
    assert calls == [len(large)]  # the small one was written buffered
    assert objects.path(large_id).read_bytes() == large


def test_a_refusal_writes_buffered_from_then_on(
    objects: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def refuse(fd: int, buffer: memoryview, size: int) -> None:
        calls.append(size)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(direct, "write", refuse)
    ids = []
    for seed in range(3):
        object_id, data = _object(direct.MIN_BYTES + seed, seed)
        objects.put_parts(object_id, [data])
        objects.flush()
        ids.append((object_id, data))
    assert len(calls) == 1  # tried once
    for object_id, data in ids:
        assert objects.path(object_id).read_bytes() == data
    assert not list(objects.root.rglob(".tmp-*"))


def test_a_file_system_refusing_direct_opens_gets_buffered_writes(
    objects: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What such a file system does: the open with O_DIRECT fails with EINVAL."""
    if not direct.O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    real_open = os.open
    refused = []

    def no_direct(path: object, flags: int, mode: int = 0o777) -> int:
        if flags & direct.O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_direct)
    written = [_object(direct.MIN_BYTES + 3 * seed, seed) for seed in range(3)]
    for object_id, data in written:
        objects.put_parts(object_id, [data])
    objects.flush()
    assert len(refused) >= 1 and not objects._direct.enabled
    for object_id, data in written:
        assert objects.path(object_id).read_bytes() == data
    assert not list(objects.root.rglob(".tmp-*"))


def test_einval_after_part_of_a_direct_write_rewrites_the_object_buffered(
    objects: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwritev = os.pwritev

    def half_then_refuse(fd: int, buffers: list[memoryview], offset: int) -> int:
        if offset:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwritev(fd, [buffers[0][: direct.ALIGN]], offset)

    monkeypatch.setattr(os, "pwritev", half_then_refuse)
    object_id, data = _object(direct.MIN_BYTES + 17)
    objects.put_parts(object_id, [data])
    objects.flush()
    assert objects.path(object_id).read_bytes() == data
    assert not objects._direct.enabled


def test_a_copy_that_fails_gives_back_its_slots(
    objects: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of memory for the aligned copy, more times than there are slots: later puts still
    go through (a leaked slot would block them for good)."""
    real_fill = direct.DirectWrites.fill

    def out_of_memory(self: direct.DirectWrites, parts: object, size: int) -> memoryview:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(direct.DirectWrites, "fill", out_of_memory)
    for seed in range(direct.IN_FLIGHT + 2):
        object_id, data = _object(direct.MIN_BYTES, seed)
        with pytest.raises(deltastore.StorageError, match="Cannot allocate memory"):
            objects.put_parts(object_id, [data])
    monkeypatch.setattr(direct.DirectWrites, "fill", real_fill)
    with ThreadPoolExecutor(1) as pool:  # a leak would block here; the timeout says so
        object_id, data = _object(direct.MIN_BYTES, 99)
        pool.submit(objects.put_parts, object_id, [data]).result(timeout=30)
    objects.flush()
    assert objects.path(object_id).read_bytes() == data


def test_parts_are_counted_in_bytes_whatever_their_item_size(objects: LocalObjectStore) -> None:
    object_id, data = _object(direct.MIN_BYTES * 2)
    floats = memoryview(data).cast("f")  # len() would count 4-byte items
    objects.put_parts(object_id, [floats])
    objects.flush()
    assert objects.path(object_id).read_bytes() == data


def test_a_full_disk_in_a_direct_write_records_nothing(
    store: deltastore.Store, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.save({"w": trained_like((64, 64))})
    real_write = direct.write
    calls = [0]

    def filling(fd: int, buffer: memoryview, size: int) -> None:
        calls[0] += 1
        if calls[0] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, buffer, size)

    monkeypatch.setattr(direct, "write", filling)
    with pytest.raises(deltastore.StorageError, match="No space left on device") as info:
        store.save({f"w{i}": trained_like((256, 1024), seed=i) for i in range(6)})
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert calls[0] > 2
    assert [c.id for c in store.log()] == [first]
    assert not list((store_path / "objects").rglob(".tmp-*"))
    second = store.save({"w": trained_like((256, 1024), seed=9)})
    assert store.load(second)["w"].equal(trained_like((256, 1024), seed=9))


def test_buffers_are_aligned_hold_the_parts_and_are_recycled() -> None:
    writes = direct.DirectWrites()
    data = bytes(range(256)) * 1100
    buffer = writes.fill([data[:1000], data[1000:]], len(data))
    assert len(buffer) >= len(data) and bytes(buffer[: len(data)]) == data
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    assert address % direct.ALIGN == 0
    writes.release(buffer)
    again = writes.fill([b"\xff" * 10], 10)
    assert again.obj is buffer.obj and bytes(again[:10]) == b"\xff" * 10


def test_a_tail_shorter_than_a_block_is_written_without_a_truncate(
    objects: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ext4 reads the last block back from the disk to zero it on a truncate."""
    if not _supports_direct(objects.root):
        pytest.skip("this file system refuses O_DIRECT")
    monkeypatch.setattr(os, "ftruncate", lambda *a: pytest.fail("ftruncate called"))
    for seed, extra in enumerate((0, 1, direct.ALIGN - 1)):
        object_id, data = _object(direct.MIN_BYTES + extra, seed)
        objects.put_parts(object_id, [data])
        objects.flush()
        assert objects.path(object_id).read_bytes() == data
    assert objects._direct.enabled


def test_a_store_that_is_not_durable_never_writes_direct(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    LocalObjectStore.create(root)
    store = LocalObjectStore(root, durable=False)
    try:
        assert not store._direct.wanted(1 << 30)
    finally:
        store.close()
