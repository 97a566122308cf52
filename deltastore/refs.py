"""Ref expressions: ``main``, a tag, a full id, a unique id prefix (>= 6 hex), ``REF~N``.

Names are tried before id prefixes, as git does; ``~N`` walks N parents and
``~`` alone means ``~1``, so ``main~~`` is ``main~2``.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection

from deltastore.catalog import queries
from deltastore.errors import AmbiguousRefError, InvalidRefNameError, RefNotFoundError
from deltastore.ids import MIN_PREFIX_LEN, is_full_id, is_id_prefix

DEFAULT_BRANCH = "main"
BRANCH = "branch"
TAG = "tag"
_WALK = re.compile(r"~(\d*)")
_EXPR = re.compile(r"(.*?)((?:~\d*)*)", re.DOTALL)
_BAD_NAME = re.compile(r"[\s~^:?*\[\\]|^-|^$|\.\.|/$|^/|//")


def validate_name(name: str) -> None:
    """Refuse names that could not be told apart from an expression or an id."""
    if not isinstance(name, str) or _BAD_NAME.search(name):
        raise InvalidRefNameError(
            str(name), "use letters, digits, '.', '_', '-' and '/' (no '~', spaces or '..')"
        )
    if is_full_id(name):
        raise InvalidRefNameError(name, "a 64-hex name would hide the checkpoint with that id")
    if len(name) > 255:
        raise InvalidRefNameError(name, "longer than 255 characters")


def split_walk(expr: str) -> tuple[str, int]:
    """``main~2~`` -> (``main``, 3)."""
    match = _EXPR.fullmatch(expr)
    assert match is not None  # the pattern matches every string
    steps = sum(int(n or 1) for n in _WALK.findall(match.group(2)))
    return match.group(1), steps


def resolve(conn: Connection, expr: str) -> str:
    """The checkpoint id an expression names; RefNotFoundError if none."""
    base, steps = split_walk(expr.strip())
    if not base:
        raise RefNotFoundError(expr, "empty ref")
    checkpoint_id = _resolve_base(conn, base, expr)
    for walked in range(steps):
        info = queries.get_checkpoint(conn, checkpoint_id)
        if info is None or info.parent is None:
            raise RefNotFoundError(expr, f"history has only {walked + 1} checkpoint(s)")
        checkpoint_id = info.parent
    return checkpoint_id


def _resolve_base(conn: Connection, name: str, expr: str) -> str:
    ref = queries.get_ref(conn, name)
    if ref is not None:
        return ref[1]
    if is_full_id(name):
        if queries.get_checkpoint(conn, name) is None:
            raise RefNotFoundError(expr, "no checkpoint has this id")
        return name
    if is_id_prefix(name):
        matches = queries.ids_with_prefix(conn, name)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise AmbiguousRefError(expr, matches)
        raise RefNotFoundError(expr, "no branch, tag or checkpoint id matches")
    if name == DEFAULT_BRANCH:
        raise RefNotFoundError(expr, "the branch has no checkpoints yet")
    hint = f" (id prefixes need at least {MIN_PREFIX_LEN} hex digits)" if _looks_hex(name) else ""
    raise RefNotFoundError(expr, f"no branch, tag or checkpoint id matches{hint}")


def _looks_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)
