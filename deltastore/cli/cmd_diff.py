"""deltastore diff A B: how checkpoint B differs from A, entry by entry, and its metrics.

The table puts the largest changes first (added, removed and retyped entries,
then by relative change ‖b-a‖/‖a‖), then entries ``thin`` removed from a side
(``thinned (a)``); identical entries, found from the catalog without
decoding, take one line unless ``--all``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from deltastore.cli.common import add_json_flag, human_bytes, open_store, print_json, print_table
from deltastore.diff import IDENTICAL, THINNED, CheckpointDiff, EntryDiff, MetricDelta
from deltastore.info import CheckpointInfo, EntryInfo


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "diff", help="compare two checkpoints entry by entry"
    )
    parser.add_argument("a", help="the older checkpoint (branch, tag, id, REF~N)")
    parser.add_argument("b", help="the newer checkpoint")
    parser.add_argument("--prefix", help="only key paths starting with this (e.g. model/)")
    parser.add_argument("--all", action="store_true", help="list identical entries too")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        result = store.diff(args.a, args.b, prefix=args.prefix)
    if args.json:
        print_json(result.to_json())
        return 0
    print_table(["", "id", "step", "message"], [_side("a", result.a), _side("b", result.b)])
    print()
    _print_entries(result, show_identical=args.all)
    if result.metrics:
        print()
        print_table(["metric", "a", "b", "Δ"], [_metric_row(m) for m in result.metrics], {1, 2, 3})
    return 0


def _side(label: str, info: CheckpointInfo) -> list[str]:
    return [label, info.short_id, "" if info.step is None else str(info.step), info.message]


def _print_entries(result: CheckpointDiff, *, show_identical: bool) -> None:
    shown = [e for e in result.entries if show_identical or e.status != IDENTICAL]
    identical = [e for e in result.entries if e.status == IDENTICAL]
    where = f" under {result.prefix!r}" if result.prefix else ""
    if not result.entries:
        print(f"no entries{where}")
        return
    if shown:
        print_table(
            ["status", "key path", "dtype", "shape", "max|Δ|", "‖Δ‖", "rel", "changed%"],
            [_entry_row(e) for e in shown],
            {4, 5, 6, 7},
        )
    if identical and not show_identical:
        size = human_bytes(sum(e.b.nbytes for e in identical if e.b))
        count = f"{len(identical)} {'entry' if len(identical) == 1 else 'entries'}"
        lead = count if shown else f"all {count}"
        print(f"{lead}{where} identical ({size}; --all lists them)")


def _entry_row(entry: EntryDiff) -> list[str]:
    stats = entry.stats
    cells = [
        f"{THINNED} ({', '.join(entry.thinned_in)})" if entry.status == THINNED else entry.status,
        entry.key_path,
        _either(entry, lambda e: e.dtype),
        _either(entry, lambda e: "(" + ", ".join(map(str, e.shape)) + ")"),
    ]
    if stats is None:
        return [*cells, "", "", "", ""]
    return [
        *cells,
        _number(stats.max_abs),
        _number(stats.diff_norm),
        _number(stats.relative),
        f"{100 * stats.changed_fraction:.3g}%",
    ]


def _either(entry: EntryDiff, show: Any) -> str:
    """One side's value, or ``a -> b`` where the two differ (blank: thinned from both)."""
    values = [show(e) for e in (entry.a, entry.b) if isinstance(e, EntryInfo)]
    return values[0] if len(set(values)) == 1 else " -> ".join(values)


def _metric_row(metric: MetricDelta) -> list[str]:
    return [metric.name, _number(metric.a), _number(metric.b), _number(metric.delta, signed=True)]


def _number(value: float | int | None, *, signed: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, int):  # exact: integer entries' max|Δ|, counters
        return f"{value:+d}" if signed else str(value)
    if not math.isfinite(value):
        return str(value)  # nan, inf, -inf
    return f"{value:+.4g}" if signed else f"{value:.4g}"
