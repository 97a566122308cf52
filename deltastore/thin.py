"""Thin: drop some entries (optimizer state, say) from all but the newest checkpoints.

``thin("optim/*", keep_newest=3)`` removes every entry whose key path matches
the pattern from each checkpoint older than the newest 3 of its branch; the
other entries (the weights) stay restorable bit-exactly, and gc then frees
the chunks only thinned entries used (a chunk another entry still lists, or
that a kept delta decodes against, stays).

The pattern is matched against whole key paths with :func:`fnmatch.fnmatchcase`:
case-sensitive, ``*`` matches any characters **including** ``/`` (so
``optim/*`` takes everything under ``optim``), ``?`` one character,
``[seq]`` a set.  A pattern without wildcards names one key path.

The newest ``keep_newest`` checkpoints of *every* branch are left whole, even
when thinning only some branches: one of them may be another branch's head,
and a head is what the next save resumes from and deltas against.

Manifests are immutable, so a thinned checkpoint's manifest still lists the
entries; the catalog no longer does, and loading follows the catalog
(load.py).  The change is written as a ThinRecord per checkpoint first, then
made in one transaction, as forget does (forget.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import Connection, Engine

from deltastore import journal
from deltastore.catalog import queries
from deltastore.catalog.engine import read_transaction, write_transaction
from deltastore.forget import WriteRecords
from deltastore.gc import find_garbage
from deltastore.history import read_history
from deltastore.progress import ProgressFactory
from deltastore.progress import maybe as progress_bar


@dataclass(frozen=True)
class ThinnedCheckpoint:
    id: str
    step: int | None
    entries: tuple[queries.EntryRef, ...]

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "step": self.step,
            "key_paths": [e.key_path for e in self.entries],
            "logical_bytes": self.nbytes,
        }


@dataclass(frozen=True)
class ThinReport:
    """What ``Store.thin`` removed (or would), and what a gc would free afterwards."""

    dry_run: bool
    pattern: str
    checkpoints: tuple[ThinnedCheckpoint, ...]  # newest first; only those that lose entries
    freed_objects: int  # objects a gc run next would delete
    freed_bytes: int

    @property
    def entry_count(self) -> int:
        return sum(len(c.entries) for c in self.checkpoints)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "pattern": self.pattern,
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "entries": self.entry_count,
            "logical_bytes": sum(c.nbytes for c in self.checkpoints),
            "freed_objects": self.freed_objects,
            "freed_bytes": self.freed_bytes,
        }


def plan(
    conn: Connection, pattern: str, keep_newest: int, branches: Sequence[str] | None
) -> tuple[ThinnedCheckpoint, ...]:
    """The entries that match ``pattern`` in the checkpoints old enough to thin."""
    history = read_history(conn)
    chosen = history.select_branches(branches)
    protected = {c.id for b in history.branches for c in history.log(b)[:keep_newest]}
    candidates = {c.id: c for b in chosen for c in history.log(b) if c.id not in protected}
    entries = queries.entry_refs(conn, candidates)
    thinned = []
    for c in history.checkpoints.values():  # newest first
        if c.id in candidates:
            matched = tuple(e for e in entries[c.id] if fnmatchcase(e.key_path, pattern))
            if matched:
                thinned.append(ThinnedCheckpoint(c.id, c.step, matched))
    return tuple(thinned)


def thin(
    engine: Engine,
    pattern: str,
    keep_newest: int,
    branches: Sequence[str] | None,
    write_records: WriteRecords | None,
    progress: ProgressFactory | None = None,
) -> ThinReport:
    """Thin the history; with ``write_records`` None, only say what would go.

    The caller holds the store's writer lock when it passes ``write_records``
    (see forget.forget).  ``progress`` opens a bar over the checkpoints thinned:
    each costs a durable record and its catalog rows (2 s for 600).
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("thin needs a non-empty key-path pattern")
    if type(keep_newest) is not int or keep_newest < 1:
        raise ValueError(f"keep_newest must be a positive int, not {keep_newest!r}")
    if write_records is None:
        with read_transaction(engine) as conn:
            chosen = plan(conn, pattern, keep_newest, branches)
            pairs = {(c.id, e.idx) for c in chosen for e in c.entries}
            garbage = find_garbage(conn, None, except_entries=pairs)
        return ThinReport(True, pattern, chosen, garbage.object_count, garbage.freed_bytes)
    with write_transaction(engine) as conn:
        chosen = plan(conn, pattern, keep_newest, branches)
        if chosen:
            now_us = time.time_ns() // 1000
            written = write_records(
                [
                    journal.ThinRecord(now_us, c.id, tuple(e.key_path for e in c.entries))
                    for c in chosen
                ]
            )  # every record durable (one flush) before the first change
            with progress_bar(progress, len(chosen), "thin") as advance:
                for c in chosen:
                    queries.remove_entries(conn, c.id, c.entries)
                    if advance:
                        advance(1)
            queries.insert_objects(conn, ((w, now_us) for w in written))
    with read_transaction(engine) as conn:
        garbage = find_garbage(conn, None)
    return ThinReport(False, pattern, chosen, garbage.object_count, garbage.freed_bytes)
