"""Pure-numpy reference of the native plane kernels (native/planes.c).

It exists so that tests can check the C code byte for byte against an
implementation simple enough to be obviously right; it is never used on the
hot path (it is ~20x slower).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BytesLike = bytes | bytearray | memoryview


def split_planes_reference(src: BytesLike, width: int, base: BytesLike | None = None) -> bytes:
    """dst[p*n + i] = src[i*width + p] ^ base[i*width + p]."""
    data = np.frombuffer(src, dtype=np.uint8)
    if base is not None:
        data = data ^ np.frombuffer(base, dtype=np.uint8)
    return data.reshape(-1, width).T.tobytes()


def merge_planes_reference(
    planes: Sequence[BytesLike | None], width: int, n_elems: int, base: BytesLike | None = None
) -> bytes:
    """Inverse of :func:`split_planes_reference`; a None plane is all zeros."""
    out = np.zeros((n_elems, width), dtype=np.uint8)
    for p, plane in enumerate(planes):
        if plane is not None:
            out[:, p] = np.frombuffer(plane, dtype=np.uint8)
    if base is not None:
        out ^= np.frombuffer(base, dtype=np.uint8).reshape(-1, width)
    return out.tobytes()
