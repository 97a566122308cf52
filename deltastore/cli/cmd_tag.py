"""deltastore tag NAME [REF] [--force] | --delete NAME: name a checkpoint; bare: list tags."""

from __future__ import annotations

from typing import Any

from deltastore.cli.cmd_refs import add_ref_verb
from deltastore.refs import TAG


def register(sub: Any) -> None:
    add_ref_verb(sub, TAG, "name a checkpoint with a tag (a name that never moves by itself)")
