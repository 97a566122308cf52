"""SIGKILL at any moment of a save leaves a store that opens, loads, and never lies.

A child process saves deterministic states in a loop; the parent kills it at
random moments (hashing, writing objects, fsync, the catalog commit) many
times over a growing history, and after every kill checks that the store
opens, that its history is the unbroken run of saves it should be, that the
checkpoints load bit-exactly, that no catalog row names an object that is
not on disk, and that no object a checkpoint uses was ever rewritten.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

import deltastore
from deltastore import codecs
from deltastore import save as save_module
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction
from deltastore.catalog.models import ObjectRow
from deltastore.objects.local import TMP_PREFIX

from .conftest import assert_same

#: Children fork from a server that has imported torch and deltastore once:
#: a kill-and-restart costs milliseconds instead of a 3 s interpreter start.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["torch", "deltastore", "tests.test_crash"])

#: Kills spread over 0..300 ms after the child is ready; one save of
#: crash_state takes ~60-130 ms here, so kills land in every phase of it.
MAX_KILL_DELAY_S = 0.3
#: Older checkpoints re-loaded bit-exactly after every kill (all of them at the end).
RELOADS_PER_KILL = 2
#: Chunks smaller than the default, so that a save writes several objects per entry
#: and a kill can land between them.
CRASH_CHUNK_SIZE = 512 << 10


@functools.lru_cache(maxsize=1)
def _trained_weights() -> torch.Tensor:
    return torch.randn(512, 1024, generator=torch.Generator().manual_seed(7))


def crash_state(n: int) -> dict[str, Any]:
    """~4 MiB that drift with ``n`` (so saves write deltas and full objects), plus scalars."""
    drift = torch.randn(512, 1024, generator=torch.Generator().manual_seed(n)) * 1e-4
    return {
        "model": {"w": _trained_weights() + drift, "b": torch.full((1024,), float(n))},
        "optim": {"m": drift.clone(), "lr": 1e-3, "betas": (0.9, 0.999), "state": {0: n}},
        "meta": {"run": f"run-{n % 3}", "n": n, "seen": [n, n * 0.5, str(n)]},
    }


def _save_forever(root: str, branch: str, n: int, ready: Any) -> None:
    store = deltastore.open(root, progress=False)
    crash_state(n)  # warm up before saying ready
    ready.set()
    while True:
        store.save(crash_state(n), f"n={n}", step=n, branch=branch)
        n += 1


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


@dataclass
class _History:
    """What the checks learnt so far, across kills of one store."""

    first_step: dict[str, int]  # branch -> the step its first save had
    rng: random.Random
    verified: set[str] = field(default_factory=set)  # checkpoints loaded bit-exactly
    files: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # id -> ino, size, mtime
    leftovers: set[str] = field(default_factory=set)  # files on disk the catalog does not name
    newest: dict[str, int] = field(default_factory=dict)  # branch -> newest step
    kills_that_committed: int = 0
    kills_that_left_objects: int = 0


def _files_on_disk(objects_dir: Path) -> set[str]:
    """Object ids and temp-file names under ``objects/``."""
    found = set()
    for folder in objects_dir.iterdir():
        for entry in os.scandir(folder):
            found.add(entry.name if entry.name.startswith(TMP_PREFIX) else folder.name + entry.name)
    return found


def _check_store(root: Path, seen: _History, *, reload_all: bool = False) -> None:
    """Everything the issue promises after a kill; updates ``seen``."""
    with deltastore.open(root, progress=False) as store:
        with read_transaction(store.engine) as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            rows = conn.execute(
                select(ObjectRow.id, ObjectRow.base_id, ObjectRow.stored_bytes)
            ).all()
            checkpoints = queries.all_checkpoints(conn)
            chunk_ids = {c.id: queries.chunk_ids_of(conn, c.id) for c in checkpoints}

        # No catalog row names a missing object: objects, their delta bases, chunk lists.
        catalogued = {row.id for row in rows}
        for row in rows:
            path = store.objects.path(row.id)
            stat = path.stat()  # FileNotFoundError here is the bug this test exists for
            assert stat.st_size == row.stored_bytes, row.id
            if row.id not in seen.files:
                header = codecs.read_header(store.objects.get(row.id), row.id)
                assert (header.base_id.hex() if header.base_id else None) == row.base_id, row.id
                seen.files[row.id] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if row.base_id is not None:
                assert row.base_id in catalogued and store.objects.exists(row.base_id)
        for checkpoint in checkpoints:
            assert checkpoint.id in catalogued
            for ids in chunk_ids[checkpoint.id].values():
                assert set(ids) <= catalogued
        # Objects are immutable: nothing a checkpoint uses was replaced or rewritten since.
        for object_id, before in seen.files.items():
            stat = store.objects.path(object_id).stat()
            assert (stat.st_ino, stat.st_size, stat.st_mtime_ns) == before, object_id

        # Each branch is the unbroken run of saves n, n+1, ... up to its newest.
        committed = False
        for branch, first in seen.first_step.items():
            history = list(store.log(branch)) if branch in store.refs() else []
            steps = [info.step for info in history]
            newest = steps[0] if steps else first - 1
            assert steps == list(range(newest, first - 1, -1)), branch
            assert [info.message for info in history] == [f"n={s}" for s in steps]
            committed |= newest > seen.newest.get(branch, first - 1)
            seen.newest[branch] = newest
            unverified = [info.id for info in history if info.id not in seen.verified]
            older = [info.id for info in history[1:] if info.id in seen.verified]
            recheck = (
                older if reload_all else seen.rng.sample(older, min(len(older), RELOADS_PER_KILL))
            )
            # The newest visible checkpoint is complete, and so is everything before it.
            to_load = [*unverified, *recheck]
            if history and history[0].id not in to_load:
                to_load.append(history[0].id)
            for checkpoint_id in to_load:
                step = store.info(checkpoint_id).step
                assert step is not None
                assert_same(store.load(checkpoint_id), crash_state(step))
                seen.verified.add(checkpoint_id)

        leftovers = _files_on_disk(root / "objects") - catalogued
        seen.kills_that_committed += committed
        seen.kills_that_left_objects += not leftovers <= seen.leftovers
        seen.leftovers = leftovers


@pytest.mark.slow
def test_sigkill_at_random_moments_of_saves_never_damages_the_store(tmp_path: Path) -> None:
    """30+ kills of one writer over a growing history; each is followed by the full check."""
    root = tmp_path / "store"
    deltastore.init(root, chunk_size=CRASH_CHUNK_SIZE)
    seen = _History(first_step={"main": 0}, rng=random.Random(2024))
    delays = random.Random(2024)
    kills = 0
    deadline = time.monotonic() + 12
    while kills < 30 or (kills < 60 and time.monotonic() < deadline):
        child = _spawn(root, "main", seen.newest.get("main", -1) + 1)
        time.sleep(delays.uniform(0.0, MAX_KILL_DELAY_S))
        _kill(child)
        kills += 1
        _check_store(root, seen)
    _check_store(root, seen, reload_all=True)
    assert seen.newest["main"] >= 5  # the history grew between kills
    # The kills hit both sides of the commit: some after a checkpoint was recorded,
    # some after objects were written but before the catalog named them.
    assert seen.kills_that_committed >= 5
    assert seen.kills_that_left_objects >= 3


@pytest.mark.slow
def test_sigkill_of_two_writers_saving_to_two_branches_at_once(tmp_path: Path) -> None:
    """Both killed mid-save, repeatedly: neither branch loses or corrupts a checkpoint."""
    root = tmp_path / "store"
    deltastore.init(root, chunk_size=CRASH_CHUNK_SIZE)
    seen = _History(first_step={"a": 0, "b": 1000}, rng=random.Random(7))
    delays = random.Random(7)
    for _ in range(6):
        children = [
            _spawn(root, branch, seen.newest.get(branch, first - 1) + 1)
            for branch, first in seen.first_step.items()
        ]
        time.sleep(delays.uniform(0.0, 2 * MAX_KILL_DELAY_S))
        for child in children:
            _kill(child)
        _check_store(root, seen)
    _check_store(root, seen, reload_all=True)
    assert seen.newest["a"] > 0 and seen.newest["b"] > 1000
    assert seen.kills_that_committed >= 3


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


class _KilledError(Exception):
    pass


def test_objects_left_by_a_killed_save_are_catalogued_as_they_are_on_disk(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later save that meets a dead save's object must record that object, not its own.

    The story: a save writes chunk X as a delta against its parent's chunk B,
    then dies before the commit; X stays on disk, unreferenced.  A later save
    of the same bytes with another plan (another parent, or ``delta=False``)
    finds X present, skips the write -- and records in the catalog the
    encoding it *would* have written: no base, depth 0, its own size.  The
    catalog then hides that X needs B (gc may delete B and lose X; chains can
    grow deeper than one delta unseen) and stats report bytes that are not on disk.
    """
    w0 = _trained_weights()
    w1 = w0 + torch.randn(512, 1024, generator=torch.Generator().manual_seed(1)) * 1e-4
    with deltastore.open(store_path, create=True, progress=False) as store:
        store.save({"w": w0})

        def killed(*_args: Any, **_kwargs: Any) -> None:
            raise _KilledError("between the object writes and the commit")

        with monkeypatch.context() as patch:
            patch.setattr(save_module.queries, "insert_checkpoint", killed)
            with pytest.raises(_KilledError):
                store.save({"w": w1})
    with deltastore.open(store_path, progress=False, delta=False) as store:
        store.save({"w": w1}, branch="other")
        assert_same(store.load("other"), {"w": w1})
        with read_transaction(store.engine) as conn:
            rows = conn.execute(
                select(ObjectRow.id, ObjectRow.base_id, ObjectRow.stored_bytes)
            ).all()
        on_disk = {}
        for row in rows:
            data = store.objects.get(row.id)
            header = codecs.read_header(data, row.id)
            on_disk[row.id] = (header.base_id.hex() if header.base_id else None, len(data))
        assert {row.id: (row.base_id, row.stored_bytes) for row in rows} == on_disk


def test_a_save_that_names_a_dead_saves_object_makes_its_name_durable_first(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead writer's object may be linked under its name without its folder fsynced yet:
    a save that names it must fsync that folder before its commit, as for its own objects."""
    from deltastore.objects import local

    w0 = _trained_weights()
    with deltastore.open(store_path, create=True, progress=False) as store:

        def killed(*_args: Any, **_kwargs: Any) -> None:
            raise _KilledError("between the object writes and the commit")

        with monkeypatch.context() as patch:
            patch.setattr(save_module.queries, "insert_checkpoint", killed)
            with pytest.raises(_KilledError):
                store.save({"w": w0})
        left = set(store.objects.iter_ids())
        assert left  # the dead save's chunks and manifest
        synced: list[Path] = []
        real = local.fsync_dir
        monkeypatch.setattr(local, "fsync_dir", lambda p: (synced.append(p), real(p)))
        checkpoint_id = store.save({"w": w0})
        with read_transaction(store.engine) as conn:
            named = {c for ids in queries.chunk_ids_of(conn, checkpoint_id).values() for c in ids}
        assert named and named <= left  # every chunk was the dead save's: none written again
        assert {store.objects.path(object_id).parent for object_id in named} <= set(synced)
        assert_same(store.load(), {"w": w0})
