"""deltastore branch NAME [REF] [--force] | --delete NAME: start a branch; bare: list them."""

from __future__ import annotations

from typing import Any

from deltastore.cli.cmd_refs import add_ref_verb
from deltastore.refs import BRANCH


def register(sub: Any) -> None:
    add_ref_verb(sub, BRANCH, "start a branch at a checkpoint (saves on it move it)")
