"""deltastore import PATH [--branch B] [--message M] [--step N]: save .pt/.pth/.bin/.safetensors
files, a Hugging Face model folder or a folder of checkpoints as checkpoints."""

from __future__ import annotations

import argparse
from typing import Any

from deltastore.cli.common import add_json_flag, open_store, print_json
from deltastore.refs import DEFAULT_BRANCH


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "import",
        help="import .pt/.safetensors files or model folders as checkpoints",
        description="Import a .pt/.pth/.bin file (read with torch.load(weights_only=True) "
        "only), a .safetensors file, a Hugging Face model folder (one checkpoint), or a "
        "folder of such files or of checkpoint-N/ folders (one checkpoint each, in natural "
        "order, step from the number in the name). Prints the ids of the new checkpoints.",
    )
    parser.add_argument("path", help="a weights file or a folder")
    parser.add_argument(
        "--branch", default=DEFAULT_BRANCH, help=f"the branch to add to (default {DEFAULT_BRANCH})"
    )
    parser.add_argument("--message", "-m", default=None, help="message (default: the file name)")
    parser.add_argument("--step", type=int, default=None, help="step of a single checkpoint")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        ids = store.import_path(args.path, branch=args.branch, message=args.message, step=args.step)
        infos = [store.info(i) for i in ids]
    if args.json:
        print_json([info.to_json() for info in infos])
        return 0
    for info in infos:
        print(info.id)
    return 0
