"""Which checkpoints to keep: the newest N, every K steps, the best k by a metric, the tagged.

A pure function of one branch's history (newest first), so it can be stated
and tested as properties.  Two users apply it: ``Store.forget`` runs it over
every branch's log and forgets what no branch keeps; the training loop's
``CheckpointManager`` turns its answer into tags (``<branch>/best``,
``<branch>/keep/...``) that ``forget --keep-tagged`` then honours.

Every kept checkpoint has at least one reason, named after the rule that
keeps it (``newest``, ``last``, ``every``, ``best``, ``tagged``, or ``all``
when the policy sets no rule), so a dry run can say why each one stays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

#: Reason names, as dry runs print them.
NEWEST, LAST, EVERY, BEST, TAGGED, ALL = "newest", "last", "every", "best", "tagged", "all"


@dataclass(frozen=True)
class KeepPolicy:
    """What to keep.  With no rule set, everything is kept.

    ``last``: the newest N checkpoints.  ``every_n_steps``: those whose step is
    a multiple of K.  ``best``: the k best by ``monitor`` (``mode`` "min" or
    "max"); checkpoints without that metric, or with NaN, never rank.
    ``tagged``: every checkpoint a tag points at.  The newest checkpoint of a
    history (a branch head) is always kept, whatever the rules.
    """

    last: int | None = None
    every_n_steps: int | None = None
    best: int | None = None
    monitor: str | None = None
    mode: Literal["min", "max"] = "min"
    tagged: bool = False

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
        return (
            self.last is None
            and self.every_n_steps is None
            and self.best is None
            and not self.tagged
        )


@dataclass(frozen=True)
class Candidate:
    id: str
    step: int | None
    metrics: Mapping[str, float | int]
    tagged: bool = False  # a tag points at it


@dataclass(frozen=True)
class Retained:
    kept: frozenset[str]
    best: str | None  # the single best checkpoint by the monitored metric
    #: checkpoint id -> the rules that keep it (every kept id has at least one)
    reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


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
    """The checkpoints ``policy`` keeps out of ``history`` (newest first), with why.

    The newest checkpoint is always kept: it is where a crashed run resumes,
    and the head a branch's next save builds on (its delta base).
    """
    ranked = rank_best(policy, history)
    best = ranked[0] if ranked else None
    reasons: dict[str, list[str]] = {}

    def keep(checkpoint_id: str, reason: str) -> None:
        reasons.setdefault(checkpoint_id, []).append(reason)

    if policy.keeps_everything:
        for c in history:
            keep(c.id, ALL)
    if history:
        keep(history[0].id, NEWEST)
    if policy.last is not None:
        for c in history[: policy.last]:
            keep(c.id, LAST)
    if policy.every_n_steps is not None:
        for c in history:
            if c.step is not None and c.step % policy.every_n_steps == 0:
                keep(c.id, EVERY)
    if policy.best is not None:
        for checkpoint_id in ranked[: policy.best]:
            keep(checkpoint_id, BEST)
    if policy.tagged:
        for c in history:
            if c.tagged:
                keep(c.id, TAGGED)
    return Retained(frozenset(reasons), best, {cid: tuple(why) for cid, why in reasons.items()})


def parse_best(spec: str) -> tuple[str, Literal["min", "max"], int]:
    """``"loss:min:3"`` -> ("loss", "min", 3); ValueError with a readable reason otherwise.

    The metric name may itself hold colons: the last two fields are mode and k.
    """
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"expected METRIC:min|max:K, not {spec!r}")
    metric, mode, count = parts
    if mode not in ("min", "max"):
        raise ValueError(f"the mode in {spec!r} must be 'min' or 'max'")
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"the count in {spec!r} must be a positive integer")
    return metric, "min" if mode == "min" else "max", int(count)
