"""deltastore cat header|chunk|manifest|record|records: print stored objects (plumbing).

``header OBJECT``: the object's header as JSON; ``chunk OBJECT``: the
chunk's decoded, verified raw bytes on stdout (binary); ``manifest REF``: a
checkpoint's manifest as JSON; ``record OBJECT``: a journal record as JSON;
``records``: every journal record's id, time, op and summary (a table, or
``--json``), which is where record ids come from.  OBJECT is a full id or a
unique prefix of at least 6 hex digits; an object of another kind than asked
for fails with exit 2, naming the ``cat`` that reads it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deltastore import plumbing
from deltastore.cli.common import add_json_flag, open_store, print_json, print_table
from deltastore.info import datetime_from_us


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "cat",
        help="print one stored object (plumbing)",
        description="Print one object as the store holds it; everything read is verified "
        "against its id. Each object prints as JSON (or raw bytes); `records` lists the "
        "journal records.",
    )
    what = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, arg, text in (
        ("header", "object", "the object's header as JSON: kind, transform, planes"),
        ("chunk", "object", "the chunk's decoded raw bytes on stdout (binary)"),
        ("manifest", "ref", "a checkpoint's manifest as JSON"),
        ("record", "object", "a journal record as JSON"),
    ):
        one = what.add_parser(name, help=text, description=text)
        if arg == "ref":
            one.add_argument("ref", help="a branch, tag, id, id prefix or REF~N")
        else:
            one.add_argument("object", help="an object id or a unique prefix (6+ hex digits)")
        one.set_defaults(run=run)
    text = "every journal record (ref changes, forgets, thins), newest first: id, time, op"
    listing = what.add_parser("records", help=text, description=text)
    add_json_flag(listing)
    listing.set_defaults(run=run_records)


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if args.what == "manifest":
            print_json(plumbing.manifest(store, args.ref))
            return 0
        object_id = plumbing.resolve_object(store, args.object)
        if args.what == "chunk":
            data = plumbing.chunk(store, object_id)
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        elif args.what == "header":
            print_json(plumbing.header(store, object_id))
        else:
            print_json(plumbing.record(store, object_id))
    return 0


def run_records(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        rows = plumbing.records(store)
    if args.json:
        print_json(rows)
    elif not rows:
        print("no journal records yet")
    else:
        print_table(
            ["id", "time", "op", "what"],
            [[r["id"][:12], _when(r["time_us"]), r["op"], r["summary"]] for r in rows],
        )
    return 0


def _when(time_us: int) -> str:
    """UTC to the second, as `deltastore log` shows a checkpoint's time."""
    return datetime_from_us(time_us).strftime("%Y-%m-%d %H:%M:%S")
