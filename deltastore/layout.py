"""The store directory: what lies where, the format-version file and the locks.

::

    STORE/
      FORMAT            {"deltastore_store_format": 2}; written last by init
      catalog.sqlite    the catalog (plus SQLite's -wal and -shm files)
      objects/ab/cdef…  one file per object, named by its id
      lock              flock()ed while the schema or FORMAT is upgraded
      gate.lock         flock()ed briefly by writers (shared) and by gc (exclusive)
      write.lock        flock()ed shared by every writer for its whole write, exclusive by gc

Why writers and gc lock each other out: a save writes its objects first and
names them in the catalog last (docs/format.md §8).  In between, its objects
are on disk and in no catalog row, exactly like a dead save's leftovers; a
gc that swept then would delete them and the save would commit rows naming
missing files.  So every writer (a save, and every change that writes a
journal record first) holds ``write.lock`` shared from its first object to
its commit, and gc holds it exclusive from its mark to the end of its sweep.

The gate keeps gc from starving: with the write lock alone, overlapping saves
of several processes could keep it shared forever.  A writer takes the gate
shared, then the write lock shared, and lets the gate go at once; gc takes
the gate exclusive first, so once gc is waiting no new writer gets in, and
gc runs as soon as the writers already inside have committed.

These are flock() locks: released by the kernel when their holder dies, and
only as good as the file system's flock (local disks; NFS emulates it).
Readers take none: gc deletes only what no checkpoint in the catalog needs,
so a load fails (on a missing object, never with wrong bytes) only when the
very checkpoint it reads is forgotten and collected while it reads.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deltastore.durable import fsync_dir
from deltastore.errors import SchemaVersionError, StoreExistsError, StoreNotFoundError

#: 2 added zigzag-difference deltas (object transform 3) to version 1; see docs/format.md.
STORE_FORMAT = 2
FORMAT_FILE = "FORMAT"
CATALOG_FILE = "catalog.sqlite"
OBJECTS_DIR = "objects"
LOCK_FILE = "lock"
GATE_FILE = "gate.lock"
WRITE_LOCK_FILE = "write.lock"


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
    fsync_dir(root)


@contextmanager
def store_lock(root: Path) -> Iterator[None]:
    """An exclusive, process-wide lock on the store (released when the holder dies)."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_lock(root: Path, name: str) -> int:
    return os.open(root / name, os.O_RDWR | os.O_CREAT, 0o644)


@contextmanager
def writing(root: Path) -> Iterator[None]:
    """Held (shared) by a writer from its first object write to its catalog commit.

    Many writers hold it at once; gc waits until all of them have committed.
    Not reentrant: a holder that asks again while gc waits would deadlock,
    so callers take it once, around the whole write.
    """
    gate = _open_lock(root, GATE_FILE)
    try:
        fcntl.flock(gate, fcntl.LOCK_SH)
        fd = _open_lock(root, WRITE_LOCK_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(gate)  # the gate is only passed through
    try:
        yield
    finally:
        os.close(fd)


@contextmanager
def collecting(root: Path) -> Iterator[None]:
    """Held (exclusive) by gc from its mark to the end of its sweep: no writer is inside."""
    gate = _open_lock(root, GATE_FILE)
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)  # from here on, new writers wait at the gate
        fd = _open_lock(root, WRITE_LOCK_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the writers already inside have committed
            yield
        finally:
            os.close(fd)
    finally:
        os.close(gate)
