"""Which checkpoints of a run to keep: the newest N, every K steps, the best k by a metric.

A pure function of the history, so it can be stated and tested as properties;
the manager applies its answer as tags (``<branch>/best``, ``<branch>/keep/...``)
that gc honours: untagged checkpoints are what retention lets go.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class KeepPolicy:
    """What to keep.  With nothing set, everything is kept.

    ``last``: the newest N checkpoints.  ``every_n_steps``: those whose step is
    a multiple of K.  ``best``: the k best by ``monitor`` (``mode`` "min" or
    "max"); checkpoints without that metric, or with NaN, never rank.
    """

    last: int | None = None
    every_n_steps: int | None = None
    best: int | None = None
    monitor: str | None = None
    mode: Literal["min", "max"] = "min"

    def __post_init__(self) -> None:
        for name in ("last", "every_n_steps", "best"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if self.best is not None and not self.monitor:
            raise ValueError("keeping the best checkpoints needs a metric to monitor")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {self.mode!r}")

    @property
    def keeps_everything(self) -> bool:
        return self.last is None and self.every_n_steps is None and self.best is None


@dataclass(frozen=True)
class Candidate:
    id: str
    step: int | None
    metrics: dict[str, float | int]


@dataclass(frozen=True)
class Retained:
    kept: frozenset[str]
    best: str | None  # the single best checkpoint by the monitored metric


def rank_best(policy: KeepPolicy, history: Sequence[Candidate]) -> list[str]:
    """Ids of the checkpoints that carry the metric, best first (ties: the earlier wins)."""
    if not policy.monitor:
        return []
    scored = []
    for age, c in enumerate(history):  # history is newest first: a larger age is earlier
        value = c.metrics.get(policy.monitor)
        if isinstance(value, (int, float)) and not math.isnan(value):
            scored.append((value if policy.mode == "min" else -value, -age, c.id))
    return [checkpoint_id for *_, checkpoint_id in sorted(scored)]


def select(policy: KeepPolicy, history: Sequence[Candidate]) -> Retained:
    """The checkpoints ``policy`` keeps out of ``history`` (newest first).

    The newest checkpoint is always kept: it is where a crashed run resumes.
    """
    ranked = rank_best(policy, history)
    best = ranked[0] if ranked else None
    if policy.keeps_everything:
        return Retained(frozenset(c.id for c in history), best)
    kept: set[str] = {history[0].id} if history else set()
    if policy.last is not None:
        kept.update(c.id for c in history[: policy.last])
    if policy.every_n_steps is not None:
        kept.update(
            c.id for c in history if c.step is not None and c.step % policy.every_n_steps == 0
        )
    if policy.best is not None:
        kept.update(ranked[: policy.best])
    return Retained(frozenset(kept), best)
