"""deltastore init PATH: create an empty store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import deltastore
from deltastore.chunking import DEFAULT_CHUNK_SIZE
from deltastore.layout import is_store


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("init", help="create an empty store")
    parser.add_argument("path", nargs="?", help="the store's folder (default: --store)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"bytes per chunk, a multiple of 16 (default {DEFAULT_CHUNK_SIZE})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deltastore.cli.common import MissingStoreError

    path = args.path or args.store
    if not path:
        raise MissingStoreError()
    existed = is_store(Path(path))
    root = deltastore.init(path, chunk_size=args.chunk_size)
    if existed:
        print(f"{root} is already a deltastore store; left as it was")
    else:
        print(f"initialised empty deltastore store in {root}")
    return 0
