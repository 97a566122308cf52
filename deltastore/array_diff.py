"""How much two arrays of one dtype differ, computed from their raw bytes in slices.

``deltastore diff`` works on the entries' little-endian bytes (what
``arrays.to_bytes`` gives for a restored value), so torch and numpy arrays and
every dtype the store keeps (bfloat16, float8, complex32 included) take one
path.  Elements are widened to float64 (complex128, int64/uint64) one slice
of ``SLICE_ELEMENTS`` at a time: a 4 GiB float32 entry never becomes an
8 GiB float64 copy, and a slice's temporaries (~40 MiB) stay in cache-friendly
reach.  Slices are independent, so they run on the store's thread pool (numpy
releases the GIL in its loops) and their partial results combine exactly.

What "changed" means is decided on the bits, not the values: ``-0.0`` vs
``0.0`` is a change, two NaNs with the same payload are not.  An element whose
bits did not change contributes a difference of exactly 0, so NaN and inf
that sit still do not poison the statistics; a NaN that appears (or whose
payload changes) makes ``max_abs``, ``diff_norm`` and ``relative`` NaN, which
is what the user must see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from deltastore import arrays

#: Elements per slice: 1 Mi elements = 8 MiB once widened to float64.
SLICE_ELEMENTS = 1 << 20

FLOAT = "float"
COMPLEX = "complex"
SIGNED = "int"
UNSIGNED = "uint"
BOOL = "bool"

_CATEGORY_OF_NUMPY_KIND = {"f": FLOAT, "c": COMPLEX, "i": SIGNED, "u": UNSIGNED, "b": BOOL}
_WIDE = {FLOAT: np.float64, COMPLEX: np.complex128, SIGNED: np.int64, UNSIGNED: np.uint64}
# torch dtypes numpy reads natively; the others (bfloat16, float8_*, complex32) widen via torch.
_NUMPY_NAMED = frozenset(
    [
        "bool",
        "uint8",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
    ]
)

Bytes = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ElementType:
    """How to read the elements of one dtype out of little-endian bytes."""

    category: str  # FLOAT, COMPLEX, SIGNED, UNSIGNED or BOOL
    size: int  # bytes per element
    numpy_dtype: np.dtype[Any] | None  # little-endian; None for a torch-only dtype
    torch_dtype: Any = None  # the torch.dtype when numpy cannot read it

    @classmethod
    def of(cls, kind: str, dtype: str) -> ElementType:
        """The element type of an entry (its kind and dtype as the catalog records them)."""
        if kind in (arrays.KIND_NUMPY, arrays.KIND_NUMPY_SCALAR) or dtype in _NUMPY_NAMED:
            np_dtype = np.dtype(dtype)
            little = np_dtype.newbyteorder("<") if np_dtype.byteorder == ">" else np_dtype
            return cls(_CATEGORY_OF_NUMPY_KIND[little.kind], little.itemsize, little)
        import torch

        torch_dtype = getattr(torch, dtype)
        category = COMPLEX if torch_dtype.is_complex else FLOAT
        return cls(category, torch_dtype.itemsize, None, torch_dtype)

    def widen(self, raw: Bytes) -> npt.NDArray[Any]:
        """The elements in ``raw`` as float64, complex128, int64 or uint64 (bool stays bool)."""
        if self.numpy_dtype is not None:
            values = raw.view(self.numpy_dtype)
            return values if self.category == BOOL else values.astype(_WIDE[self.category])
        import torch

        if not raw.flags.writeable:  # torch warns on read-only numpy memory
            raw = raw.copy()
        wide = torch.complex128 if self.category == COMPLEX else torch.float64
        result: npt.NDArray[Any] = torch.from_numpy(raw).view(self.torch_dtype).to(wide).numpy()
        return result


@dataclass(frozen=True)
class ArrayDifference:
    """How entry ``a`` became entry ``b`` (same dtype and shape).

    ``changed_elements`` counts elements whose bits differ.  ``max_abs`` is
    the largest ``|b - a|`` (exact for integers; the magnitude for complex;
    None for bool).  ``diff_norm`` is ``‖b - a‖₂`` and ``base_norm`` ``‖a‖₂``
    in float64 (None for integers and bool).  ``relative`` is
    ``diff_norm / base_norm``; when ``‖a‖ = 0`` it is 0.0 if the difference is
    0 too (only signs of zeros changed) and inf otherwise; NaN when either
    norm is NaN (a NaN appeared or changed, or ``a`` holds one).
    """

    element_count: int
    changed_elements: int
    max_abs: float | int | None
    diff_norm: float | None
    base_norm: float | None

    @property
    def changed_fraction(self) -> float:
        return self.changed_elements / self.element_count if self.element_count else 0.0

    @property
    def relative(self) -> float | None:
        if self.diff_norm is None or self.base_norm is None:
            return None
        if math.isnan(self.diff_norm) or math.isnan(self.base_norm):
            return math.nan
        if self.base_norm == 0.0:
            return 0.0 if self.diff_norm == 0.0 else math.inf
        return self.diff_norm / self.base_norm

    def to_json(self) -> dict[str, Any]:
        return {
            "element_count": self.element_count,
            "changed_elements": self.changed_elements,
            "changed_fraction": self.changed_fraction,
            "max_abs": self.max_abs,
            "diff_norm": self.diff_norm,
            "base_norm": self.base_norm,
            "relative": self.relative,
        }


@dataclass(frozen=True)
class _Norm:
    """An L2 norm as ``scale * sqrt(sum_of_squares)``, as LAPACK's dnrm2 keeps it.

    Scaling by the largest magnitude keeps the sum of squares from
    overflowing for float64 values beyond 1e154, and two partial norms
    combine exactly, so slices can be reduced in any grouping.
    """

    scale: float
    sum_of_squares: float

    @classmethod
    def of(cls, magnitudes: npt.NDArray[np.float64]) -> _Norm:
        scale = float(magnitudes.max()) if magnitudes.size else 0.0
        if scale == 0.0 or not math.isfinite(scale):
            return cls(scale, 1.0)
        return cls(scale, float(np.square(magnitudes / scale).sum()))

    def __add__(self, other: _Norm) -> _Norm:
        scale = max(self.scale, other.scale)
        if math.isnan(self.scale) or math.isnan(other.scale):
            return _Norm(math.nan, 1.0)
        if scale == 0.0 or math.isinf(scale):
            return _Norm(scale, 1.0)
        return _Norm(
            scale,
            self.sum_of_squares * (self.scale / scale) ** 2
            + other.sum_of_squares * (other.scale / scale) ** 2,
        )

    @property
    def value(self) -> float:
        return self.scale * math.sqrt(self.sum_of_squares) if self.scale else 0.0


_ZERO_NORM = _Norm(0.0, 1.0)


@dataclass(frozen=True)
class _Partial:
    """One slice's share of an ArrayDifference."""

    changed: int
    max_abs: float | int | None
    diff_norm: _Norm | None
    base_norm: _Norm | None


def _bits_differ(a: Bytes, b: Bytes, size: int) -> npt.NDArray[np.bool_]:
    """Per element: do its bytes differ?  Compared as unsigned words, not bytes (~8x faster)."""
    differ: npt.NDArray[np.bool_]
    if size in (1, 2, 4, 8):
        word = np.dtype(f"<u{size}")
        differ = a.view(word) != b.view(word)
    else:  # complex128: two 8-byte words per element
        differ = (a.view("<u8") != b.view("<u8")).reshape(-1, size // 8).any(axis=1)
    return differ


def _slice_partial(etype: ElementType, a: Bytes, b: Bytes) -> _Partial:
    changed = _bits_differ(a, b, etype.size)
    count = int(np.count_nonzero(changed))
    if etype.category == BOOL:
        return _Partial(count, None, None, None)
    wide_a, wide_b = etype.widen(a), etype.widen(b)
    if etype.category in (SIGNED, UNSIGNED):
        return _Partial(count, _max_abs_int(wide_a, wide_b) if count else 0, None, None)
    with np.errstate(all="ignore"):  # inf - inf and overflow are results here, not faults
        difference = np.where(changed, wide_b - wide_a, 0)
        magnitudes = np.abs(difference)
        base = np.abs(wide_a)
    max_abs = float(magnitudes.max()) if magnitudes.size else 0.0
    return _Partial(count, max_abs, _Norm.of(magnitudes), _Norm.of(base))


def _max_abs_int(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> int:
    """Largest ``|b - a|`` of int64 or uint64 elements, exactly.

    The difference of two 64-bit integers needs 65 bits; in uint64
    arithmetic modulo 2**64 the larger minus the smaller is still exact,
    because the true result is below 2**64.
    """
    unsigned_a, unsigned_b = a.view(np.uint64), b.view(np.uint64)
    distance = np.where(b >= a, unsigned_b - unsigned_a, unsigned_a - unsigned_b)
    return int(distance.max())


def _combine(element_count: int, etype: ElementType, parts: list[_Partial]) -> ArrayDifference:
    changed = sum(p.changed for p in parts)
    if etype.category == BOOL:
        return ArrayDifference(element_count, changed, None, None, None)
    maxima = [p.max_abs for p in parts if p.max_abs is not None]
    max_abs: float | int = 0 if etype.category in (SIGNED, UNSIGNED) else 0.0
    if maxima:
        # NaN must win the maximum (builtin max() drops it depending on order).
        nan = any(isinstance(m, float) and math.isnan(m) for m in maxima)
        max_abs = math.nan if nan else max(maxima)
    if etype.category in (SIGNED, UNSIGNED):
        return ArrayDifference(element_count, changed, max_abs, None, None)
    diff_norm, base_norm = _ZERO_NORM, _ZERO_NORM
    for p in parts:
        assert p.diff_norm is not None and p.base_norm is not None  # float slices have norms
        diff_norm, base_norm = diff_norm + p.diff_norm, base_norm + p.base_norm
    return ArrayDifference(element_count, changed, max_abs, diff_norm.value, base_norm.value)


def compare_arrays(
    pairs: Sequence[tuple[ElementType, memoryview, memoryview]], pool: Executor
) -> list[ArrayDifference]:
    """Compare each (element type, bytes of a, bytes of b) pair; all slices run on ``pool``.

    Every slice of every pair is submitted before any is awaited, so many
    small entries keep all threads busy as well as one large entry does.
    The tasks never wait on the pool themselves (no deadlock on a full pool).
    """
    jobs: list[list[Future[_Partial]]] = []
    try:
        for etype, raw_a, raw_b in pairs:
            if len(raw_a) != len(raw_b) or len(raw_a) % etype.size:
                raise ValueError("compare_arrays needs two arrays of one dtype and shape")
            a, b = np.frombuffer(raw_a, np.uint8), np.frombuffer(raw_b, np.uint8)
            step = SLICE_ELEMENTS * etype.size
            jobs.append(
                [
                    pool.submit(
                        _slice_partial, etype, a[start : start + step], b[start : start + step]
                    )
                    for start in range(0, len(a), step)
                ]
            )
        return [
            _combine(len(raw_a) // etype.size, etype, [f.result() for f in futures])
            for (etype, raw_a, _), futures in zip(pairs, jobs, strict=True)
        ]
    finally:
        for futures in jobs:
            for future in futures:
                future.cancel()
