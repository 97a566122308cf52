"""Pure-numpy reference of the native plane kernels (``native/planes.c``).

It exists so that tests can check the C kernels byte for byte against code
simple enough to be right by inspection: a reshape, a transpose and an XOR,
with none of the kernels' SIMD steps, tails and blocks.  The codecs never call
it: at widths 2 to 16 the C split is 4-10x faster (benchmarks/bench_planes.py)
and needs no temporary arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np

#: The buffers ``np.frombuffer`` is typed to accept; the tests pass nothing else.
BytesLike: TypeAlias = bytes | bytearray | memoryview | np.ndarray[Any, Any]


def split_planes_reference(src: BytesLike, width: int, base: BytesLike | None = None) -> bytes:
    """XOR ``src`` with ``base`` (if given), then split it into ``width`` byte planes.

    With ``n = len(src) // width``, ``result[p*n + i] == src[i*width + p] ^ base[i*width + p]``:
    plane ``p`` holds byte ``p`` of every element.
    """
    data = np.frombuffer(src, dtype=np.uint8)
    if base is not None:
        data = data ^ np.frombuffer(base, dtype=np.uint8)
    planes: np.ndarray[Any, np.dtype[np.uint8]] = data.reshape(-1, width).T
    return planes.tobytes()


def merge_planes_reference(
    planes: Sequence[BytesLike | None],
    width: int,
    base: BytesLike | None = None,
    *,
    n_elems: int | None = None,
) -> bytes:
    """Inverse of :func:`split_planes_reference`; a ``None`` plane is all zeros.

    ``result[i*width + p] == planes[p][i] ^ base[i*width + p]``.  The element
    count comes from the planes or from ``base``; ``n_elems`` is needed only
    when every plane is ``None`` and there is no base.
    """
    if len(planes) != width:
        raise ValueError(f"expected {width} planes, got {len(planes)}")
    present = [np.frombuffer(plane, dtype=np.uint8) for plane in planes if plane is not None]
    if present:
        n_elems = present[0].size
    elif base is not None:
        n_elems = np.frombuffer(base, dtype=np.uint8).size // width
    elif n_elems is None:
        raise ValueError("every plane is None and there is no base: pass n_elems")
    out = np.zeros((n_elems, width), dtype=np.uint8)
    for p, plane in enumerate(planes):
        if plane is not None:
            out[:, p] = np.frombuffer(plane, dtype=np.uint8)
    if base is not None:
        out ^= np.frombuffer(base, dtype=np.uint8).reshape(n_elems, width)
    return out.tobytes()


def zigzag_diff_reference(src: BytesLike, base: BytesLike, width: int) -> bytes:
    """Zigzag-coded difference of little-endian unsigned ``width``-byte elements (wrapping)."""
    unsigned = np.dtype(f"<u{width}")
    signed = np.dtype(f"<i{width}")
    diff = np.frombuffer(src, unsigned) - np.frombuffer(base, unsigned)  # wraps
    d = diff.view(signed)
    zigzag = (d.astype(unsigned) << unsigned.type(1)) ^ (d >> (8 * width - 1)).astype(unsigned)
    return bytes(zigzag.astype(unsigned).tobytes())


def zigzag_undiff_reference(diff: BytesLike, base: BytesLike, width: int) -> bytes:
    """Inverse of :func:`zigzag_diff_reference`."""
    unsigned = np.dtype(f"<u{width}")
    z = np.frombuffer(diff, unsigned)
    one = unsigned.type(1)
    d = (z >> one) ^ (np.zeros_like(z) - (z & one))  # wraps
    return bytes((np.frombuffer(base, unsigned) + d).astype(unsigned).tobytes())
