"""The ``deltastore`` command: one module per verb (``cmd_<verb>.py``), errors as one line.

Every verb module exposes ``register(subparsers)``, which adds its parser and
sets ``run`` as the handler.  Errors deltastore raises on purpose print one
line to stderr and exit with the error's ``exit_code``; no tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from deltastore import __version__
from deltastore.cli import (
    cmd_branch,
    cmd_cat,
    cmd_diff,
    cmd_export,
    cmd_forget,
    cmd_gc,
    cmd_import,
    cmd_init,
    cmd_log,
    cmd_rebuild,
    cmd_refs,
    cmd_rev_parse,
    cmd_show,
    cmd_stats,
    cmd_tag,
    cmd_thin,
    cmd_verify,
)
from deltastore.errors import DeltastoreError

VERBS = (
    cmd_init,
    cmd_log,
    cmd_show,
    cmd_stats,
    cmd_tag,
    cmd_branch,
    cmd_refs,
    cmd_rev_parse,
    cmd_diff,
    cmd_export,
    cmd_import,
    cmd_forget,
    cmd_thin,
    cmd_gc,
    cmd_verify,
    cmd_rebuild,
    cmd_cat,
)
STORE_ENV = "DELTASTORE_STORE"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deltastore",
        description="git for machine-learning checkpoints",
    )
    parser.add_argument("--version", action="version", version=f"deltastore {__version__}")
    parser.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV),
        help=f"the store's folder (default: ${STORE_ENV})",
    )
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    for verb in VERBS:
        verb.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except DeltastoreError as exc:
        print(f"deltastore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `deltastore log | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("deltastore: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"deltastore: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
