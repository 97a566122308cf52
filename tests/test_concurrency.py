"""Several processes saving to one store at once: all succeed, nothing is lost.

Writers are real processes released together by a barrier, so their saves
overlap: separate branches must not disturb each other, and writers sharing
a branch must build one linear history holding every save exactly once (a
writer whose branch moved under it re-parents, save.py).  The in-process
tests below force the interleavings that real processes hit only by chance.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import deltastore
from deltastore import codecs
from deltastore.objects.local import LocalObjectStore
from deltastore.save import MAX_COMMIT_ATTEMPTS

from .conftest import assert_same, join_all

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["torch", "deltastore", "tests.test_concurrency"])
SAVES = 8
WRITERS = 3
#: Smaller than the default, so the shared weights span two chunks (a full one and a tail).
CHUNK_SIZE = 1 << 20


@functools.lru_cache(maxsize=1)
def _shared_weights() -> torch.Tensor:
    return torch.randn(384, 1024, generator=torch.Generator().manual_seed(3))  # 1.5 MiB, 2 chunks


def writer_state(writer: int, n: int) -> dict[str, Any]:
    """Shared weights plus a small drift per save: saves are deltas on other writers' chunks."""
    g = torch.Generator().manual_seed(writer * 1000 + n)
    drift = torch.randn(384, 1024, generator=g) * 1e-4
    return {"w": _shared_weights() + drift, "writer": writer, "n": n, "tag": f"{writer}/{n}"}


def _save_many(root: str, writer: int, branch: str, start: Any) -> None:
    with deltastore.open(root, progress=False) as store:
        start.wait(60)
        for n in range(SAVES):
            store.save(writer_state(writer, n), f"{writer}:{n}", step=n, branch=branch)


def _run_writers(root: Path, branches: list[str]) -> None:
    """One process per branch name, started together; each must save SAVES times and exit 0."""
    start = _CONTEXT.Barrier(len(branches))
    children = [
        _CONTEXT.Process(target=_save_many, args=(str(root), writer, branch, start))
        for writer, branch in enumerate(branches)
    ]
    for child in children:
        child.start()
    join_all(children)


def test_writers_on_separate_branches_each_keep_their_whole_history(tmp_path: Path) -> None:
    root = tmp_path / "s"
    deltastore.init(root, chunk_size=CHUNK_SIZE)
    branches = ["a", "b", "c"]
    _run_writers(root, branches)
    with deltastore.open(root, progress=False) as store:
        assert set(store.refs()) == set(branches)
        for writer, branch in enumerate(branches):
            history = list(store.log(branch))
            assert [c.message for c in history] == [f"{writer}:{n}" for n in reversed(range(SAVES))]
            assert history[-1].parent is None
            assert all(c.branch == branch for c in history)
            for info in history:
                assert info.step is not None
                assert_same(store.load(info.id), writer_state(writer, info.step))


def test_writers_on_one_branch_build_one_linear_history(tmp_path: Path) -> None:
    """The branch is compare-and-set: a writer whose parent moved re-parents, nothing is lost."""
    root = tmp_path / "s"
    deltastore.init(root, chunk_size=CHUNK_SIZE)
    _run_writers(root, ["main"] * WRITERS)
    with deltastore.open(root, progress=False) as store:
        history = list(store.log("main"))
        messages = [c.message for c in history]
        # Every save exactly once ...
        assert sorted(messages) == sorted(f"{w}:{n}" for w in range(WRITERS) for n in range(SAVES))
        assert store.stats().checkpoint_count == WRITERS * SAVES
        # ... in one chain from the root ...
        assert history[-1].parent is None
        for newer, older in itertools.pairwise(history):
            assert newer.parent == older.id
        # ... with each writer's saves in its own order ...
        oldest_first = [tuple(map(int, m.split(":"))) for m in reversed(messages)]
        for writer in range(WRITERS):
            assert [n for w, n in oldest_first if w == writer] == list(range(SAVES))
        # ... and the writers really overlapped (run one after another they switch twice).
        switches = sum(a[0] != b[0] for a, b in itertools.pairwise(oldest_first))
        assert switches > WRITERS - 1
        for info in history:
            writer, n = map(int, info.message.split(":"))
            assert_same(store.load(info.id), writer_state(writer, n))


def test_a_save_whose_branch_moved_meanwhile_re_parents_onto_the_new_head(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another handle commits between our chunk writes and our commit: we land on top of it."""
    with (
        deltastore.open(store_path, create=True, progress=False) as ours,
        deltastore.open(store_path, progress=False) as theirs,
    ):
        first = ours.save(writer_state(0, 0), "0:0")
        write_chunks = ours._writer.write_chunks
        moved: list[str] = []

        def write_then_the_other_commits(*args: Any, **kwargs: Any) -> Any:
            written = write_chunks(*args, **kwargs)
            if not moved:
                moved.append(theirs.save(writer_state(1, 0), "1:0"))
            return written

        monkeypatch.setattr(ours._writer, "write_chunks", write_then_the_other_commits)
        mine = ours.save(writer_state(0, 1), "0:1")
        after = ours.save(writer_state(0, 2), "0:2")
        assert [c.id for c in ours.log()] == [after, mine, moved[0], first]
        assert [c.parent for c in ours.log()] == [mine, moved[0], first, None]
        for info in ours.log():
            writer, n = map(int, info.message.split(":"))
            assert_same(ours.load(info.id), writer_state(writer, n))


def test_a_branch_that_never_stops_moving_fails_the_save_and_records_nothing(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After MAX_COMMIT_ATTEMPTS re-parents the save gives up with ConcurrentUpdateError."""
    with (
        deltastore.open(store_path, create=True, progress=False) as ours,
        deltastore.open(store_path, progress=False) as theirs,
    ):
        ours.save(writer_state(0, 0), "0:0")
        flush = ours.objects.flush
        theirs_saved: list[str] = []

        def flush_while_the_other_commits() -> None:
            # Called once per commit attempt, between the manifest write and the transaction.
            flush()
            n = len(theirs_saved)
            theirs_saved.append(theirs.save(writer_state(1, n), f"1:{n}"))

        monkeypatch.setattr(ours.objects, "flush", flush_while_the_other_commits)
        with pytest.raises(deltastore.ConcurrentUpdateError) as info:
            ours.save(writer_state(0, 1), "0:1")
        assert info.value.branch == "main" and info.value.attempts == MAX_COMMIT_ATTEMPTS
        assert len(theirs_saved) == MAX_COMMIT_ATTEMPTS
        assert ours.resolve("main") == theirs_saved[-1]
        messages = [c.message for c in ours.stats().checkpoints]
        assert "0:1" not in messages
        assert len(messages) == 1 + MAX_COMMIT_ATTEMPTS


def test_a_concurrent_writer_never_replaces_an_object_that_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Put-if-absent must hold between processes too (DESIGN.md invariant 2).

    The story: two writers store the same chunk id, each having seen it
    absent; the encodings may differ (delta against another base, another
    codec).  The second to finish renames its temp file over the first's
    object, so the file under the id changes after a catalog row described
    it (base, size).  The later writer must keep the object that is there.
    """
    root = tmp_path / "objects"
    LocalObjectStore.create(root)
    first = LocalObjectStore(root, durable=False)
    second = LocalObjectStore(root, durable=False)
    object_id = "ab" * 32
    link = os.link

    def the_other_lands_first(source: Any, target: Any) -> None:
        monkeypatch.setattr(os, "link", link)
        # Another store object in another thread, as another process would be.
        other = threading.Thread(
            target=second.put_if_absent, args=(object_id, b"encoded by the second writer")
        )
        other.start()
        other.join()
        link(source, target)

    try:
        monkeypatch.setattr(os, "link", the_other_lands_first)
        first.put_if_absent(object_id, b"encoded by the first writer")
        first.flush()
        assert second.get(object_id) == b"encoded by the second writer"
        assert [p.name for p in (root / "ab").iterdir()] == [object_id[2:]]  # no temp file left
        # The first writer learns that its bytes are not the stored ones, once; the second not.
        assert first.put_by_others([object_id, "cd" * 32]) == {object_id}
        assert first.put_by_others([object_id]) == set()
        assert second.put_by_others([object_id]) == set()
    finally:
        first.close()
        second.close()


def test_a_save_whose_chunk_another_writer_stored_first_records_the_stored_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog describes the object on disk, not the encoding the losing writer made.

    Another writer links a different encoding of the same chunk (LZ4 instead
    of zstd, so another size) just before this save links its own: the save
    must read that object back and record its size, or verify would report
    the store damaged and stats would be wrong.
    """
    weights = torch.randn(64, 1024, generator=torch.Generator().manual_seed(5))
    raw = memoryview(weights.numpy()).cast("B")
    chunk_id = deltastore.ids.hex_digest(raw)
    link = os.link
    with deltastore.open(tmp_path / "store", create=True, progress=False) as store:
        other = LocalObjectStore(store.root / "objects", durable=False)

        def the_other_lands_first(source: Any, target: Any) -> None:
            if os.path.basename(target) == chunk_id[2:]:
                monkeypatch.setattr(os, "link", link)
                other.put_if_absent(chunk_id, codecs.encode(raw, 4, codec="lz4"))
                other.flush()
            link(source, target)

        monkeypatch.setattr(os, "link", the_other_lands_first)
        store.save({"w": weights})
        other.close()
        on_disk = (store.root / "objects" / chunk_id[:2] / chunk_id[2:]).stat().st_size
        assert on_disk == len(codecs.encode(raw, 4, codec="lz4"))
        assert store.verify().ok  # the catalog records the size of the file that is there
        assert_same(store.load("main"), {"w": weights})
