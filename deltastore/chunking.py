"""Cutting an entry's bytes into chunks, and choosing how they are split into planes."""

from __future__ import annotations

from collections.abc import Iterator

#: 4 MiB: a multiple of every element size, large enough that per-chunk costs
#: (a file to create and fsync, a catalog row, a task) stay small against the
#: work, small enough that both cores stay busy on a 100 MB model.  1 MiB
#: chunks made a first save ~1.5x slower on ext4 (docs/decisions.md).
DEFAULT_CHUNK_SIZE = 4 << 20


def chunk_bounds(nbytes: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of each chunk of an entry; an empty entry has no chunks."""
    for start in range(0, nbytes, chunk_size):
        yield start, min(start + chunk_size, nbytes)


def chunk_count(nbytes: int, chunk_size: int) -> int:
    return -(-nbytes // chunk_size)


def plane_width(dtype: str, element_size: int) -> int:
    """Bytes per element for the plane split.

    A complex number is two floats: splitting by the component width puts both
    exponent bytes in the same (compressible) plane.
    """
    if "complex" in dtype or dtype.lstrip("<>=|").startswith("c"):
        return max(1, element_size // 2)
    return element_size
