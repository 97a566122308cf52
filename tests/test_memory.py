"""Huge-page buffers: aligned, exact, writable, and what restored large arrays are made of."""

from __future__ import annotations

import ctypes
import mmap

import numpy as np
import pytest
import torch

import deltastore
from deltastore import arrays
from deltastore.memory import HUGE_PAGE, huge_page_buffer


@pytest.mark.parametrize("size", [1, 4096, HUGE_PAGE - 1, HUGE_PAGE, 3 * HUGE_PAGE + 17])
def test_buffers_are_exact_writable_and_start_on_a_huge_page(size: int) -> None:
    view = huge_page_buffer(size)
    assert len(view) == size and not view.readonly
    view[-1] = 7
    address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    if hasattr(mmap, "MADV_HUGEPAGE"):
        assert address % HUGE_PAGE == 0


@pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="no MADV_HUGEPAGE here")
def test_large_arrays_are_allocated_in_huge_page_memory() -> None:
    big, big_view = arrays.allocate("torch", "float32", (arrays.HUGE_PAGE_ARRAY_BYTES // 4,))
    assert big.untyped_storage().data_ptr() % HUGE_PAGE == 0
    big_view[:4] = bytes([0, 0, 128, 63])  # the view writes the tensor's memory
    assert big[0].item() == 1.0


def test_restored_large_tensors_and_arrays_are_bit_exact_and_writable(
    store: deltastore.Store,
) -> None:
    n = arrays.HUGE_PAGE_ARRAY_BYTES // 4 + 3
    state = {
        "t": torch.randn(n),
        "p": torch.nn.Parameter(torch.randn(n).to(torch.bfloat16)),
        "a": np.random.default_rng(0).standard_normal(n).astype(">f8"),
    }
    store.save(state)
    out = store.load()
    assert out["t"].view(torch.int32).equal(state["t"].view(torch.int32))
    assert out["p"].view(torch.int16).equal(state["p"].detach().view(torch.int16))
    assert isinstance(out["p"], torch.nn.Parameter) and out["p"].requires_grad
    assert out["a"].dtype == np.dtype(">f8") and out["a"].tobytes() == state["a"].tobytes()
    out["t"].add_(1.0)  # an optimizer updates restored state in place
    out["a"][0] = 0.0
    assert out["t"][0].item() == pytest.approx(state["t"][0].item() + 1.0)
