"""The C plane kernels against the numpy reference, byte for byte."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltastore import _native
from deltastore.codecs.reference import merge_planes_reference, split_planes_reference

WIDTHS = [1, 2, 3, 4, 8, 16]


@st.composite
def chunks(draw: st.DrawFn) -> tuple[int, bytes, bytes | None]:
    width = draw(st.sampled_from(WIDTHS))
    n = draw(st.integers(0, 5000))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 256, n * width, dtype=np.uint8).tobytes()
    base = (
        rng.integers(0, 256, n * width, dtype=np.uint8).tobytes() if draw(st.booleans()) else None
    )
    return width, src, base


@settings(max_examples=300, deadline=None)
@given(chunks())
def test_split_matches_reference(case: tuple[int, bytes, bytes | None]) -> None:
    width, src, base = case
    dst = bytearray(len(src))
    _native.split_planes(src, dst, width, base)
    assert bytes(dst) == split_planes_reference(src, width, base)


@settings(max_examples=300, deadline=None)
@given(chunks(), st.data())
def test_merge_matches_reference_and_inverts_split(
    case: tuple[int, bytes, bytes | None], data: st.DataObject
) -> None:
    width, src, base = case
    n = len(src) // width
    split = split_planes_reference(src, width, base)
    planes: list[bytes | None] = [split[p * n : (p + 1) * n] for p in range(width)]
    dst = bytearray(len(src))
    _native.merge_planes(planes, dst, width, base)
    assert bytes(dst) == src
    # None stands for an all-zero plane
    zeroed = [None if data.draw(st.booleans()) else p for p in planes]
    _native.merge_planes(zeroed, dst, width, base)
    assert bytes(dst) == merge_planes_reference(zeroed, width, n, base)


@pytest.mark.parametrize("width", [2, 4, 8])
def test_one_mib_chunks_of_floats(width: int) -> None:
    rng = np.random.default_rng(width)
    src = rng.standard_normal((1 << 20) // 8).astype(np.float64).view(np.uint8)
    base = (src.view(np.float64) * 1.0001).view(np.uint8)
    dst = np.empty_like(src)
    _native.split_planes(src, dst, width, base)
    assert dst.tobytes() == split_planes_reference(src.data, width, base.data)
    n = len(src) // width
    out = np.empty_like(src)
    _native.merge_planes([dst[p * n : (p + 1) * n] for p in range(width)], out, width, base)
    assert np.array_equal(out, src)


def test_memoryview_slices_with_offsets() -> None:
    raw = bytearray(range(256)) * 4
    src = memoryview(raw)[8:520]
    dst = bytearray(1024)
    _native.split_planes(src, memoryview(dst)[100:612], 4)
    assert bytes(dst[100:612]) == split_planes_reference(bytes(src), 4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: _native.split_planes(b"abc", bytearray(3), 2), "not a multiple of width 2"),
        (lambda: _native.split_planes(b"abcd", bytearray(3), 2), "dst length 3 differs"),
        (lambda: _native.split_planes(b"abcd", bytearray(4), 2, b"a"), "base length 1 differs"),
        (lambda: _native.split_planes(b"abcd", b"xxxx", 2), "dst must be a C-contiguous writable"),
        (lambda: _native.split_planes(b"abcd", bytearray(4), 0), "width must be between 1 and 64"),
        (lambda: _native.split_planes(b"ab", bytearray(2), 65), "width must be between 1 and 64"),
        (lambda: _native.split_planes(1, bytearray(4), 2), "src must be a C-contiguous buffer"),
        (lambda: _native.merge_planes([b"a"], bytearray(2), 2), "expected 2 planes, got 1"),
        (lambda: _native.merge_planes([b"a", b"bc"], bytearray(2), 2), "plane 1 has 2 bytes"),
        (lambda: _native.merge_planes([b"a", 3], bytearray(2), 2), "each plane must be a C-cont"),
        (lambda: _native.merge_planes([b"a"], bytearray(3), 2), "dst length 3 is not a multiple"),
        (
            lambda: _native.merge_planes([b"a", b"b"], bytearray(2), 2, b"abc"),
            "base length 3 differs",
        ),
        (
            lambda: _native.split_planes(np.zeros((4, 4), np.uint8)[:, ::2], bytearray(8), 2),
            "src must be a C-contiguous buffer",
        ),
    ],
)
def test_bad_arguments_raise_value_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_merge_rejects_a_non_sequence() -> None:
    with pytest.raises(TypeError, match="planes must be a sequence"):
        _native.merge_planes(7, bytearray(2), 2)  # type: ignore[arg-type]


def test_kernels_release_the_gil() -> None:
    """While one thread is inside a long split, this thread must keep running Python.

    With the GIL held for the whole kernel (~0.1-0.5 s here), this loop would
    stall for that long; released, its longest pause is the scheduler's.
    """
    src = np.random.default_rng(0).integers(0, 256, 256 << 20, dtype=np.uint8)
    dst = np.empty_like(src)
    start = time.perf_counter()
    _native.split_planes(src, dst, 8)
    kernel_seconds = time.perf_counter() - start
    started = threading.Event()

    def work() -> None:
        started.set()
        _native.split_planes(src, dst, 8)

    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    longest_pause = 0.0
    last = time.perf_counter()
    while worker.is_alive():
        now = time.perf_counter()
        longest_pause = max(longest_pause, now - last)
        last = now
    worker.join()
    assert longest_pause < kernel_seconds / 2
