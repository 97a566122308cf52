"""deltastore forget: drop the checkpoints the --keep-* rules do not keep (then gc with --prune).

The rules are restic's: each applies per branch, newest first, and a
checkpoint stays if any rule on any branch keeps it; branch heads always stay.
The text report lists what goes, then each checkpoint that stays and why
(the rules that keep it), as ``--json``'s ``kept`` does.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

from deltastore import retention
from deltastore.cli.cmd_gc import describe as describe_gc
from deltastore.cli.common import (
    add_json_flag,
    human_bytes,
    open_store,
    positive_int,
    print_json,
    print_table,
)
from deltastore.errors import DeltastoreError
from deltastore.forget import ForgetReport
from deltastore.info import CheckpointInfo
from deltastore.retention import KeepPolicy, parse_best


class NoKeepRuleError(DeltastoreError):
    """forget without a single --keep-* rule: refuse rather than guess."""

    exit_code = 2

    def __init__(self) -> None:
        super().__init__(
            "forget needs a rule: --keep-last, --keep-every, --keep-best or --keep-tagged"
        )


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "forget",
        help="drop checkpoints the keep rules do not keep",
        description="Drop from the history every checkpoint that no --keep-* rule keeps on any "
        "branch (branch heads always stay). Objects are freed by gc (--prune runs it).",
    )
    parser.add_argument("--keep-last", type=positive_int, metavar="N", help="the newest N")
    parser.add_argument(
        "--keep-every", type=positive_int, metavar="K", help="those whose step is a multiple of K"
    )
    parser.add_argument(
        "--keep-best",
        type=_best,
        metavar="METRIC:min|max:K",
        help="the K best by a metric (e.g. loss:min:3)",
    )
    parser.add_argument(
        "--keep-tagged", action="store_true", help="every checkpoint a tag points at"
    )
    add_history_options(parser)
    parser.add_argument("--prune", action="store_true", help="run gc afterwards")
    parser.set_defaults(run=run)


def add_history_options(parser: argparse.ArgumentParser) -> None:
    """What forget and thin share: --branch (repeatable), --dry-run, --json."""
    parser.add_argument(
        "--branch",
        action="append",
        dest="branches",
        metavar="B",
        help="only this branch's history (repeatable; default: every branch)",
    )
    parser.add_argument("--dry-run", action="store_true", help="only say what would go")
    add_json_flag(parser)


def print_gc_forecast(objects: int, freed_bytes: int) -> None:
    print(f"a gc would then free {objects} object(s), {human_bytes(freed_bytes)}")


def _best(text: str) -> tuple[str, Literal["min", "max"], int]:
    try:
        return parse_best(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    best: tuple[str, Literal["min", "max"], int] | None = args.keep_best
    policy = KeepPolicy(
        last=args.keep_last,
        every_n_steps=args.keep_every,
        best=best[2] if best else None,
        monitor=best[0] if best else None,
        mode=best[1] if best else "min",
        tagged=args.keep_tagged,
    )
    if policy.keeps_everything:
        raise NoKeepRuleError()
    with open_store(args) as store:
        report = store.forget(policy, branches=args.branches, dry_run=args.dry_run)
        collected = store.gc() if args.prune and not args.dry_run else None
        checkpoints = {} if args.json else {c.id: c for c in store.stats().checkpoints}
    if args.json:
        data = report.to_json()
        data["gc"] = None if collected is None else collected.to_json()
        print_json(data)
        return 0
    _print(report, policy, checkpoints)
    if collected is not None:
        print(describe_gc(collected))
    return 0


def _print(
    report: ForgetReport, policy: KeepPolicy, checkpoints: dict[str, CheckpointInfo]
) -> None:
    """What goes, then each checkpoint that stays (newest first) and the rules that keep it."""
    verb = "would forget" if report.dry_run else "forgot"
    if report.forgotten:
        print(f"{verb} {len(report.forgotten)} checkpoint(s), keeping {len(report.kept)}:")
        rows = [
            [
                c.short_id,
                "" if c.step is None else str(c.step),
                c.branch or "",
                human_bytes(c.logical_bytes),
                c.message,
            ]
            for c in report.forgotten
        ]
        print_table(["id", "step", "branch", "logical", "message"], rows, {1, 3})
        if report.deleted_tags:
            tags = ", ".join(report.deleted_tags)
            print(f"{'would delete' if report.dry_run else 'deleted'} tag(s): {tags}")
        print(f"{'would keep' if report.dry_run else 'kept'}:")
    else:
        print(f"nothing to forget; keeping {len(report.kept)} checkpoint(s):")
    kept = [c for cid, c in checkpoints.items() if cid in report.kept]  # newest first
    rows = [
        [
            c.short_id,
            "" if c.step is None else str(c.step),
            c.branch or "",
            ", ".join(_why(reason, policy) for reason in report.kept[c.id]),
            c.message,
        ]
        for c in kept
    ]
    print_table(["id", "step", "branch", "kept by", "message"], rows, {1})
    if report.forgotten:
        print_gc_forecast(report.freed_objects, report.freed_bytes)


def _why(reason: str, policy: KeepPolicy) -> str:
    """A reason of the report in words: the rule, with its parameter."""
    if reason == retention.NEWEST:
        return "branch head"
    if reason == retention.LAST:
        return f"last {policy.last}"
    if reason == retention.EVERY:
        return f"every {policy.every_n_steps} steps"
    if reason == retention.BEST:
        return f"best {policy.best} by {policy.monitor} ({policy.mode})"
    if reason == retention.ALL:
        return "no rule"
    return reason  # "tagged", "other branch"
