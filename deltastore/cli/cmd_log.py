"""deltastore log [REF]: checkpoints from REF back through its parents."""

from __future__ import annotations

import argparse
from typing import Any

from deltastore.cli.common import (
    add_json_flag,
    format_metrics,
    human_bytes,
    open_store,
    print_json,
    print_table,
)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("log", help="show the history of a branch")
    parser.add_argument("ref", nargs="?", default="main", help="where to start (default: main)")
    parser.add_argument(
        "-n", "--limit", type=_count, default=None, help="show at most N checkpoints"
    )
    add_json_flag(parser)
    parser.set_defaults(run=run)


def _count(text: str) -> int:
    """A non-negative -n (a negative one used to print "no checkpoints yet")."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        history = list(store.log(args.ref, limit=args.limit))
    if args.json:
        print_json([c.to_json() for c in history])
        return 0
    if not history:
        print("no checkpoints yet")
        return 0
    rows = [
        [
            c.short_id,
            c.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "" if c.step is None else str(c.step),
            human_bytes(c.logical_bytes),
            human_bytes(c.stored_bytes),
            c.message,
            format_metrics(c.metrics),
        ]
        for c in history
    ]
    print_table(
        ["id", "created (UTC)", "step", "logical", "stored", "message", "metrics"], rows, {2, 3, 4}
    )
    return 0
