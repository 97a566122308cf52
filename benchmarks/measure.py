"""The measuring protocol: the torch.save/torch.load baseline and one tool on one sequence.

Both sides are measured the same way in the same run, so a ratio compares like with like:

- save: every checkpoint once, in order, wall time, each started with nothing dirty in the page
  cache and the cyclic garbage collector paused (see :func:`timed`);
- restore: after the page cache is warm (the baseline loads each file once first; a tool has
  just restored every checkpoint for the bit-exact check), the median of ``repeats`` timed
  restores of the newest and of the oldest checkpoint.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks import peers
from benchmarks.trees import State, first_difference


@dataclass
class Baseline:
    """torch.save / torch.load of one sequence's checkpoints, measured in this run."""

    sizes: list[int]  # bytes of each torch.save file
    save_s: list[float]  # torch.save seconds of each checkpoint
    load_newest_s: float
    load_oldest_s: float


@dataclass
class Result:
    """One tool on one sequence.  Ratios are over the baseline of the same checkpoints."""

    sequence: str
    tool: str
    checkpoints: int = 0
    stored_bytes: int = 0  # on disk after the last checkpoint (and after close)
    ratio: float = 0.0  # stored_bytes / bytes of the torch.save files
    save_s: float = 0.0  # mean seconds per checkpoint
    save_x: float = 0.0  # total save seconds / total torch.save seconds
    restore_newest_s: float = 0.0
    restore_newest_x: float = 0.0  # over torch.load of the newest checkpoint's file
    restore_oldest_s: float = 0.0
    restore_oldest_x: float = 0.0  # over torch.load of the oldest checkpoint's file
    mismatch: str = ""  # the first restore that was not bit-exact, and where
    cumulative: list[int] = field(default_factory=list)  # stored bytes after each checkpoint
    note: str = ""  # why there are no figures (not installed, failed)

    @property
    def exact(self) -> bool:
        return not self.note and not self.mismatch


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call, started from a settled machine.

    Before the clock starts (untimed): ``os.sync()``, so that no call pays for writing back
    what an earlier one left dirty in the page cache (in training, minutes pass between two
    checkpoints and the kernel has flushed the last one by then).  During the call the cyclic
    garbage collector is paused: a pass costs ~0.1-0.2 s here (torch keeps many objects alive)
    and would land at random in one tool's timing or another's; reference counting still frees
    everything as usual.
    """
    os.sync()
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    return statistics.median(timed(fn) for _ in range(repeats))


def measure_baseline(states: list[State], folder: Path, repeats: int) -> Baseline:
    """torch.save every checkpoint to a file, then time torch.load of the newest and oldest.

    Each save is timed twice, into a new file each time, and the faster counts:
    on a VM the first write into page-cache memory the guest never touched can
    take 3-4x longer, and a baseline taken once made every tool measured after
    it look that much faster (a tool's own saves come later, on warm memory).
    """
    folder.mkdir(parents=True)
    paths = [folder / f"{i}.pt" for i in range(len(states))]
    save_s = []
    for state, path in zip(states, paths, strict=True):
        first = timed(partial(torch.save, state, path.with_suffix(".first")))
        path.with_suffix(".first").unlink()
        save_s.append(min(first, timed(partial(torch.save, state, path))))
    sizes = [p.stat().st_size for p in paths]

    def load_time(path: Path) -> float:
        torch.load(path, weights_only=True)  # warm the page cache, as tools' restores are
        return median_seconds(lambda: torch.load(path, weights_only=True), repeats)

    newest, oldest = load_time(paths[-1]), load_time(paths[0])
    peers.remove(folder)
    return Baseline(sizes, save_s, newest, oldest)


def measure_tool(
    tool_cls: type[peers.Tool],
    sequence: str,
    states: list[State],
    folder: Path,
    baseline: Baseline,
    repeats: int,
) -> Result:
    """Save the whole sequence with one tool, check every restore, time newest and oldest.

    A tool that is missing or raises gets a row saying why, never silence.
    """
    result = Result(sequence, tool_cls.name, checkpoints=len(states))
    why = tool_cls.unavailable()
    if why:
        result.note = why
        return result
    opened: peers.Tool | None = None
    stage = "setup"
    try:
        tool = opened = tool_cls(folder)
        seconds = []
        for i, state in enumerate(states):
            stage = f"save of checkpoint {i}"
            seconds.append(timed(partial(tool.save, i, state)))
            result.cumulative.append(tool.stored_bytes())
        stage = "restore of checkpoint 0"
        checked = 0
        for i, restored in enumerate(tool.restore_all(len(states))):
            diff = first_difference(restored, states[i])
            if diff and not result.mismatch:
                result.mismatch = f"checkpoint {i}: {diff}"
            checked = i + 1
            stage = f"restore of checkpoint {checked}"
        if checked != len(states) and not result.mismatch:
            result.mismatch = f"only {checked} of {len(states)} checkpoints came back"
        stage = "timed restores"
        newest = len(states) - 1
        result.restore_newest_s = median_seconds(partial(tool.restore, newest), repeats)
        result.restore_oldest_s = median_seconds(partial(tool.restore, 0), repeats)
    except Exception as exc:
        result.note = f"failed at {stage}: {type(exc).__name__}: {exc}"
        return result
    finally:
        if opened is not None:
            opened.close()  # before measuring: a store folds its SQLite WAL into the catalog
            result.stored_bytes = opened.stored_bytes()
            peers.remove(folder)
    result.ratio = result.stored_bytes / sum(baseline.sizes)
    result.save_s = sum(seconds) / len(seconds)
    result.save_x = sum(seconds) / sum(baseline.save_s)
    result.restore_newest_x = result.restore_newest_s / baseline.load_newest_s
    result.restore_oldest_x = result.restore_oldest_s / baseline.load_oldest_s
    return result
