"""Typed stub of the C extension ``deltastore._native`` (``native/nativemodule.c``).

Buffer arguments take anything with the buffer protocol: bytes, bytearray,
memoryview, numpy arrays, ...  ``typing_extensions.Buffer`` works on every
Python the package supports, because only type checkers read this file and
they ship typing_extensions; numpy declares ``ndarray.__buffer__`` only for
Python >= 3.12, so arrays are named as well.
"""

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
from typing_extensions import Buffer

_BytesLike: TypeAlias = Buffer | np.ndarray[Any, Any]

def split_planes(
    src: _BytesLike, dst: _BytesLike, width: int, base: _BytesLike | None = None
) -> None: ...
def merge_planes(
    planes: Sequence[_BytesLike | None], dst: _BytesLike, width: int, base: _BytesLike | None = None
) -> None: ...
def zigzag_diff(src: _BytesLike, base: _BytesLike, dst: _BytesLike, width: int) -> None: ...
def zigzag_undiff(src: _BytesLike, base: _BytesLike, dst: _BytesLike, width: int) -> None: ...
