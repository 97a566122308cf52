"""Several processes saving to one store at once: all succeed, nothing is lost."""

from __future__ import annotations

import itertools
import multiprocessing
from pathlib import Path

import torch

import deltastore

from .conftest import assert_same

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["torch", "deltastore", "tests.test_concurrency"])
SAVES = 8


def writer_state(writer: int, n: int) -> dict[str, object]:
    g = torch.Generator().manual_seed(writer * 1000 + n)
    return {"w": torch.randn(256, 512, generator=g), "writer": writer, "n": n}


def _save_many(root: str, writer: int, branch: str) -> None:
    with deltastore.open(root, progress=False) as store:
        for n in range(SAVES):
            store.save(writer_state(writer, n), f"{writer}:{n}", step=n, branch=branch)


def _run_writers(root: Path, branches: list[str]) -> None:
    children = [
        _CONTEXT.Process(target=_save_many, args=(str(root), writer, branch))
        for writer, branch in enumerate(branches)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0


def test_writers_on_separate_branches(tmp_path: Path) -> None:
    root = tmp_path / "s"
    deltastore.init(root)
    _run_writers(root, ["a", "b", "c"])
    with deltastore.open(root) as store:
        for writer, branch in enumerate(["a", "b", "c"]):
            history = list(store.log(branch))
            assert [c.message for c in history] == [f"{writer}:{n}" for n in reversed(range(SAVES))]
            for info in history:
                assert info.step is not None
                assert_same(store.load(info.id), writer_state(writer, info.step))


def test_writers_on_one_branch_build_one_linear_history(tmp_path: Path) -> None:
    """The branch is compare-and-set: a writer whose parent moved re-parents, nothing is lost."""
    root = tmp_path / "s"
    deltastore.init(root)
    _run_writers(root, ["main", "main", "main"])
    with deltastore.open(root) as store:
        history = list(store.log("main"))
        messages = [c.message for c in history]
        assert sorted(messages) == sorted(f"{w}:{n}" for w in range(3) for n in range(SAVES))
        assert history[-1].parent is None
        for newer, older in itertools.pairwise(history):
            assert newer.parent == older.id
        for writer in range(3):  # each writer's saves appear in its own order
            mine = [int(m.split(":")[1]) for m in reversed(messages) if m.startswith(f"{writer}:")]
            assert mine == list(range(SAVES))
        for info in history:
            writer, n = map(int, info.message.split(":"))
            assert_same(store.load(info.id), writer_state(writer, n))
