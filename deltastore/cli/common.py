"""What the verbs share: opening the store named by --store, and printing."""

from __future__ import annotations

import argparse
import json
import math
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


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def print_json(data: Any) -> None:
    """Strict JSON (``jq`` and most parsers reject NaN): non-finite floats become strings.

    They print as ``"nan"``, ``"inf"`` and ``"-inf"``, which Python's
    ``float()`` reads back.
    """
    print(json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False))


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return repr(data)
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


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
