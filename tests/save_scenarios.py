"""Saves that once hung, run in a process of their own so that a hang fails its test (after a
timeout) instead of stalling the suite: a pool thread blocked for ever keeps a process alive.

    python -m tests.save_scenarios NAME STORE_DIR      # prints "ok" and exits 0 when it passes
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

import torch

import deltastore
from deltastore import save as save_module
from tests.conftest import assert_same, trained_like


def small_tail_decides(root: Path) -> None:
    """The tail never changes, so its keyframe takes deltas while the large chunks, changed at
    every save, are keyframes of their own: the entry's decider is its small last chunk, and
    the large chunks must not wait for it."""
    chunk = 256 << 10
    large = 4 * chunk // 4
    weights = trained_like((large + 256,), seed=1)

    def state(step: int) -> dict[str, torch.Tensor]:
        w = weights.clone()
        w[:large] += 1e-4 * step * trained_like((large,), seed=100 + step)
        return {"w": w}

    with deltastore.open(root, create=True, progress=False, chunk_size=chunk) as s:
        ids = [s.save(state(step), str(step)) for step in range(6)]
        for step, checkpoint_id in enumerate(ids):
            assert_same(s.load(checkpoint_id), state(step))


def failure_in_a_shared_task(root: Path) -> None:
    """A chunk fails in a task it shares with deciders that then never run: their entries'
    other chunks, waiting in other tasks, must learn of the failure."""
    chunk = 16 << 10  # every chunk small: they all share tasks
    base = {f"w{i}": trained_like((chunk,), seed=i) for i in range(40)}  # 4 chunks each

    def state(step: int) -> dict[str, torch.Tensor]:
        return {k: v + 1e-4 * step * trained_like(v.shape, seed=99 + step) for k, v in base.items()}

    decide = save_module.CheckpointWriter._decide
    failing = {"on": False}

    def full_disk(self: Any, job: Any, *args: Any) -> Any:
        if failing["on"] and job.chunk.entry == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return decide(self, job, *args)

    save_module.CheckpointWriter._decide = full_disk  # type: ignore[method-assign]
    with deltastore.open(root, create=True, progress=False, chunk_size=chunk) as s:
        first = s.save(state(0), "0")
        failing["on"] = True
        try:
            s.save(state(1), "1")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        else:
            raise AssertionError("the save did not fail")
        failing["on"] = False
        assert s.resolve("main") == first
        assert_same(s.load(s.save(state(2), "2")), state(2))


SCENARIOS = {f.__name__: f for f in (small_tail_decides, failure_in_a_shared_task)}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](Path(sys.argv[2]))
    print("ok")
