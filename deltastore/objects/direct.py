"""Durable writes of large objects with O_DIRECT: to the disk, past the page cache.

A durable object must reach the disk before the save commits, so a buffered
write copies its bytes into the page cache only for fsync to write them out at
once.  On this project's machines that copy, and the zeroing of the fresh
page-cache memory it lands in, cost as much CPU as hashing and encoding the
bytes, and buffered write + fsync moved ~0.6 GB/s where O_DIRECT + fsync moved
~1.1 GB/s (100 files of 4 MiB, 2-4 threads).  O_DIRECT leaves the CPU to the
encoders and the transfer to the device.

O_DIRECT wants the buffer, the file offset and the length aligned to the
device's logical block.  An object is copied into a recycled aligned buffer;
its whole blocks are written direct and its tail (under :data:`ALIGN` bytes)
buffered, before the fsync (:func:`write`).  A file system that refuses O_DIRECT (tmpfs before Linux
6.6, some network and FUSE file systems) answers EINVAL; the caller then
writes that object buffered and stops trying (:class:`DirectWrites`).

What is written this way is not in the page cache: the first read of it goes to
the disk.  A training loop never reads back what it saved (its delta bases are
kept in memory), and a restore's later reads find the page cache warm.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Sequence

import numpy as np

from deltastore.memory import HUGE_PAGE, huge_page_buffer
from deltastore.objects.base import Buffer

#: The open flag, where the platform has it (Linux, FreeBSD); elsewhere direct writes are off.
O_DIRECT: int = getattr(os, "O_DIRECT", 0)
#: Alignment of buffer, offset and length: the largest logical block size in common use.
ALIGN = 4096
#: Smaller objects are written buffered: the padding to a block and the extra open
#: flag cost more than the copy saves on a few KiB, and most of an object store's
#: files that small are norms, biases and manifests.
MIN_BYTES = 256 << 10
#: Direct writes in flight at most, each holding one aligned buffer (memory bound:
#: this many objects, ~4 MiB each at the default chunk size).
IN_FLIGHT = 8


class DirectWrites:
    """Aligned buffers for direct writes, recycled, and whether the file system takes them.

    Buffers are recycled because fresh memory page-faults on first touch at about
    the cost of the copy itself (deltastore.memory).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and O_DIRECT != 0
        self._free: list[memoryview] = []
        self._lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(IN_FLIGHT)

    def wanted(self, size: int) -> bool:
        return self.enabled and size >= MIN_BYTES

    def refused(self) -> None:
        """The file system answered EINVAL: write buffered from now on."""
        self.enabled = False

    def fill(self, parts: Sequence[Buffer], size: int) -> memoryview:
        """An aligned buffer holding ``parts`` back to back in its first ``size`` bytes.

        The buffer may be longer; write only ``size`` bytes of it.  The caller holds
        one of :attr:`slots` and gives the buffer back with :meth:`release`.  The copy
        runs in numpy, without the GIL.
        """
        with self._lock:  # the smallest that fits (by position: views compare by content)
            fitting = [i for i, b in enumerate(self._free) if len(b) >= size]
            best = min(fitting, key=lambda i: len(self._free[i])) if fitting else None
            buffer = self._free.pop(best) if best is not None else None
        if buffer is None:
            buffer = huge_page_buffer(-(-size // HUGE_PAGE) * HUGE_PAGE)
        target = np.frombuffer(buffer, np.uint8)
        offset = 0
        for part in parts:
            source = np.frombuffer(part, np.uint8)
            target[offset : offset + len(source)] = source
            offset += len(source)
        return buffer

    def release(self, buffer: memoryview) -> None:
        """Keep ``buffer`` for a later object; at most :data:`IN_FLIGHT` are kept, the largest."""
        with self._lock:
            self._free.append(buffer)
            if len(self._free) > IN_FLIGHT:
                del self._free[min(range(len(self._free)), key=lambda i: len(self._free[i]))]


def write(fd: int, buffer: memoryview, size: int) -> None:
    """Write the first ``size`` bytes of ``buffer`` (aligned, from :meth:`DirectWrites.fill`)
    at offset 0 of ``fd``, opened with O_DIRECT: the whole blocks direct, the tail buffered.

    The tail is not written padded and cut back: ext4 zeroes the rest of the last block on
    a truncate, which reads that block back from the disk first (~1-2 ms a file here).
    Linux lets O_DIRECT be cleared on an open file, so the tail goes through the page cache
    into a block of its own, and the caller's fsync writes it.  Raises OSError as the system
    does: EINVAL where direct I/O is refused.
    """
    whole = size - size % ALIGN
    done = 0
    while done < whole:
        n = os.pwritev(fd, [buffer[done:whole]], done)
        if n <= 0 or n % ALIGN:
            raise OSError(errno.EIO, "direct write stopped short of the object's end")
        done += n
    if whole < size:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~O_DIRECT)
        tail = buffer[whole:size]
        while done < size:
            n = os.pwrite(fd, tail[done - whole :], done)
            if n <= 0:
                raise OSError(errno.EIO, "write stopped short of the object's end")
            done += n
