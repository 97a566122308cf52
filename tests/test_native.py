"""The C plane kernels (``deltastore._native``) against the numpy reference, byte for byte.

Widths 2, 4, 8 and 16 take SIMD paths that work 16 or 32 elements at a time and leave
tails to scalar loops; merge works in blocks of 256 to 4096 elements; other widths
take the portable loops.  Lengths are drawn to straddle all of those edges.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltastore import _native
from deltastore.codecs.reference import (
    merge_planes_reference,
    split_planes_reference,
    zigzag_diff_reference,
    zigzag_undiff_reference,
)

#: SIMD widths, width 1 (a copy or an XOR) and widths only the portable loops handle.
WIDTHS = [1, 2, 3, 4, 5, 8, 16, 24, 64]
MIB = 1 << 20

Chunk = tuple[int, bytes, bytes | None]


def _random_bytes(rng: np.random.Generator, size: int) -> bytes:
    return rng.integers(0, 256, size, dtype=np.uint8).tobytes()


@st.composite
def chunks(draw: st.DrawFn) -> Chunk:
    """A width, a chunk of whole elements and maybe a base of the same length."""
    width = draw(st.sampled_from(WIDTHS))
    n_elems = draw(st.integers(0, 5000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    src = _random_bytes(rng, n_elems * width)
    base = _random_bytes(rng, len(src)) if draw(st.booleans()) else None
    return width, src, base


def _planes_of(split: bytes, width: int) -> list[bytes | None]:
    n_elems = len(split) // width
    return [split[p * n_elems : (p + 1) * n_elems] for p in range(width)]


@settings(max_examples=150, deadline=None)
@given(chunks())
def test_split_matches_reference(chunk: Chunk) -> None:
    width, src, base = chunk
    dst = bytearray(len(src))
    _native.split_planes(src, dst, width, base)
    assert bytes(dst) == split_planes_reference(src, width, base)


@settings(max_examples=150, deadline=None)
@given(chunks(), st.data())
def test_merge_inverts_split_and_matches_reference_with_absent_planes(
    chunk: Chunk, data: st.DataObject
) -> None:
    width, src, base = chunk
    planes = _planes_of(split_planes_reference(src, width, base), width)
    dst = bytearray(len(src))
    _native.merge_planes(planes, dst, width, base)
    assert bytes(dst) == src

    absent = [None if data.draw(st.booleans()) else plane for plane in planes]
    _native.merge_planes(absent, dst, width, base)
    expected = merge_planes_reference(absent, width, base, n_elems=len(src) // width)
    assert bytes(dst) == expected


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([2, 4, 8]),
    st.integers(0, 3000),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["random", "close", "equal"]),
)
def test_zigzag_difference_matches_reference_and_inverts(
    width: int, n_elems: int, seed: int, kind: str
) -> None:
    rng = np.random.default_rng(seed)
    src = _random_bytes(rng, n_elems * width)
    if kind == "random":
        base = _random_bytes(rng, len(src))
    elif kind == "close":  # as a slightly updated float: a small integer apart, either way
        steps = rng.integers(-300, 300, n_elems).astype(f"<i{width}")
        base = (np.frombuffer(src, f"<u{width}") + steps.view(f"<u{width}")).tobytes()
    else:
        base = src
    diff = bytearray(len(src))
    _native.zigzag_diff(src, base, diff, width)
    assert bytes(diff) == zigzag_diff_reference(src, base, width)
    if kind == "equal":
        assert not any(diff)
    if kind == "close" and n_elems:  # small differences leave the high bytes zero
        assert max(np.frombuffer(diff, f"<u{width}")) <= 600
    out = bytearray(len(src))
    _native.zigzag_undiff(diff, base, out, width)
    assert bytes(out) == src == zigzag_undiff_reference(diff, base, width)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: _native.zigzag_diff(b"ab", b"ab", bytearray(2), 3), "width must be 2, 4 or 8"),
        (lambda: _native.zigzag_diff(b"abc", b"abc", bytearray(3), 2), "not a multiple of width"),
        (lambda: _native.zigzag_diff(b"ab", b"abcd", bytearray(2), 2), "differ in length"),
        (lambda: _native.zigzag_undiff(b"ab", b"ab", b"xy", 2), "must be writable"),
    ],
)
def test_zigzag_bad_arguments(call: Callable[[], None], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_zigzag_refuses_overlapping_output() -> None:
    buf = bytearray(16)
    with pytest.raises(ValueError, match="overlaps"):
        _native.zigzag_diff(memoryview(buf), b"\0" * 16, memoryview(buf), 4)


@pytest.mark.parametrize("width", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("with_base", [False, True], ids=["plain", "xor"])
def test_one_mib_chunk_of_floats_round_trips(width: int, with_base: bool) -> None:
    """The chunk size the store uses, float64 weights and a slightly trained base."""
    rng = np.random.default_rng(width)
    weights = rng.standard_normal(MIB // 8)
    src = weights.view(np.uint8)
    base = (weights * 0.999).view(np.uint8) if with_base else None
    split = np.empty_like(src)
    _native.split_planes(src, split, width, base)
    assert split.tobytes() == split_planes_reference(src, width, base)
    n_elems = MIB // width
    merged = np.empty_like(src)
    _native.merge_planes(
        [split[p * n_elems : (p + 1) * n_elems] for p in range(width)], merged, width, base
    )
    assert np.array_equal(merged, src)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("n_elems", [255, 256, 257, 1023, 1025, 2049, 4095, 4096, 4097, 8192 + 47])
def test_merge_block_edges(width: int, n_elems: int) -> None:
    """Merge switches to a new zero-plane block every 256 to 4096 elements (by width)."""
    rng = np.random.default_rng(n_elems * 100 + width)
    src = _random_bytes(rng, n_elems * width)
    base = _random_bytes(rng, len(src))
    split = bytearray(len(src))
    _native.split_planes(src, split, width, base)
    assert bytes(split) == split_planes_reference(src, width, base)
    planes = _planes_of(bytes(split), width)
    planes[width // 2] = None
    merged = bytearray(len(src))
    _native.merge_planes(planes, merged, width, base)
    assert bytes(merged) == merge_planes_reference(planes, width, base)


@pytest.mark.parametrize("with_base", [False, True], ids=["plain", "xor"])
def test_merge_of_absent_planes_is_the_base_or_zeros(with_base: bool) -> None:
    base = bytes(range(256)) * 4 if with_base else None
    dst = bytearray(b"\xff" * 1024)
    _native.merge_planes((None,) * 4, dst, 4, base)
    assert bytes(dst) == (base if base is not None else bytes(1024))


def test_numpy_arrays_and_unaligned_memoryview_slices() -> None:
    """Any C-contiguous buffer works, at any address: the kernels load unaligned."""
    rng = np.random.default_rng(7)
    src = rng.standard_normal((64, 33)).astype(np.float32)  # 2-D, itemsize 4
    raw = bytearray(_random_bytes(rng, src.nbytes + 3))
    base = memoryview(raw)[3:]  # odd address
    out = bytearray(src.nbytes + 1)
    dst = memoryview(out)[1:]
    _native.split_planes(src, dst, 4, base=base)
    assert bytes(dst) == split_planes_reference(src, 4, base)

    n_elems = src.nbytes // 4
    planes = [np.frombuffer(dst, np.uint8)[p * n_elems : (p + 1) * n_elems] for p in range(4)]
    merged = np.empty_like(src)
    _native.merge_planes(planes, merged, 4, base)
    assert np.array_equal(merged, src)


def test_keywords_and_adjacent_buffers_are_accepted() -> None:
    buf = bytearray(range(16))
    src, dst = memoryview(buf)[:8], memoryview(buf)[8:]  # touching, not overlapping
    _native.split_planes(src=src, dst=dst, width=2, base=None)
    assert bytes(dst) == split_planes_reference(bytes(range(8)), 2)


def _strided() -> np.ndarray:
    return np.zeros((4, 4), np.uint8)[:, ::2]


def _released() -> memoryview:
    view = memoryview(b"abcd")
    view.release()
    return view


#: Memory for the calls whose dst overlaps an input.
_overlap = bytearray(12)

BAD_CALLS: list[tuple[Callable[[], None], type[Exception], str]] = [
    (
        lambda: _native.split_planes(b"ab", bytearray(2), 0),
        ValueError,
        "width must be between 1 and 64, not 0",
    ),
    (
        lambda: _native.merge_planes([], bytearray(65), 65),
        ValueError,
        "width must be between 1 and 64, not 65",
    ),
    (
        lambda: _native.split_planes(1, bytearray(4), 2),  # type: ignore[arg-type]
        TypeError,
        "src must be a bytes-like object, not int",
    ),
    (
        lambda: _native.split_planes(b"abcd", b"xxxx", 2),
        TypeError,
        "dst must be writable, not a read-only bytes",
    ),
    (
        lambda: _native.split_planes(_strided(), bytearray(8), 2),
        ValueError,
        "src must be C-contiguous",
    ),
    (
        lambda: _native.split_planes(_released(), bytearray(4), 2),
        ValueError,
        "operation forbidden on released memoryview object",
    ),
    (
        lambda: _native.split_planes(b"abc", bytearray(3), 2),
        ValueError,
        "src length 3 is not a multiple of width 2",
    ),
    (
        lambda: _native.split_planes(b"abcd", bytearray(3), 2),
        ValueError,
        "dst length 3 differs from src length 4",
    ),
    (
        lambda: _native.split_planes(b"abcd", bytearray(4), 2, b"a"),
        ValueError,
        "base length 1 differs from src length 4",
    ),
    (
        lambda: _native.split_planes(memoryview(_overlap)[:8], memoryview(_overlap)[4:], 2),
        ValueError,
        "dst overlaps src",
    ),
    (
        lambda: _native.split_planes(
            b"abcdefgh", memoryview(_overlap)[:8], 2, memoryview(_overlap)[4:]
        ),
        ValueError,
        "dst overlaps base",
    ),
    (
        lambda: _native.merge_planes([b"a"], bytearray(3), 2),
        ValueError,
        "dst length 3 is not a multiple of width 2",
    ),
    (
        lambda: _native.merge_planes([b"a", b"b"], bytearray(2), 2, b"abc"),
        ValueError,
        "base length 3 differs from dst length 2",
    ),
    (
        lambda: _native.merge_planes(
            [b"a", b"b"], memoryview(_overlap)[:2], 2, memoryview(_overlap)[1:3]
        ),
        ValueError,
        "dst overlaps base",
    ),
    (
        lambda: _native.merge_planes(7, bytearray(2), 2),  # type: ignore[arg-type]
        TypeError,
        "planes must be a sequence, not int",
    ),
    (
        lambda: _native.merge_planes([b"a"], bytearray(2), 2),
        ValueError,
        "expected 2 planes for width 2, got 1",
    ),
    (
        lambda: _native.merge_planes([b"a", 3], bytearray(2), 2),  # type: ignore[list-item]
        TypeError,
        "plane 1 must be a bytes-like object, not int",
    ),
    (
        lambda: _native.merge_planes([_strided(), None], bytearray(16), 2),
        ValueError,
        "plane 0 must be C-contiguous",
    ),
    (
        lambda: _native.merge_planes([b"a", b"bc"], bytearray(2), 2),
        ValueError,
        "plane 1 has 2 bytes, expected 1 (len(dst) // width)",
    ),
    (
        lambda: _native.merge_planes(
            [None, memoryview(_overlap)[1:2]], memoryview(_overlap)[:2], 2
        ),
        ValueError,
        "dst overlaps plane 1",
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_CALLS, ids=[m for _, _, m in BAD_CALLS])
def test_bad_arguments_raise_with_a_precise_message(
    call: Callable[[], None], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: merge_planes_reference([b"a"], 2), "expected 2 planes, got 1"),
        (
            lambda: merge_planes_reference([None, None], 2),
            "every plane is None and there is no base: pass n_elems",
        ),
    ],
)
def test_reference_rejects_what_it_cannot_merge(call: Callable[[], bytes], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


def test_kernels_release_the_gil() -> None:
    """This thread keeps running Python code while a kernel runs in another thread.

    A kernel holding the GIL would stop this thread for its whole run (~50 ms here),
    leaving a gap at least that long between two of its time stamps; released, the
    longest gap is a switch interval (0.1 ms here) plus scheduling noise, ~10 ms on
    a loaded machine.  Such a machine can stall this thread longer now and then, so
    up to five runs are tried.
    """
    width = 64  # the slowest kernel: merge through the portable loops, ~1 GB/s
    dst = np.ones(48 * MIB, dtype=np.uint8)  # the bytes do not matter, the time does
    planes = list(np.ones((width, len(dst) // width), dtype=np.uint8))
    kernel_seconds = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        _native.merge_planes(planes, dst, width)
        kernel_seconds = min(kernel_seconds, time.perf_counter() - start)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        for _ in range(5):
            worker = threading.Thread(target=_native.merge_planes, args=(planes, dst, width))
            stamps = [time.perf_counter()]
            worker.start()
            while worker.is_alive():
                stamps.append(time.perf_counter())
            worker.join()
            longest_gap = float(np.diff(stamps).max())
            if longest_gap < kernel_seconds / 2:
                return
    finally:
        sys.setswitchinterval(interval)
    pytest.fail(f"this thread stalled {longest_gap:.4f} s during a {kernel_seconds:.4f} s kernel")
