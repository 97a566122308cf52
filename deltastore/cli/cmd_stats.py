"""deltastore stats: logical vs stored bytes, for the store and per checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from deltastore.cli.common import add_json_flag, human_bytes, open_store, print_json, print_table


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("stats", help="show storage savings")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
