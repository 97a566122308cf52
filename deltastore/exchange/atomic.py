"""Files written whole or not at all: temp file in the same folder, fsync, rename, fsync.

An export interrupted half-way (a full disk, a missing ref found late, Ctrl-C)
must not leave a truncated ``model.safetensors`` that another tool would load
or choke on; the rename makes the new file appear only once it is complete and
durable, and an older file of that name stays as it was until then.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from deltastore.durable import fsync_dir


@contextmanager
def atomic_file(target: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``target`` when the block ends without an error."""
    folder = target.parent
    tmp = folder / f".{target.name}.{secrets.token_hex(6)}.tmp"
    # os.open with 0o666 lets the umask decide the mode, as for any file a user writes
    # (tempfile.mkstemp would make it 0600).
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:  # name the file asked for, not the temp file nobody asked for
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(folder)  # the new name is durable too
