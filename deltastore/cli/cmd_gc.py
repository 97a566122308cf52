"""deltastore gc: delete the objects no checkpoint needs (mark and sweep; safe beside saves)."""

from __future__ import annotations

import argparse
from typing import Any

from deltastore.cli.common import add_json_flag, human_bytes, open_store, print_json
from deltastore.gc import GcReport


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "gc",
        help="delete objects no checkpoint needs",
        description="Delete every object no checkpoint in the catalog needs (delta bases of "
        "kept objects stay). Waits for saves in flight to commit; safe while others save.",
    )
    parser.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        report = store.gc(dry_run=args.dry_run)
    if args.json:
        print_json(report.to_json())
    else:
        print(describe(report))
    return 0


def describe(report: GcReport) -> str:
    verb = "would delete" if report.dry_run else "deleted"
    extra = f" and {report.temporaries} temporary file(s)" if report.temporaries else ""
    return (
        f"gc: {verb} {report.objects} object(s){extra}, {human_bytes(report.freed_bytes)}; "
        f"{report.live_objects} object(s) in use"
    )
