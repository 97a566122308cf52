"""Forget: drop the checkpoints a keep policy does not keep, on every branch at once.

The policy (:mod:`deltastore.retention`) runs over each branch's log from
its head, newest first; a checkpoint stays if any branch keeps it (a head
always does).  With ``branches`` given, only their logs are pruned: a
checkpoint another branch reaches, or one no chosen branch reaches, stays.
With every branch chosen, checkpoints no branch reaches (a deleted branch's)
go too, unless a kept tag points at them.

A forgotten checkpoint leaves the history: its kept children are joined to
its nearest kept ancestor, the tags that pointed at it are deleted, and its
catalog rows go.  Its objects stay until gc, which then also keeps every
delta base a kept checkpoint still needs.  The change is written as journal
records first (one ForgetRecord, one RefRecord per deleted tag; durable),
then made in one catalog transaction, so a rebuild replays it.

The plan is made inside that transaction (BEGIN IMMEDIATE), and the records
are written before its first change: a save committing meanwhile cannot
slip a new child under a checkpoint being forgotten, and nothing needs a
retry.  A crash before the commit leaves only unlisted records, which gc
removes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from deltastore import journal, refs
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction, write_transaction
from deltastore.gc import find_garbage
from deltastore.history import History, read_history
from deltastore.info import CheckpointInfo
from deltastore.progress import Progress, ProgressFactory
from deltastore.progress import maybe as progress_bar
from deltastore.retention import Candidate, KeepPolicy, select

#: Why a checkpoint outside the branches asked for stays.
UNSELECTED = "other branch"

#: Writes journal records durably (one flush) and returns their catalog rows.
WriteRecords = Callable[[Sequence[journal.Record]], list[queries.NewObject]]


@dataclass(frozen=True)
class ForgetPlan:
    forgotten: tuple[CheckpointInfo, ...]  # newest first
    kept: Mapping[str, tuple[str, ...]]  # id -> the reasons it stays
    reparented: Mapping[str, str | None]  # kept child -> its nearest kept ancestor
    deleted_tags: tuple[str, ...]


@dataclass(frozen=True)
class ForgetReport:
    """What ``Store.forget`` forgot (or would), and what a gc would free afterwards."""

    dry_run: bool
    forgotten: tuple[CheckpointInfo, ...]  # newest first
    kept: Mapping[str, tuple[str, ...]]  # id -> the reasons it stays
    reparented: Mapping[str, str | None]
    deleted_tags: tuple[str, ...]
    freed_objects: int  # objects a gc run next would delete
    freed_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "forgotten": [c.to_json() for c in self.forgotten],
            "kept": {cid: list(why) for cid, why in sorted(self.kept.items())},
            "reparented": dict(sorted(self.reparented.items())),
            "deleted_tags": list(self.deleted_tags),
            "freed_objects": self.freed_objects,
            "freed_bytes": self.freed_bytes,
        }


def plan(history: History, policy: KeepPolicy, branches: Sequence[str] | None) -> ForgetPlan:
    """Which checkpoints go and how the history closes over them (pure: no writes)."""
    chosen = history.select_branches(branches)
    if policy.keeps_everything:
        everything = dict.fromkeys(history.checkpoints, ("all",))
        return ForgetPlan((), everything, {}, ())
    tagged = history.tagged
    reasons: dict[str, list[str]] = {}
    for branch in chosen:
        log = history.log(branch)
        retained = select(policy, [Candidate(c.id, c.step, c.metrics, c.id in tagged) for c in log])
        for checkpoint_id, why in retained.reasons.items():
            reasons.setdefault(checkpoint_id, []).extend(why)
    if branches is not None:
        reached = {c.id for branch in chosen for c in history.log(branch)}
        for checkpoint_id in history.checkpoints.keys() - reached:
            reasons.setdefault(checkpoint_id, []).append(UNSELECTED)
        for branch in set(history.branches) - set(chosen):
            for c in history.log(branch):
                reasons.setdefault(c.id, []).append(UNSELECTED)
    if policy.tagged:
        for checkpoint_id in tagged:
            reasons.setdefault(checkpoint_id, []).append("tagged")
    forgotten = tuple(c for c in history.checkpoints.values() if c.id not in reasons)
    gone = {c.id for c in forgotten}
    reparented: dict[str, str | None] = {}
    for c in history.checkpoints.values():
        if c.id not in gone and c.parent in gone:
            ancestor: str | None = c.parent
            while ancestor in gone:
                ancestor = history.checkpoints[ancestor].parent
            reparented[c.id] = ancestor
    deleted_tags = tuple(
        name
        for name, (kind, cid) in sorted(history.refs.items())
        if kind == refs.TAG and cid in gone
    )
    assert not any(kind == refs.BRANCH and cid in gone for kind, cid in history.refs.values()), (
        "a branch head is always kept"
    )
    kept = {cid: tuple(dict.fromkeys(why)) for cid, why in reasons.items()}
    return ForgetPlan(forgotten, kept, reparented, deleted_tags)


def forget(
    engine: Engine,
    policy: KeepPolicy,
    branches: Sequence[str] | None,
    write_records: WriteRecords | None,
    progress: ProgressFactory | None = None,
) -> ForgetReport:
    """Forget what ``policy`` does not keep; with ``write_records`` None, only say what.

    The caller holds the store's writer lock (``layout.writing``) when it
    passes ``write_records``: the records are objects the catalog does not
    list until the commit, which gc must not sweep meanwhile.  ``progress``
    opens a bar over the checkpoints whose catalog rows are deleted.
    """
    if write_records is None:
        with read_transaction(engine) as conn:
            chosen = plan(read_history(conn), policy, branches)
            garbage = find_garbage(conn, None, except_checkpoints={c.id for c in chosen.forgotten})
        return _report(chosen, garbage.object_count, garbage.freed_bytes, dry_run=True)
    with write_transaction(engine) as conn:
        chosen = plan(read_history(conn), policy, branches)
        if chosen.forgotten:
            with progress_bar(progress, len(chosen.forgotten), "forget") as advance:
                _apply(conn, chosen, write_records, advance)
    with read_transaction(engine) as conn:
        garbage = find_garbage(conn, None)
    return _report(chosen, garbage.object_count, garbage.freed_bytes, dry_run=False)


def _apply(
    conn: Connection, chosen: ForgetPlan, write_records: WriteRecords, progress: Progress | None
) -> None:
    now_us = time.time_ns() // 1000
    written = write_records(
        [
            journal.ForgetRecord(now_us, {c.id: c.parent for c in chosen.forgotten}),
            *(journal.RefRecord(now_us, name, refs.TAG, None) for name in chosen.deleted_tags),
        ]
    )
    for name in chosen.deleted_tags:
        queries.delete_ref(conn, name)
    queries.reparent(conn, chosen.reparented)
    queries.remove_checkpoints(conn, [c.id for c in chosen.forgotten], progress)
    queries.insert_objects(conn, ((w, now_us) for w in written))


def _report(chosen: ForgetPlan, objects: int, freed: int, *, dry_run: bool) -> ForgetReport:
    return ForgetReport(
        dry_run=dry_run,
        forgotten=chosen.forgotten,
        kept=chosen.kept,
        reparented=chosen.reparented,
        deleted_tags=chosen.deleted_tags,
        freed_objects=objects,
        freed_bytes=freed,
    )
