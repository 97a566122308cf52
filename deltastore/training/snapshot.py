"""Copy a training state to host memory quickly, so a background save can encode it.

An asynchronous save must not read tensors the optimizer is about to update
in place, so it works from a copy.  Fresh memory costs a page fault per 4 KiB
(here ~1 ms per MiB, more than the copy itself), so the copies land in
buffers kept from the previous snapshot of the same key path, shape and
dtype: a training loop, whose state keeps its layout, allocates only once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from deltastore import tree


class HostSnapshot:
    """Copies of a state's arrays in reused host buffers; everything else copied as data."""

    def __init__(self) -> None:
        self._buffers: dict[str, Any] = {}

    @property
    def nbytes(self) -> int:
        """Host memory the kept buffers take."""
        return sum(int(b.nbytes) for b in self._buffers.values())

    def take(self, state: Any) -> Any:
        """A copy of ``state`` that later in-place updates of the original cannot change."""
        return self._copy(state, "")

    def _copy(self, value: Any, path: str) -> Any:
        kind = type(value)
        if kind in (dict, OrderedDict):
            return kind(
                (key, self._copy(item, f"{path}/{tree.escape_key(str(key))}"))
                for key, item in value.items()
            )
        if kind in (list, tuple):
            return kind(self._copy(item, f"{path}/{n}") for n, item in enumerate(value))
        if isinstance(value, np.ndarray):
            return self._array(value, path)
        if _is_tensor(value):
            return self._tensor(value, path)
        return value  # scalars, str, bytes, None: immutable

    def _array(self, value: np.ndarray, path: str) -> np.ndarray:
        buffer = self._buffers.get(path)
        if (
            not isinstance(buffer, np.ndarray)
            or buffer.shape != value.shape
            or buffer.dtype != value.dtype
        ):
            buffer = np.empty_like(value, order="C")
            self._buffers[path] = buffer
        np.copyto(buffer, value)
        return buffer

    def _tensor(self, value: Any, path: str) -> Any:
        import torch

        source = value.detach()
        if source.layout != torch.strided or source.is_quantized or source.is_nested:
            return value  # not storable: left for the save to refuse, naming its key path
        buffer = self._buffers.get(path)
        if (
            not isinstance(buffer, torch.Tensor)
            or buffer.shape != source.shape
            or buffer.dtype != source.dtype
        ):
            buffer = torch.empty(source.shape, dtype=source.dtype, device="cpu")
            self._buffers[path] = buffer
        buffer.copy_(source)
        if isinstance(value, torch.nn.Parameter):
            return torch.nn.Parameter(buffer, requires_grad=value.requires_grad)
        return buffer


def _is_tensor(value: Any) -> bool:
    module = type(value).__module__
    if not module.startswith("torch"):
        return False
    import torch

    return isinstance(value, torch.Tensor)
