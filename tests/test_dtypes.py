"""The dtype zoo: every dtype torch 2.13 stores on CPU, numpy dtypes, odd layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import deltastore

from .conftest import assert_same, tensor_bits

TORCH_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
    torch.float8_e8m0fnu,
]


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Random bits of the dtype (every bit pattern, NaNs included)."""
    g = torch.Generator().manual_seed(seed)
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel = int(np.prod(shape)) if shape else 1
    raw = torch.randint(0, 256, (numel * itemsize,), dtype=torch.uint8, generator=g)
    if dtype == torch.bool:
        raw = raw % 2
    return raw.view(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (5,), (7, 13), (300, 1000)], ids=str)
def test_torch_dtype_round_trip(
    store: deltastore.Store, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    t = random_tensor(dtype, shape)
    cid = store.save({"t": t})
    back = store.load(cid)["t"]
    assert back.dtype == dtype and back.shape == t.shape
    assert tensor_bits(back) == tensor_bits(t)


def test_non_contiguous_views_and_offsets(store: deltastore.Store) -> None:
    base = torch.arange(200, dtype=torch.float32).reshape(10, 20)
    state = {
        "transposed": base.t(),
        "sliced": base[2:5, 3:17:2],
        "offset": base.reshape(-1)[37:90],
        "expanded": torch.ones(3, 1).expand(3, 4),
        "conj": torch.complex(torch.ones(3), torch.arange(3.0)).conj(),
        "neg": torch.ones(3, dtype=torch.complex64)._neg_view(),
    }
    back = store.load(store.save(state))
    for key, value in state.items():
        expected = value.resolve_conj().resolve_neg().contiguous()
        assert back[key].is_contiguous(), key
        assert torch.equal(back[key], expected), key


def test_parameters_keep_their_type_and_requires_grad(store: deltastore.Store) -> None:
    state = {
        "p": torch.nn.Parameter(torch.randn(3, 4)),
        "frozen": torch.nn.Parameter(torch.randn(2), requires_grad=False),
    }
    assert_same(store.load(store.save(state)), state)


@pytest.mark.parametrize(
    "dtype",
    [
        "?",
        "u1",
        "i1",
        "<u2",
        "<i2",
        "<u4",
        "<i4",
        "<u8",
        "<i8",
        "<f2",
        "<f4",
        "<f8",
        "<c8",
        "<c16",
        ">f4",
        ">i8",
        ">c16",
    ],
)
def test_numpy_dtype_round_trip(store: deltastore.Store, dtype: str) -> None:
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=np.dtype(dtype).itemsize * 60, dtype=np.uint8)
    arr = raw.view(np.dtype(dtype).newbyteorder("=") if dtype != "?" else np.uint8)
    arr = (arr % 2).astype(bool) if dtype == "?" else arr.astype(dtype).reshape(3, 4, 5)
    state = {"a": arr, "fortran": np.asfortranarray(arr), "strided": arr[..., ::2]}
    back = store.load(store.save(state))
    for key, value in state.items():
        assert back[key].dtype == value.dtype, key
        assert back[key].shape == value.shape, key
        assert np.ascontiguousarray(back[key]).tobytes() == np.ascontiguousarray(value).tobytes(), (
            key
        )


def test_numpy_scalars_stay_scalars(store: deltastore.Store) -> None:
    state = {
        "f": np.float32(1.5),
        "i": np.int64(-3),
        "b": np.bool_(True),
        "c": np.complex128(1 + 2j),
    }
    assert_same(store.load(store.save(state)), state)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (np.array(["a"], dtype=object), "not a numeric or bool dtype"),
        (np.zeros(2, dtype=[("x", "<f4")]), "not a numeric or bool dtype"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "not a numeric or bool dtype"),
        (np.zeros(2, dtype=np.longdouble), "platform-defined"),
        (np.array(["ab"]), "not a numeric or bool dtype"),
    ],
)
def test_unsupported_numpy(store: deltastore.Store, value: object, fragment: str) -> None:
    with pytest.raises(deltastore.UnsupportedTypeError, match=fragment) as info:
        store.save({"x": {"y": value}})
    assert info.value.key_path == "x/y"


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
def test_unsupported_tensors(store: deltastore.Store) -> None:
    cases = {
        "sparse": (torch.eye(3).to_sparse(), "torch.sparse_coo tensors are not supported"),
        "quantized": (
            torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8),
            "quantized tensors are not supported",
        ),
        "nested": (torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]), "nested tensors"),
        "meta": (torch.empty(3, device="meta"), "meta tensors hold no data"),
    }
    for key, (value, fragment) in cases.items():
        with pytest.raises(deltastore.UnsupportedTypeError, match=fragment) as info:
            store.save({"s": value})
        assert info.value.key_path == "s", key
    assert list(store.log()) == []
