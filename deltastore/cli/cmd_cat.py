"""deltastore cat header|chunk|manifest|record: print one stored object (plumbing).

``header OBJECT``: the object's header as JSON; ``chunk OBJECT``: the
chunk's decoded, verified raw bytes on stdout (binary); ``manifest REF``: a
checkpoint's manifest as JSON; ``record OBJECT``: a journal record as JSON.
OBJECT is a full id or a unique prefix of at least 6 hex digits.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deltastore import plumbing
from deltastore.cli.common import open_store, print_json


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "cat",
        help="print one stored object (plumbing)",
        description="Print one object as the store holds it; everything read is verified "
        "against its id. The JSON forms are the only output (no table).",
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
