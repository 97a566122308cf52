"""deltastore show REF: one checkpoint and its entries (dtype, shape, bytes)."""

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
    parser: argparse.ArgumentParser = sub.add_parser("show", help="show a checkpoint's entries")
    parser.add_argument("ref", nargs="?", default="main", help="the checkpoint (default: main)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        info = store.info(args.ref)
        entries = store.entries(info.id)
    if args.json:
        print_json({**info.to_json(), "entries": [e.to_json() for e in entries]})
        return 0
    print(f"checkpoint {info.id}")
    if info.parent:
        print(f"parent     {info.parent}")
    print(f"created    {info.created_at.isoformat()}")
    if info.branch:
        print(f"branch     {info.branch}")
    if info.step is not None:
        print(f"step       {info.step}")
    if info.metrics:
        print(f"metrics    {format_metrics(info.metrics)}")
    print(
        f"size       {human_bytes(info.logical_bytes)} logical, "
        f"{human_bytes(info.stored_bytes)} newly stored"
    )
    if info.message:
        print(f"\n    {info.message}\n")
    rows = [
        [e.key_path, e.dtype, "(" + ", ".join(map(str, e.shape)) + ")", f"{e.nbytes:,}"]
        for e in entries
    ]
    print_table(["entry", "dtype", "shape", "bytes"], rows, {3})
    return 0
