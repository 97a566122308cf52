"""The catalog: schema owned by Alembic, upgraded on open, newer schemas refused untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import deltastore
from deltastore.catalog import migrate
from deltastore.catalog.engine import make_engine
from deltastore.catalog.models import Base

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_models_match_the_migrated_schema(tmp_path: Path) -> None:
    deltastore.init(tmp_path / "s")
    engine = make_engine(f"sqlite:///{tmp_path / 's' / 'catalog.sqlite'}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_newer_schema_revision_is_refused_and_untouched(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with deltastore.open(root, create=True) as store:
        store.save({"x": 1})
    db = sqlite3.connect(root / "catalog.sqlite")
    db.execute("UPDATE alembic_version SET version_num = 'ffff_future'")
    db.commit()
    db.close()
    before = tree_digest(root)
    with pytest.raises(deltastore.SchemaVersionError) as info:
        deltastore.open(root)
    assert "catalog schema revision is 'ffff_future'" in str(info.value)
    assert "Nothing was changed" in str(info.value)
    assert tree_digest(root) == before


def test_newer_store_format_is_refused_and_untouched(tmp_path: Path) -> None:
    root = tmp_path / "s"
    deltastore.init(root)
    (root / "FORMAT").write_text(json.dumps({"deltastore_store_format": 99}))
    before = tree_digest(root)
    with pytest.raises(deltastore.SchemaVersionError, match="store format is '99'"):
        deltastore.open(root)
    assert tree_digest(root) == before


def test_catalog_uses_wal_and_foreign_keys(store: deltastore.Store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_old_catalog_is_upgraded_on_open(tmp_path: Path) -> None:
    """A store at revision 0001 (before delta depths) opens, upgrades and keeps its history."""
    root = tmp_path / "s"
    with deltastore.open(root, create=True) as store:
        cid = store.save({"w": [1.5, 2]})
    engine = make_engine(f"sqlite:///{root / 'catalog.sqlite'}")
    config = migrate._config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    assert migrate.current_revisions(engine) == {"0001"}
    engine.dispose()
    with deltastore.open(root) as store:
        assert migrate.current_revisions(store.engine) == {migrate.head_revision()}
        assert store.load("main") == {"w": [1.5, 2]}
        assert store.resolve("main") == cid
        store.save({"w": [3.0]})


def test_wheel_ships_migrations_and_the_extension(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build would write build/ into the repository.
    source = shutil.copytree(
        ROOT,
        tmp_path / "src",
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "results", "runs", "*.so", "*.egg-info", "__pycache__"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("deltastore-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in [
        "deltastore/migrations/env.py",
        "deltastore/migrations/script.py.mako",
        "deltastore/migrations/versions/0001_initial.py",
        "deltastore/migrations/versions/0002_object_depth.py",
        "deltastore/_native.pyi",
        "deltastore/py.typed",
    ]:
        assert expected in names
    assert any(n.startswith("deltastore/_native") and n.endswith(".so") for n in names)
