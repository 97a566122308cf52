"""Bring a catalog's schema up to date through Alembic, or refuse a newer one.

A catalog stamped with a revision this deltastore does not know was written
by a newer deltastore: opening it raises SchemaVersionError before anything
is written (DESIGN.md invariant 6).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from deltastore.errors import SchemaVersionError


def migrations_dir() -> Path:
    """Where the Alembic scripts are: inside the installed package, or the repository's top."""
    packaged = resources.files("deltastore").joinpath("migrations")
    if packaged.is_dir() and packaged.joinpath("env.py").is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head_revision() -> str:
    """The newest schema revision this deltastore knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def check(engine: Engine) -> bool:
    """True when the schema is current; False when it needs an upgrade.

    Raises SchemaVersionError for a revision this deltastore does not know.
    """
    script = ScriptDirectory.from_config(_config())
    known = {rev.revision for rev in script.walk_revisions()}
    current = current_revisions(engine)
    unknown = current - known
    if unknown:
        raise SchemaVersionError(
            "catalog schema revision", ", ".join(sorted(unknown)), f"up to {head_revision()}"
        )
    return current == {head_revision()}


def upgrade(engine: Engine) -> None:
    """Run every revision up to the head (the caller holds the store lock)."""
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
