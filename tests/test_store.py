"""The Python API end to end: save, load, load_tensor, log, refs, dedup."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import deltastore
from deltastore.ids import is_full_id

from .conftest import assert_same, trained_like


def small_model_state(seed: int = 0) -> dict[str, object]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(torch.randn(8, 64)).pow(2).mean()
    loss.backward()
    opt.step()
    return {"model": model.state_dict(), "optim": opt.state_dict(), "step": 100}


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_save_returns_id_and_load_is_bit_exact(store: deltastore.Store) -> None:
    state = small_model_state()
    cid = store.save(state, message="step 100", step=100, metrics={"loss": 2.31})
    assert is_full_id(cid)
    assert_same(store.load(cid), state)
    assert_same(store.load("main"), state)
    assert_same(store.load(cid[:8]), state)


def test_loaded_state_dicts_load_into_modules(store: deltastore.Store) -> None:
    state = small_model_state()
    store.save(state)
    restored = store.load()
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    model.load_state_dict(restored["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.load_state_dict(restored["optim"])
    assert opt.state_dict()["param_groups"][0]["betas"] == (0.9, 0.999)


def test_load_tensor_reads_one_entry(store: deltastore.Store) -> None:
    state = small_model_state()
    store.save(state)
    w = store.load_tensor("main", "model/0.weight")
    assert torch.equal(w, state["model"]["0.weight"])  # type: ignore[index]
    with pytest.raises(deltastore.EntryNotFoundError, match="has no array entry 'model/nope'"):
        store.load_tensor("main", "model/nope")


def test_load_tensor_decodes_only_that_entry(store: deltastore.Store) -> None:
    """Deleting another entry's object must not disturb loading this one."""
    store.save({"a": torch.arange(10.0), "b": torch.ones(7)})
    chunks = _chunk_ids(store, "main")
    store.objects.delete(chunks["b"][0])
    assert torch.equal(store.load_tensor("main", "a"), torch.arange(10.0))
    with pytest.raises(deltastore.CorruptObjectError):
        store.load()


def _chunk_ids(store: deltastore.Store, ref: str) -> dict[str, list[str]]:
    from deltastore.catalog import queries
    from deltastore.catalog.engine import read_transaction

    with read_transaction(store.engine) as conn:
        return queries.chunk_ids_of(conn, store.resolve(ref))


def test_log_newest_first_with_metadata(store: deltastore.Store) -> None:
    ids = [
        store.save(
            {"w": trained_like((16, 16), seed=i)},
            f"step {i}",
            step=i,
            metrics={"loss": 1.0 / (i + 1)},
        )
        for i in range(4)
    ]
    log = list(store.log())
    assert [c.id for c in log] == ids[::-1]
    assert [c.parent for c in log] == [ids[2], ids[1], ids[0], None]
    assert log[0].message == "step 3" and log[0].step == 3 and log[0].metrics == {"loss": 0.25}
    assert log[0].logical_bytes == 16 * 16 * 4
    assert log[0].stored_bytes > 0
    assert log[0].created_at >= log[1].created_at
    assert [c.id for c in store.log(limit=2)] == ids[:-3:-1]


def test_ref_expressions(store: deltastore.Store) -> None:
    ids = [store.save({"w": torch.full((4,), float(i))}) for i in range(4)]
    assert store.resolve("main") == ids[3]
    assert store.resolve("main~") == ids[2]
    assert store.resolve("main~2") == ids[1]
    assert store.resolve("main~~~") == ids[0]
    assert store.resolve(ids[1]) == ids[1]
    assert store.resolve(ids[1][:6]) == ids[1]
    with pytest.raises(deltastore.RefNotFoundError, match="history has only 4 checkpoint"):
        store.resolve("main~4")
    with pytest.raises(
        deltastore.RefNotFoundError, match="no branch, tag or checkpoint id matches"
    ):
        store.resolve("nosuchbranch")
    with pytest.raises(deltastore.RefNotFoundError, match="at least 6 hex digits"):
        store.resolve(ids[0][:4])


def test_ambiguous_prefix(store: deltastore.Store) -> None:
    """Two ids sharing a 6-hex prefix: the prefix must be refused, not guessed."""
    from sqlalchemy import text

    from deltastore.catalog.engine import write_transaction

    real = store.save({"i": 1})
    twin = real[:6] + ("0" if real[6] != "0" else "1") + real[7:]
    with write_transaction(store.engine) as conn:
        conn.execute(
            text(
                "INSERT INTO checkpoints SELECT :twin, NULL, created_at_us, message, step, metrics,"
                " branch, entry_count, logical_bytes, stored_bytes FROM checkpoints WHERE id = :id"
            ),
            {"twin": twin, "id": real},
        )
    with pytest.raises(
        deltastore.AmbiguousRefError, match="prefix is ambiguous \\(2 matches"
    ) as info:
        store.resolve(real[:6])
    assert isinstance(info.value, KeyError)
    assert sorted(info.value.candidates) == sorted([real, twin])
    assert store.resolve(real[:7]) == real


def test_empty_store(store: deltastore.Store) -> None:
    assert list(store.log()) == []
    with pytest.raises(deltastore.RefNotFoundError, match="the branch has no checkpoints yet"):
        store.load()
    stats = store.stats()
    assert stats.checkpoint_count == 0 and stats.logical_bytes == 0


def test_unchanged_resave_adds_under_one_percent(store: deltastore.Store, store_path: Path) -> None:
    state = {f"layer{i}": trained_like((512, 512), seed=i) for i in range(8)}  # 8 MiB
    store.save(state, "first")
    before = dir_bytes(store_path / "objects")
    store.save(state, "again")
    added = dir_bytes(store_path / "objects") - before
    logical = 8 * 512 * 512 * 4
    assert 0 < added < 0.01 * logical
    log = list(store.log())
    assert log[0].stored_bytes == added
    assert_same(store.load("main"), store.load("main~1"))


def test_identical_chunks_within_a_state_are_stored_once(store: deltastore.Store) -> None:
    t = trained_like((256, 1024))  # exactly 1 MiB: one chunk
    store.save({"a": t, "b": t.clone(), "c": [t.clone()]})
    stats = store.stats()
    assert stats.object_count == 2  # one chunk + the manifest
    assert stats.stored_bytes < t.numel() * 4


def test_stored_bytes_are_compressed_for_trained_weights(store: deltastore.Store) -> None:
    state = {f"w{i}": trained_like((1024, 256), seed=i) for i in range(4)}
    cid = store.save(state)
    info = store.info(cid)
    assert info.stored_bytes < 0.95 * info.logical_bytes


def test_unsupported_leaf_leaves_store_unchanged(store: deltastore.Store, store_path: Path) -> None:
    store.save({"w": torch.ones(3)})
    objects_before = sorted(p.name for p in (store_path / "objects").rglob("*"))
    head = store.resolve("main")
    with pytest.raises(deltastore.UnsupportedTypeError) as info:
        store.save({"w": torch.zeros(1 << 20), "opt": {"fn": lambda x: x}})
    assert info.value.key_path == "opt/fn"
    assert "function" in info.value.type_name
    assert store.resolve("main") == head
    assert sorted(p.name for p in (store_path / "objects").rglob("*")) == objects_before


def test_step_and_metrics_validation(store: deltastore.Store) -> None:
    with pytest.raises(deltastore.UnsupportedTypeError, match="step must be an int"):
        store.save({}, step=-1)
    with pytest.raises(deltastore.UnsupportedTypeError, match="step must be an int"):
        store.save({}, step=True)  # type: ignore[arg-type]
    with pytest.raises(deltastore.UnsupportedTypeError, match="a metric is an int or a float"):
        store.save({}, metrics={"loss": "low"})  # type: ignore[dict-item]
    cid = store.save(
        {}, metrics={"loss": torch.tensor(0.5), "nan": float("nan"), "acc": np.float64(0.25)}
    )  # type: ignore[dict-item]
    metrics = store.info(cid).metrics
    assert metrics["loss"] == 0.5 and metrics["acc"] == 0.25 and metrics["nan"] != metrics["nan"]


def test_branches_are_independent(store: deltastore.Store) -> None:
    a = store.save({"x": 1})
    b = store.save({"x": 2}, branch="exp")
    assert store.resolve("main") == a and store.resolve("exp") == b
    assert store.info(b).parent is None
    assert store.refs() == {"exp": ("branch", b), "main": ("branch", a)}
    with pytest.raises(deltastore.InvalidRefNameError, match="invalid ref name 'a~1'"):
        store.save({}, branch="a~1")


def test_open_missing_store(tmp_path: Path) -> None:
    with pytest.raises(deltastore.StoreNotFoundError, match="no deltastore store at") as info:
        deltastore.open(tmp_path / "nope")
    assert isinstance(info.value, FileNotFoundError)


def test_init_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(deltastore.StoreExistsError, match="not empty and is not a store"):
        deltastore.init(tmp_path)


def test_reopen_sees_history(store_path: Path) -> None:
    with deltastore.open(store_path, create=True) as s:
        cid = s.save({"w": torch.arange(5)})
    with deltastore.open(store_path) as s:
        assert s.resolve("main") == cid
        assert torch.equal(s.load()["w"], torch.arange(5))


def test_store_files_are_laid_out_as_documented(store: deltastore.Store, store_path: Path) -> None:
    store.save({"w": torch.ones(10)})
    names = set(os.listdir(store_path))
    assert {"FORMAT", "catalog.sqlite", "objects", "lock"} <= names
    assert len(os.listdir(store_path / "objects")) == 256


def test_full_disk_raises_storage_error_and_records_nothing(
    store: deltastore.Store, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    first = store.save({"w": trained_like((64, 64))})
    real_writev, real_pwritev = os.writev, os.pwritev
    calls = [0]

    def filling(fd: int) -> None:
        calls[0] += 1
        if fd > 2 and calls[0] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")

    def filling_writev(fd: int, buffers: list[memoryview]) -> int:
        filling(fd)
        return real_writev(fd, buffers)

    def filling_pwritev(fd: int, buffers: list[memoryview], offset: int) -> int:
        filling(fd)  # large objects of a durable store are written with O_DIRECT, at an offset
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(os, "writev", filling_writev)
    monkeypatch.setattr(os, "pwritev", filling_pwritev)
    with pytest.raises(deltastore.StorageError, match="No space left on device") as info:
        store.save({f"w{i}": trained_like((256, 1024), seed=i) for i in range(6)})
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert store.resolve("main") == first
    assert [c.id for c in store.log()] == [first]
    assert not list((store_path / "objects").rglob(".tmp-*"))
    assert store.save({"w": trained_like((64, 64), seed=9)}) != first  # the store still works


def test_a_store_missing_its_empty_fan_out_folders_still_saves(tmp_path: Path) -> None:
    """git and other copy tools drop empty folders: a copied store must still take writes."""
    import shutil

    root = tmp_path / "s"
    with deltastore.open(root, create=True) as s:
        first = s.save({"w": trained_like((64, 64))})
    for folder in (root / "objects").iterdir():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    with deltastore.open(copy) as s:
        state = {f"w{i}": trained_like((128, 256), seed=i) for i in range(8)}
        s.save(state)
        assert_same(s.load("main"), state)
        assert s.resolve("main~1") == first
