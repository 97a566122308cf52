"""Array leaves <-> raw little-endian bytes, without copying where it can be helped.

An array leaf of a state is a ``torch.Tensor`` (or ``nn.Parameter``), a
``numpy.ndarray`` or a numpy scalar.  On save it becomes a flat, C-contiguous,
little-endian ``uint8`` view of its memory (a copy only when the source is not
already so: a non-contiguous view, a tensor on another device, a big-endian
numpy array).  On restore an empty array of the recorded kind, dtype and shape
is allocated and a writable byte view of it is handed to the decoder, which
writes the chunks straight into it.

torch is imported lazily: numpy-only users never pay for it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from deltastore.errors import UnsupportedTypeError
from deltastore.memory import huge_page_buffer

KIND_TORCH = "torch"
KIND_PARAMETER = "torch.Parameter"
KIND_NUMPY = "numpy"
KIND_NUMPY_SCALAR = "numpy.scalar"
KINDS = (KIND_TORCH, KIND_PARAMETER, KIND_NUMPY, KIND_NUMPY_SCALAR)
#: Arrays from this size on are restored into memory of their own, backed by huge pages.
HUGE_PAGE_ARRAY_BYTES = 4 << 20

# numpy kinds we store exactly: bool, signed, unsigned, float, complex.
_NUMPY_KINDS = frozenset("biufc")


@dataclass(frozen=True)
class ArrayBytes:
    """An array leaf seen as bytes: what the store hashes, chunks and encodes."""

    kind: str
    dtype: str
    shape: tuple[int, ...]
    element_size: int
    data: memoryview  # flat, C-contiguous, little-endian, format "B"
    requires_grad: bool = False


def _torch_module() -> Any:
    """The torch module if the caller has imported it (no import otherwise)."""
    return sys.modules.get("torch")


def is_array(value: object) -> bool:
    """True for the array types a state may hold (and for ones we refuse clearly)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return True
    torch = _torch_module()
    return torch is not None and isinstance(value, torch.Tensor)


def to_bytes(value: Any, key_path: str) -> ArrayBytes:
    """Return the raw-byte view of an array leaf, or raise UnsupportedTypeError."""
    if isinstance(value, (np.ndarray, np.generic)):
        return _numpy_to_bytes(value, key_path)
    return _torch_to_bytes(value, key_path)


def _numpy_dtype_check(dtype: np.dtype[Any], key_path: str, type_name: str) -> None:
    if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsupportedTypeError(
            key_path, type_name, f"numpy dtype {dtype} is not a numeric or bool dtype"
        )
    if dtype.kind in "fc" and dtype.itemsize > (8 if dtype.kind == "f" else 16):
        # long double carries platform-defined padding bytes: not reproducible.
        raise UnsupportedTypeError(key_path, type_name, f"numpy dtype {dtype} is platform-defined")


def _numpy_to_bytes(value: np.ndarray[Any, Any] | np.generic, key_path: str) -> ArrayBytes:
    scalar = isinstance(value, np.generic)
    arr = np.asarray(value)
    type_name = f"numpy.{type(value).__name__}"
    _numpy_dtype_check(arr.dtype, key_path, type_name)
    little = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    flat = np.ascontiguousarray(arr, dtype=little).reshape(-1)
    return ArrayBytes(
        kind=KIND_NUMPY_SCALAR if scalar else KIND_NUMPY,
        dtype=arr.dtype.str,
        shape=tuple(int(n) for n in arr.shape),
        element_size=arr.dtype.itemsize,
        data=flat.view(np.uint8).data,
    )


def _torch_to_bytes(t: Any, key_path: str) -> ArrayBytes:
    torch = _torch_module()
    assert torch is not None  # is_array() said it is a tensor
    type_name = f"{type(t).__module__}.{type(t).__qualname__}"
    if type(t) not in (torch.Tensor, torch.nn.Parameter):
        raise UnsupportedTypeError(key_path, type_name, "only plain tensors and Parameters")
    if t.is_nested:
        raise UnsupportedTypeError(key_path, type_name, "nested tensors are not supported")
    if t.layout != torch.strided:
        raise UnsupportedTypeError(key_path, type_name, f"{t.layout} tensors are not supported")
    if t.is_quantized:
        raise UnsupportedTypeError(key_path, type_name, "quantized tensors are not supported")
    if t.device.type == "meta":
        raise UnsupportedTypeError(key_path, type_name, "meta tensors hold no data")
    kind = KIND_PARAMETER if isinstance(t, torch.nn.Parameter) else KIND_TORCH
    requires_grad = bool(t.requires_grad)
    dense = t.detach()
    if dense.device.type != "cpu":
        dense = dense.cpu()
    if dense.is_conj():
        dense = dense.resolve_conj()
    if dense.is_neg():
        dense = dense.resolve_neg()
    dense = dense.contiguous()  # no copy when already contiguous (storage offset is fine)
    element_size = dense.element_size()
    try:
        flat = dense.reshape(-1).view(torch.uint8)
    except RuntimeError as exc:  # e.g. sub-byte dtypes that cannot be viewed as bytes
        raise UnsupportedTypeError(key_path, type_name, f"dtype {dense.dtype}: {exc}") from exc
    return ArrayBytes(
        kind=kind,
        dtype=str(dense.dtype).removeprefix("torch."),
        shape=tuple(int(n) for n in dense.shape),
        element_size=element_size,
        data=flat.numpy().data,
        requires_grad=requires_grad,
    )


def allocate(kind: str, dtype: str, shape: tuple[int, ...]) -> tuple[Any, memoryview]:
    """Allocate an empty array to restore into.

    Returns the array (still uninitialised) and a writable flat byte view of its
    memory; the caller writes exactly ``nbytes`` into the view and then calls
    :func:`finish` on the array.  A large array gets memory of its own backed
    by huge pages (``deltastore.memory``): writing the restored bytes into
    fresh memory costs a page fault per 4 KiB otherwise, which was a third of
    the time of restoring a full checkpoint.
    """
    if kind in (KIND_NUMPY, KIND_NUMPY_SCALAR):
        np_dtype = np.dtype(dtype)
        little = np_dtype.newbyteorder("<") if np_dtype.byteorder == ">" else np_dtype
        nbytes = math.prod(shape) * little.itemsize
        if nbytes < HUGE_PAGE_ARRAY_BYTES:
            arr = np.empty(shape, dtype=little)
        else:
            arr = np.frombuffer(huge_page_buffer(nbytes), dtype=little).reshape(shape)
        return arr, arr.reshape(-1).view(np.uint8).data
    import torch

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise UnsupportedTypeError("", f"torch.{dtype}", "this torch has no such dtype")
    nbytes = math.prod(shape) * torch_dtype.itemsize
    if nbytes < HUGE_PAGE_ARRAY_BYTES:
        tensor = torch.empty(shape, dtype=torch_dtype)
    else:
        memory = torch.frombuffer(huge_page_buffer(nbytes), dtype=torch.uint8)
        tensor = memory.view(torch_dtype).reshape(shape)
    return tensor, tensor.reshape(-1).view(torch.uint8).numpy().data


def finish(kind: str, dtype: str, array: Any, requires_grad: bool = False) -> Any:
    """Turn a filled array from :func:`allocate` into the value the user saved."""
    if kind in (KIND_NUMPY, KIND_NUMPY_SCALAR):
        np_dtype = np.dtype(dtype)
        if np_dtype.byteorder == ">":
            array = array.astype(np_dtype)
        return array[()] if kind == KIND_NUMPY_SCALAR else array
    if kind == KIND_PARAMETER:
        import torch

        return torch.nn.Parameter(array, requires_grad=requires_grad)
    return array
