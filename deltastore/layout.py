"""The store directory: what lies where, the format-version file and the lock.

::

    STORE/
      FORMAT            {"deltastore_store_format": 2}; written last by init
      catalog.sqlite    the catalog (plus SQLite's -wal and -shm files)
      objects/ab/cdef…  one file per object, named by its id
      lock              flock()ed while the schema is upgraded (and by gc)
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deltastore.errors import SchemaVersionError, StoreExistsError, StoreNotFoundError

#: 2 added zigzag-difference deltas (object transform 3) to version 1; see docs/format.md.
STORE_FORMAT = 2
FORMAT_FILE = "FORMAT"
CATALOG_FILE = "catalog.sqlite"
OBJECTS_DIR = "objects"
LOCK_FILE = "lock"


def catalog_url(root: Path) -> str:
    return f"sqlite:///{root / CATALOG_FILE}"


def is_store(root: Path) -> bool:
    return (root / FORMAT_FILE).is_file()


def check_format(root: Path) -> int:
    """The store's format version; StoreNotFoundError or SchemaVersionError if we cannot read it."""
    try:
        text = (root / FORMAT_FILE).read_text()
    except (FileNotFoundError, NotADirectoryError):
        raise StoreNotFoundError(str(root)) from None
    try:
        version = json.loads(text)["deltastore_store_format"]
    except (ValueError, KeyError, TypeError):
        raise SchemaVersionError("store format", text.strip()[:40], f"{STORE_FORMAT}") from None
    if not isinstance(version, int) or version > STORE_FORMAT:
        raise SchemaVersionError("store format", str(version), f"up to {STORE_FORMAT}")
    return version


def upgrade_format(root: Path) -> None:
    """Raise an older store's FORMAT to this version's, before anything newer is written.

    Readers never call this: opening or loading leaves a store as it is, so an
    older deltastore can still read it until this one writes to it.
    """
    if check_format(root) >= STORE_FORMAT:
        return
    with store_lock(root):
        if check_format(root) < STORE_FORMAT:
            write_format(root)


def prepare_new(root: Path) -> None:
    """Check that ``root`` may become a store and create its folder."""
    if root.exists() and not root.is_dir():
        raise StoreExistsError(str(root), "it is a file")
    if root.is_dir() and any(p.name != LOCK_FILE for p in root.iterdir()) and not is_store(root):
        raise StoreExistsError(str(root), "the folder is not empty and is not a store")
    root.mkdir(parents=True, exist_ok=True)


def write_format(root: Path) -> None:
    """Mark the store complete: the last step of init, atomic and durable."""
    tmp = root / f".{FORMAT_FILE}.tmp"
    with tmp.open("w") as f:
        json.dump({"deltastore_store_format": STORE_FORMAT}, f)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(root / FORMAT_FILE)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def store_lock(root: Path) -> Iterator[None]:
    """An exclusive, process-wide lock on the store (released when the holder dies)."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
