"""deltastore thin PATTERN: drop matching entries (optimizer state, say) from older checkpoints."""

from __future__ import annotations

import argparse
from typing import Any

from deltastore.cli.cmd_forget import add_history_options, print_gc_forecast
from deltastore.cli.common import human_bytes, open_store, positive_int, print_json, print_table


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "thin",
        help="drop matching entries from all but the newest checkpoints",
        description="Remove the entries whose key path matches PATTERN (fnmatch, '*' also "
        "matches '/': 'optim/*') from every checkpoint older than the newest N of its branch. "
        "The other entries stay; gc frees the chunks only those entries used.",
    )
    parser.add_argument("pattern", metavar="PATTERN", help="key-path glob, e.g. 'optim/*'")
    parser.add_argument(
        "--keep-newest",
        type=positive_int,
        required=True,
        metavar="N",
        help="leave the newest N checkpoints of every branch whole",
    )
    add_history_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        report = store.thin(
            args.pattern, keep_newest=args.keep_newest, branches=args.branches, dry_run=args.dry_run
        )
    if args.json:
        print_json(report.to_json())
        return 0
    if not report.checkpoints:
        print(f"no entry matching {args.pattern!r} in checkpoints old enough to thin")
        return 0
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"{verb} {report.entry_count} entr{'y' if report.entry_count == 1 else 'ies'} "
        f"matching {args.pattern!r} from {len(report.checkpoints)} checkpoint(s):"
    )
    rows = [
        [
            c.id[:12],
            "" if c.step is None else str(c.step),
            str(len(c.entries)),
            human_bytes(c.nbytes),
        ]
        for c in report.checkpoints
    ]
    print_table(["id", "step", "entries", "logical"], rows, {1, 2, 3})
    print_gc_forecast(report.freed_objects, report.freed_bytes)
    return 0
