"""deltastore export REF OUT [--prefix P] [--format safetensors|torch]: write a checkpoint
to a file other tools load."""

from __future__ import annotations

import argparse
from typing import Any

from deltastore.cli.common import add_json_flag, open_store, print_json
from deltastore.exchange.export import FORMATS, SAFETENSORS, choose_format


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "export",
        help="write a checkpoint to a .safetensors or torch.save file",
        description="Write a checkpoint (or its subtree at --prefix) to a safetensors file "
        "(array entries only, named by key path below the prefix) or a torch.save file "
        "(loadable with torch.load(weights_only=True)). The extension picks the format.",
    )
    parser.add_argument("ref", help="the checkpoint: branch, tag, id, id prefix, main~N")
    parser.add_argument("out", help="the file to write (.safetensors, .pt or .pth)")
    parser.add_argument(
        "--prefix", default=None, help="export only the subtree at this key path (e.g. model/)"
    )
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="the format (default: from OUT's name)"
    )
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        checkpoint_id = store.resolve(args.ref)
        path = store.export(checkpoint_id, args.out, format=args.format, prefix=args.prefix)
    chosen = choose_format(path, args.format)
    if args.json:
        print_json({"checkpoint": checkpoint_id, "path": str(path), "format": chosen})
        return 0
    what = "array entries" if chosen == SAFETENSORS else "tree"
    under = f" under {args.prefix!r}" if args.prefix else ""
    print(f"exported the {what}{under} of checkpoint {checkpoint_id[:12]} to {path} ({chosen})")
    return 0
