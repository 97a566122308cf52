"""SIGKILL at any moment of a save leaves a store that opens, loads, and never lies.

A child process saves deterministic states in a loop; the parent kills it at
random moments (hashing, writing objects, fsync, the catalog commit) many
times over a growing history, and after every kill checks that the store
opens, that every checkpoint in the log loads bit-exactly, and that no
catalog row names an object that is not on disk.
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import deltastore
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction

from .conftest import assert_same

#: Children fork from a server that has imported torch and deltastore once:
#: a kill-and-restart costs milliseconds instead of an interpreter start.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["torch", "deltastore", "tests.test_crash"])


def _save_forever(root: str, branch: str, n: int, ready: Any) -> None:
    store = deltastore.open(root, progress=False)
    crash_state(n)  # warm up before saying ready
    ready.set()
    while True:
        store.save(crash_state(n), f"n={n}", step=n, branch=branch)
        n += 1


def crash_state(n: int) -> dict[str, Any]:
    """A few MiB that drift with ``n``, so saves write full objects and deltas."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(512, 1024, generator=g)
    drift = torch.randn(512, 1024, generator=torch.Generator().manual_seed(n)) * 1e-4
    return {
        "model": {"w": w + drift, "b": torch.full((1024,), float(n))},
        "optim": {"m": drift.clone(), "lr": 1e-3, "betas": (0.9, 0.999)},
        "n": n,
    }


def _spawn(root: Path, branch: str, start: int) -> multiprocessing.process.BaseProcess:
    ready = _CONTEXT.Event()
    child = _CONTEXT.Process(target=_save_forever, args=(str(root), branch, start, ready))
    child.start()
    assert ready.wait(60), "the saving child did not start"
    return child


def _kill(child: multiprocessing.process.BaseProcess) -> None:
    child.kill()  # SIGKILL
    child.join()
    assert child.exitcode == -signal.SIGKILL


def _check_store(root: Path) -> dict[str, int]:
    """Open, load everything, check every catalog chunk is on disk; newest step per branch."""
    newest: dict[str, int] = {}
    with deltastore.open(root, progress=False) as store:
        for name, (_, head) in store.refs().items():
            for info in store.log(head):
                assert info.step is not None
                assert_same(store.load(info.id), crash_state(info.step))
                assert info.message == f"n={info.step}"
            newest[name] = store.info(head).step or 0
        with read_transaction(store.engine) as conn:
            for checkpoint in queries.all_checkpoints(conn):
                assert store.objects.exists(checkpoint.id)
                for ids in queries.chunk_ids_of(conn, checkpoint.id).values():
                    assert all(store.objects.exists(i) for i in ids)
    return newest


@pytest.mark.slow
def test_sigkill_during_saves_never_damages_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    deltastore.init(root)
    rng = random.Random(2024)
    next_n = 0
    kills = 0
    deadline = time.monotonic() + 40
    while kills < 30 or (kills < 100 and time.monotonic() < deadline):
        child = _spawn(root, "main", next_n)
        time.sleep(rng.uniform(0.0, 0.25))  # a save takes ~50 ms: kills land in every phase
        _kill(child)
        kills += 1
        newest = _check_store(root)
        next_n = newest.get("main", -1) + 1
    assert next_n > 5  # the saves made progress between kills


@pytest.mark.slow
def test_sigkill_of_two_concurrent_writers(tmp_path: Path) -> None:
    root = tmp_path / "store"
    deltastore.init(root)
    rng = random.Random(7)
    start = {"a": 0, "b": 1000}
    for _ in range(6):
        children = [_spawn(root, b, start[b]) for b in ("a", "b")]
        time.sleep(rng.uniform(0.0, 0.4))
        for child in children:
            _kill(child)
        newest = _check_store(root)
        start = {b: newest.get(b, start[b] - 1) + 1 for b in ("a", "b")}
    assert start["a"] > 0 and start["b"] > 1000


def test_every_object_is_in_place_before_the_catalog_names_it(
    store: deltastore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write-order invariant, checked at the moment of the catalog insert.

    Random kills hit the window between a commit and a late rename only
    rarely; this catches a commit that does not wait for the object writes.
    """
    original = queries.insert_checkpoint
    checked: list[int] = []

    def checking(conn: Any, info: Any, created_at_us: int, entries: Any, objects: Any) -> None:
        objects = list(objects)
        assert [o.id for o in objects if not store.objects.exists(o.id)] == []
        checked.append(len(objects))
        original(conn, info, created_at_us, entries, objects)

    monkeypatch.setattr(queries, "insert_checkpoint", checking)
    for n in range(3):
        store.save(crash_state(n))
    assert len(checked) == 3 and checked[0] > 2
