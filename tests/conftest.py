"""Shared fixtures: a fresh store in tmp_path, and bit-level comparison of states."""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch

import deltastore
from deltastore import delta
from deltastore.catalog.queries import StoredChunk
from deltastore.delta import Base


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_path: Path) -> Iterator[deltastore.Store]:
    with deltastore.open(store_path, create=True, progress=False) as s:
        yield s


def tensor_bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Exact equality of two states: types, keys and order, shapes, dtypes and bits."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.requires_grad == b.requires_grad, path
        assert tensor_bits(a) == tensor_bits(b), path
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), path
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path
    elif isinstance(a, (dict, OrderedDict)):
        assert list(a.keys()) == list(b.keys()), path
        for (k, va), vb in zip(a.items(), b.values(), strict=True):
            assert_same(va, vb, f"{path}/{k}")
        assert [type(k) for k in a] == [type(k) for k in b], path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (va, vb) in enumerate(zip(a, b, strict=True)):
            assert_same(va, vb, f"{path}/{i}")
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b) or (
            math.isnan(a) and struct.pack("<d", a) == struct.pack("<d", b)
        ), f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def trained_like(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Weights with the statistics of a trained layer (not zeros, not flat noise)."""
    g = torch.Generator().manual_seed(seed)
    fan_in = shape[-1] if shape else 1
    base = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    # a heavy-tailed component and some structure, as trained weights have
    return base + 0.1 * base.pow(3) + 0.01 * torch.linspace(-1, 1, base.numel()).reshape(shape)


def join_all(children: list[Any], timeout: float = 120) -> None:
    """Wait for child processes; each must exit 0.  Stragglers are killed, never left behind."""
    try:
        for child in children:
            child.join(timeout)
            assert child.exitcode == 0, f"child process exited with {child.exitcode}"
    finally:
        for child in children:
            if child.exitcode is None:
                child.kill()
                child.join()


def _chained_base_for(
    object_id: str, known: Mapping[str, StoredChunk], deltas_on: Mapping[str, int]
) -> Base | None:
    """The rule writers followed before session 5: a delta on the parent's version of the
    chunk, chains capped at depth 2."""
    stored = known.get(object_id)
    if stored is None or stored.depth >= 2:
        return None
    return Base(object_id, stored.depth)


@contextmanager
def chained_deltas() -> Iterator[None]:
    """Save deltas of deltas, as stores written before session 5 hold: readers, verify, gc,
    rebuild and cat must handle chains deeper than today's writers make."""
    with mock.patch.object(delta, "base_for", _chained_base_for):
        yield
