"""deltastore stats: logical vs stored bytes, for the store and per checkpoint or key prefix."""

from __future__ import annotations

import argparse
from typing import Any

from deltastore.cli.common import (
    add_json_flag,
    human_bytes,
    open_store,
    positive_int,
    print_json,
    print_table,
)
from deltastore.prefix_stats import PrefixReport


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("stats", help="show storage savings")
    parser.add_argument(
        "--by-prefix",
        action="store_true",
        help="per key prefix (model, optim...) instead of per checkpoint",
    )
    parser.add_argument(
        "--depth",
        type=positive_int,
        default=None,
        help="key path components in a prefix (default: 1; implies --by-prefix)",
    )
    parser.add_argument(
        "--ref",
        default=None,
        help="one checkpoint's entries instead of every checkpoint's (implies --by-prefix)",
    )
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.by_prefix or args.depth is not None or args.ref is not None:
        return run_by_prefix(args)
    with open_store(args) as store:
        stats = store.stats()
    if args.json:
        print_json(stats.to_json())
        return 0
    rows = [
        [
            c.short_id,
            "" if c.step is None else str(c.step),
            human_bytes(c.logical_bytes),
            human_bytes(c.stored_bytes),
            f"{c.ratio:.3f}",
        ]
        for c in reversed(stats.checkpoints)
    ]
    print_table(["checkpoint", "step", "logical", "stored", "ratio"], rows, {1, 2, 3, 4})
    print()
    print(
        f"{stats.checkpoint_count} checkpoints, {stats.object_count} objects: "
        f"{human_bytes(stats.logical_bytes)} logical, {human_bytes(stats.stored_bytes)} stored, "
        f"ratio {stats.ratio:.3f}"
    )
    return 0


def run_by_prefix(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        report = store.stats_by_prefix(args.depth or 1, args.ref)
    if args.json:
        print_json(report.to_json())
        return 0
    print_prefixes(report)
    return 0


def print_prefixes(report: PrefixReport) -> None:
    rows = [
        [
            p.prefix or "(root)",
            human_bytes(p.logical_bytes),
            human_bytes(p.stored_bytes),
            f"{p.ratio:.3f}",
            str(p.objects),
        ]
        for p in report.prefixes
    ]
    print_table(["prefix", "logical", "stored", "ratio", "objects"], rows, {1, 2, 3, 4})
    print()
    scope = "all checkpoints" if report.checkpoint_id is None else report.checkpoint_id[:12]
    other = "manifests, records and bases" if report.checkpoint_id is None else "its manifest"
    print(
        f"{scope}: {human_bytes(report.logical_bytes)} logical, "
        f"{human_bytes(report.stored_bytes)} stored in chunks; "
        f"{human_bytes(report.other_stored_bytes)} more in {other}"
    )
