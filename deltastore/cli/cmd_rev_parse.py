"""deltastore rev-parse REF...: the full checkpoint id each ref expression names.

Plumbing for scripts and for debugging refs: a branch, tag, id prefix or
``main~2`` in, the 64-hex id out (``--short``: the 12-digit form the tables print).
"""

from __future__ import annotations

import argparse
from typing import Any

from deltastore.cli.common import add_json_flag, open_store, print_json
from deltastore.ids import ID_HEX_LEN

#: The short ids every table prints (CheckpointInfo.short_id).
SHORT_ID_LEN = 12


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "rev-parse", help="print the checkpoint id a ref names"
    )
    parser.add_argument("refs", nargs="+", metavar="REF", help="branch, tag, id prefix, REF~N")
    parser.add_argument("--short", action="store_true", help="print 12-digit short ids")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        ids = [store.resolve(ref) for ref in args.refs]
    width = SHORT_ID_LEN if args.short else ID_HEX_LEN
    if args.json:
        print_json(
            [{"ref": ref, "id": cid[:width]} for ref, cid in zip(args.refs, ids, strict=True)]
        )
    else:
        for cid in ids:
            print(cid[:width])
    return 0
