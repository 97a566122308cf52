"""The catalog's checkpoints and refs read at once, and each branch's log walked from its head.

Retention and thin decide per branch, newest first, and must see one
consistent picture of the history: they read it inside the transaction that
then changes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from deltastore import refs
from deltastore.catalog import queries
from deltastore.errors import RefNotFoundError
from deltastore.info import CheckpointInfo


@dataclass(frozen=True)
class History:
    checkpoints: dict[str, CheckpointInfo]  # every checkpoint, newest first
    refs: dict[str, tuple[str, str]]  # name -> (kind, checkpoint id)

    @property
    def branches(self) -> list[str]:
        return sorted(name for name, (kind, _) in self.refs.items() if kind == refs.BRANCH)

    @property
    def tagged(self) -> set[str]:
        """Ids some tag points at."""
        return {cid for kind, cid in self.refs.values() if kind == refs.TAG}

    def log(self, branch: str) -> list[CheckpointInfo]:
        """The branch's checkpoints from its head back along parents (newest first)."""
        found = []
        checkpoint_id: str | None = self.refs[branch][1]
        while checkpoint_id is not None:
            info = self.checkpoints[checkpoint_id]
            found.append(info)
            checkpoint_id = info.parent
        return found

    def select_branches(self, names: Sequence[str] | None) -> list[str]:
        """``names`` checked to be branches (all branches when None)."""
        if names is None:
            return self.branches
        for name in names:
            ref = self.refs.get(name)
            if ref is None or ref[0] != refs.BRANCH:
                raise RefNotFoundError(name, "no branch of that name")
        return list(dict.fromkeys(names))


def read_history(conn: Connection) -> History:
    checkpoints = {c.id: c for c in queries.all_checkpoints(conn)}
    named = {name: (kind, cid) for name, kind, cid in queries.list_refs(conn)}
    return History(checkpoints, named)
