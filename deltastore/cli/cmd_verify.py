"""deltastore verify [--full]: check the catalog against the objects, or every byte.

Exits 0 when the store is clean, and with CorruptObjectError's status (7)
when any problem was found; each problem is one line naming the object and,
where the catalog knows it, the checkpoint, key path and chunk.
"""

from __future__ import annotations

import argparse
from typing import Any

from deltastore.cli.common import add_json_flag, human_bytes, open_store, print_json
from deltastore.errors import CorruptObjectError
from deltastore.verify import VerifyReport


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "verify",
        help="check the store's objects against its catalog",
        description="Quick: every object the catalog lists exists with its size, and every "
        "object it mentions is listed. --full also decodes every object once and re-hashes "
        "it, and compares every manifest with the catalog. Exit status 7 when anything is "
        "wrong.",
    )
    parser.add_argument(
        "--full", action="store_true", help="decode and re-hash every object (reads everything)"
    )
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        report = store.verify(full=args.full)
    if args.json:
        print_json(report.to_json())
    else:
        for line in describe(report):
            print(line)
    return 0 if report.ok else CorruptObjectError.exit_code


def describe(report: VerifyReport) -> list[str]:
    checked = (
        f"checked {report.checkpoints} checkpoint(s), {report.objects} object(s) "
        f"({human_bytes(report.stored_bytes)} stored)"
    )
    if report.full:
        checked += f", decoded and re-hashed {human_bytes(report.decoded_bytes)}"
    lines = [f"problem: {p}" for p in report.problems]
    verdict = "no problems" if report.ok else f"{len(report.problems)} problem(s)"
    lines.append(f"{checked}: {verdict}")
    if report.unlisted_objects:
        lines.append(
            f"{report.unlisted_objects} object(s) on disk the catalog does not list "
            f"({human_bytes(report.unlisted_bytes)}): gc frees them"
        )
    return lines
