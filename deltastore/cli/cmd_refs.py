"""deltastore refs: every branch and tag; and the machinery ``tag`` and ``branch`` share.

``tag`` and ``branch`` are one verb with two kinds of name (git's are too):
``deltastore tag NAME [REF] [--force]`` sets, ``--delete NAME`` removes and a
bare ``deltastore tag`` lists.  Deleting checks the kind, so ``tag --delete
main`` cannot remove the main branch by a slip of the verb.  With ``--json``
setting and deleting print ``{"name", "kind", "id", "previous"}``: ``id``
where the name points now (None once deleted), ``previous`` where it pointed
before (None for a new name).
"""

from __future__ import annotations

import argparse
from typing import Any

import deltastore
from deltastore.cli.common import add_json_flag, open_store, print_json, print_table
from deltastore.errors import RefNotFoundError
from deltastore.refs import DEFAULT_BRANCH


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("refs", help="list branches and tags")
    add_json_flag(parser)
    parser.set_defaults(run=run, kind=None)


def run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        rows = ref_rows(store, args.kind)
    if args.json:
        print_json(rows)
    elif not rows:
        print(f"no {args.kind or 'ref'}s yet")
    else:
        print_table(
            ["name", "kind", "id", "step", "message"],
            [[r["name"], r["kind"], r["id"][:12], _blank(r["step"]), r["message"]] for r in rows],
            {3},
        )
    return 0


def ref_rows(store: deltastore.Store, kind: str | None) -> list[dict[str, Any]]:
    """name, kind, id, step and message of each ref (of ``kind`` if given), by name."""
    rows = []
    for name, (ref_kind, checkpoint_id) in sorted(store.refs().items()):
        if kind is None or ref_kind == kind:
            info = store.info(checkpoint_id)
            rows.append(
                {
                    "name": name,
                    "kind": ref_kind,
                    "id": checkpoint_id,
                    "step": info.step,
                    "message": info.message,
                }
            )
    return rows


def _blank(value: object) -> str:
    return "" if value is None else str(value)


def add_ref_verb(sub: Any, kind: str, help_text: str) -> None:
    """Register ``tag`` or ``branch``: set, move, delete or list names of ``kind``."""
    parser: argparse.ArgumentParser = sub.add_parser(kind, help=help_text)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("name", nargs="?", help=f"the {kind} to set (none: list every {kind})")
    what.add_argument("-d", "--delete", metavar="NAME", help=f"delete the {kind} NAME")
    parser.add_argument(
        "ref", nargs="?", default=DEFAULT_BRANCH, help="the checkpoint it names (default: main)"
    )
    parser.add_argument("-f", "--force", action="store_true", help=f"move the {kind} if it exists")
    add_json_flag(parser)
    parser.set_defaults(run=run_ref_verb, kind=kind)


def run_ref_verb(args: argparse.Namespace) -> int:
    if args.delete is None and args.name is None:
        return run(args)
    kind: str = args.kind
    with open_store(args) as store:
        if args.delete is not None:
            return _delete(store, kind, args.delete, as_json=args.json)
        before = store.refs().get(args.name)
        setter = store.tag if kind == "tag" else store.branch
        checkpoint_id = setter(args.name, args.ref, force=args.force)
        info = store.info(checkpoint_id)
    if args.json:
        print_json(_changed(args.name, kind, checkpoint_id, before))
        return 0
    step = "" if info.step is None else f" (step {info.step})"
    if before is None:
        print(f"{kind} {args.name!r} -> {checkpoint_id[:12]}{step}")
    elif before[1] == checkpoint_id:
        print(f"{kind} {args.name!r} already at {checkpoint_id[:12]}{step}")
    else:
        print(f"moved {kind} {args.name!r} from {before[1][:12]} to {checkpoint_id[:12]}{step}")
    return 0


def _delete(store: deltastore.Store, kind: str, name: str, *, as_json: bool) -> int:
    existing = store.refs().get(name)
    if existing is None:
        raise RefNotFoundError(name, f"no {kind} of that name")
    if existing[0] != kind:
        raise RefNotFoundError(name, f"no {kind} of that name ({name!r} is a {existing[0]})")
    store.delete_ref(name)
    if as_json:
        print_json(_changed(name, kind, None, existing))
    else:
        print(f"deleted {kind} {name!r} (was {existing[1][:12]})")
    return 0


def _changed(
    name: str, kind: str, checkpoint_id: str | None, before: tuple[str, str] | None
) -> dict[str, Any]:
    """What ``--json`` prints of a ref set or deleted."""
    return {
        "name": name,
        "kind": kind,
        "id": checkpoint_id,
        "previous": None if before is None else before[1],
    }
