"""Objects as files in a directory: ``objects/ab/cdef...`` (two-level fan-out).

Each write is atomic and durable: a temporary file in the target directory,
write, fsync, rename; the directories that received new names are fsynced
once in :meth:`flush`, the barrier the store crosses before it commits a
checkpoint to the catalog.  A crash leaves at worst a stray ``.tmp-*`` file
or an unreferenced object, both removed by gc, never a partial object under a
real id.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from deltastore.errors import CorruptObjectError, StorageError
from deltastore.ids import is_full_id
from deltastore.objects.base import ObjectStore

FANOUT_DIRS = [f"{i:02x}" for i in range(256)]
TMP_PREFIX = ".tmp-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalObjectStore(ObjectStore):
    """A directory of object files.  Safe for many threads and processes at once."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = root
        self.durable = durable
        self._dirty: set[Path] = set()
        self._lock = threading.Lock()

    @staticmethod
    def create(root: Path) -> None:
        """Lay out an empty object directory with all fan-out folders made durable."""
        root.mkdir(parents=True, exist_ok=True)
        for name in FANOUT_DIRS:
            (root / name).mkdir(exist_ok=True)
        _fsync_dir(root)

    def path(self, object_id: str) -> Path:
        if not is_full_id(object_id):
            raise ValueError(f"not an object id: {object_id!r}")
        return self.root / object_id[:2] / object_id[2:]

    def get(self, object_id: str) -> bytes:
        try:
            return self.path(object_id).read_bytes()
        except FileNotFoundError:
            raise CorruptObjectError(object_id, "object is missing") from None

    def exists(self, object_id: str) -> bool:
        return self.path(object_id).exists()

    def size(self, object_id: str) -> int:
        try:
            return self.path(object_id).stat().st_size
        except FileNotFoundError:
            raise CorruptObjectError(object_id, "object is missing") from None

    def put_if_absent(self, object_id: str, data: bytes) -> int:
        target = self.path(object_id)
        if target.exists():
            return 0
        tmp = target.parent / f"{TMP_PREFIX}{target.name[:16]}-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            # Same content under the same name: a concurrent writer's rename is harmless.
            tmp.replace(target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno == errno.ENOENT and not target.parent.exists():
                raise StorageError(f"write object {object_id[:16]} (no fan-out folder)", exc) from exc
            raise StorageError(f"write object {object_id[:16]} to {self.root}", exc) from exc
        with self._lock:
            self._dirty.add(target.parent)
        return len(data)

    def delete(self, object_id: str) -> None:
        self.path(object_id).unlink(missing_ok=True)

    def iter_ids(self) -> Iterator[str]:
        for name in FANOUT_DIRS:
            folder = self.root / name
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                object_id = name + entry.name
                if is_full_id(object_id):
                    yield object_id

    def flush(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        if not self.durable:
            return
        try:
            for folder in sorted(dirty):
                _fsync_dir(folder)
        except OSError as exc:
            raise StorageError(f"sync object folders in {self.root}", exc) from exc
