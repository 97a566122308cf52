"""deltastore rebuild [--force]: recreate catalog.sqlite from the objects alone.

Does not open the store (its catalog may be what is broken).  The old
catalog is moved aside, never deleted.  Exits 0 when everything was
recovered, and with CorruptObjectError's status (7) when the rebuilt
catalog had to leave something out (each such problem is printed).
"""

from __future__ import annotations

import argparse
from typing import Any

from deltastore.cli.common import MissingStoreError, add_json_flag, print_json
from deltastore.errors import CorruptObjectError
from deltastore.rebuild import RebuildReport, rebuild


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "rebuild",
        help="recreate the catalog from the objects",
        description="Recreate catalog.sqlite from the manifests, journal records and object "
        "headers, when it is lost or damaged. The old catalog is kept as "
        "catalog.sqlite.broken-<time>. Run it while no other process uses the store.",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="rebuild even though the catalog opens and passes a quick verify",
    )
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.store:
        raise MissingStoreError()
    report = rebuild(args.store, force=args.force)
    if args.json:
        print_json(report.to_json())
    else:
        for line in describe(report):
            print(line)
    return CorruptObjectError.exit_code if report.problems else 0


def describe(report: RebuildReport) -> list[str]:
    lines = [f"problem: {p}" for p in report.problems]
    lines.append(
        f"rebuilt the catalog of {report.path}: {report.checkpoints} checkpoint(s), "
        f"{report.refs} ref(s), {report.objects} object(s)"
    )
    if report.moved_aside is not None:
        lines.append(f"the old catalog is kept as {report.moved_aside}")
    left_out = []
    if report.forgotten:
        left_out.append(f"{report.forgotten} forgotten checkpoint(s)")
    if report.abandoned:
        left_out.append(f"{report.abandoned} manifest(s) of saves that never committed")
    if report.unlisted_objects:
        left_out.append(f"{report.unlisted_objects} object(s) nothing needs (gc frees them)")
    if left_out:
        lines.append("left out: " + ", ".join(left_out))
    return lines
