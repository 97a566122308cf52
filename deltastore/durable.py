"""fsync by path: a file's bytes, or a folder's names (a new or renamed file is durable only
once the folder that holds its name is).  A leaf module: imports nothing from deltastore."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the names in folder ``path`` durable (after a create, link, rename or unlink)."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def fsync_file(path: Path) -> None:
    """Make the bytes of file ``path`` durable."""
    _fsync(path, os.O_RDONLY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
