"""What the verbs share: opening the store named by --store, and printing."""

from __future__ import annotations

import argparse
import json
from typing import Any

import deltastore
from deltastore.errors import DeltastoreError


class MissingStoreError(DeltastoreError):
    exit_code = 2

    def __init__(self) -> None:
        super().__init__("no store given: pass --store PATH or set DELTASTORE_STORE")


def open_store(args: argparse.Namespace) -> deltastore.Store:
    if not args.store:
        raise MissingStoreError()
    return deltastore.open(args.store)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_metrics(metrics: dict[str, float | int]) -> str:
    return " ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


def print_table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> None:
    """A plain aligned table; columns in ``right`` are right-aligned (numbers)."""
    right = right or set()
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(line(headers))
    for row in rows:
        print(line(row))
