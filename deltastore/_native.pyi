"""Typed stub of the C extension (native/nativemodule.c)."""

from collections.abc import Sequence

from typing_extensions import Buffer

def split_planes(src: Buffer, dst: Buffer, width: int, base: Buffer | None = None) -> None: ...
def merge_planes(
    planes: Sequence[Buffer | None], dst: Buffer, width: int, base: Buffer | None = None
) -> None: ...
