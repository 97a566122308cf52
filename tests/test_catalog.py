"""The catalog: schema owned by Alembic, upgraded on open, newer schemas refused untouched."""

from __future__ import annotations

import hashlib
import json
import os
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

#: The project root (the parent of tests/): what a wheel is built from.
ROOT = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (the listing, -wal/-shm and lock included) with its SHA-256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _catalog_url(root: Path) -> str:
    return f"sqlite:///{root / 'catalog.sqlite'}"


def _migrate(root: Path, direction: str, revision: str) -> None:
    """Run alembic's upgrade or downgrade on a store's catalog, as migrate.upgrade does."""
    engine = make_engine(_catalog_url(root))
    config = migrate._config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            getattr(command, direction)(config, revision)
    finally:
        engine.dispose()


def _revisions(root: Path) -> set[str]:
    engine = make_engine(_catalog_url(root))
    try:
        return migrate.current_revisions(engine)
    finally:
        engine.dispose()


def test_models_match_the_schema_the_migrations_build(tmp_path: Path) -> None:
    """The models the queries use and the schema Alembic creates must never drift apart."""
    deltastore.init(tmp_path / "s")
    engine = make_engine(_catalog_url(tmp_path / "s"))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert context.get_current_heads() == (migrate.head_revision(),)
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_newer_schema_revision_is_refused_and_the_store_untouched(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with deltastore.open(root, create=True, progress=False) as store:
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
    assert info.value.found == "ffff_future"
    assert tree_digest(root) == before  # same files, same bytes: no upgrade was attempted
    assert _revisions(root) == {"ffff_future"}


def test_newer_store_format_is_refused_and_the_store_untouched(tmp_path: Path) -> None:
    root = tmp_path / "s"
    deltastore.init(root)
    (root / "FORMAT").write_text(json.dumps({"deltastore_store_format": 99}))
    before = tree_digest(root)
    with pytest.raises(deltastore.SchemaVersionError, match="store format is '99'"):
        deltastore.open(root)
    with pytest.raises(deltastore.SchemaVersionError):
        deltastore.open(root, create=True)  # create must not "repair" it either
    assert tree_digest(root) == before


def test_catalog_runs_in_wal_mode_with_foreign_keys(store: deltastore.Store) -> None:
    """WAL lets readers run beside a saving process; foreign keys keep rows consistent."""
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # WAL is recorded in the file, so any other SQLite client uses it too.
    db = sqlite3.connect(store.root / "catalog.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


def test_store_at_an_old_revision_is_upgraded_on_open_and_keeps_its_history(
    tmp_path: Path,
) -> None:
    """A store at revision 0001 (before delta depths) opens, upgrades and keeps its history."""
    root = tmp_path / "s"
    with deltastore.open(root, create=True, progress=False) as store:
        cid = store.save({"w": [1.5, 2]}, "old", step=1)
    _migrate(root, "downgrade", "0001")
    assert _revisions(root) == {"0001"}
    with deltastore.open(root, progress=False) as store:
        assert migrate.current_revisions(store.engine) == {migrate.head_revision()}
        assert store.load("main") == {"w": [1.5, 2]}
        assert store.resolve("main") == cid
        assert [c.message for c in store.log()] == ["old"]
        store.save({"w": [3.0]})
        assert store.load("main") == {"w": [3.0]}


def test_catalog_without_any_schema_is_upgraded_to_head_on_open(tmp_path: Path) -> None:
    """Downgraded to 'base' (every table dropped), the catalog is rebuilt to head on open."""
    root = tmp_path / "s"
    deltastore.init(root)
    _migrate(root, "downgrade", "base")
    assert _revisions(root) == set()
    with deltastore.open(root, progress=False) as store:
        with store.engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            tables = {
                name
                for (name,) in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type='table'"
                )
            }
        assert version == [(migrate.head_revision(),)]
        assert set(Base.metadata.tables) <= tables
        store.save({"x": 1})
        assert store.load() == {"x": 1}


def _run(
    args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    assert done.returncode == 0, f"{args[:4]} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_wheel_ships_the_migrations_and_the_compiled_extension(tmp_path: Path) -> None:
    """A wheel install must upgrade catalogs on open: the Alembic scripts must be inside it.

    The repository keeps them at migrations/ (mapped to deltastore.migrations),
    so a packaging slip would pass every in-tree test and break only installs.
    """
    if not any((ROOT / "native").glob("*.c")):
        pytest.skip("the C sources under native/ are not there yet")
    # Build from a copy: an in-tree build would write build/ and *.egg-info into the repository.
    source = shutil.copytree(
        ROOT,
        tmp_path / "src",
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "dist", "results", "runs", "*.so", "*.egg-info", "__pycache__"
        ),
    )
    wheel_dir = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheel_dir), str(source)])  # fmt: skip
    (wheel,) = wheel_dir.glob("deltastore-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    expected = {
        f"deltastore/migrations/{p.relative_to(ROOT / 'migrations').as_posix()}"
        for p in (ROOT / "migrations").rglob("*")
        if p.suffix in {".py", ".mako"}
    }
    assert {
        "deltastore/migrations/env.py",
        "deltastore/migrations/script.py.mako",
        "deltastore/migrations/versions/0001_initial.py",
    } <= expected
    assert expected <= names
    assert {"deltastore/_native.pyi", "deltastore/py.typed"} <= names
    assert any(n.startswith("deltastore/_native") and n.endswith(".so") for n in names)

    # Installed on its own, the wheel creates a catalog at head from its own scripts.
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
          "--target", str(site), str(wheel)])  # fmt: skip
    probe = (
        "import sys, deltastore\n"
        "from deltastore.catalog import migrate\n"
        "with deltastore.open(sys.argv[1], create=True, progress=False) as s:\n"
        "    s.save({'x': 1})\n"
        "    print(deltastore.__file__, migrate.migrations_dir(), s.load(), sep='\\n')\n"
        "    print(*migrate.current_revisions(s.engine))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    # cwd: ``python -c`` puts the working directory first on sys.path; it must not be the repo.
    done = _run(
        [sys.executable, "-W", "error", "-c", probe, str(tmp_path / "store")],
        env=env,
        cwd=tmp_path,
    )
    module, scripts, loaded, revision = done.stdout.splitlines()
    assert Path(module).is_relative_to(site)
    assert Path(scripts) == site / "deltastore" / "migrations"
    assert loaded == "{'x': 1}"
    assert revision == migrate.head_revision()
