"""Object encoding: round trips, per-plane codec choice, header validation, fuzzing."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltastore import codecs
from deltastore.codecs import Kind, PlaneCodec, Transform, read_header
from deltastore.codecs.header import MAGIC
from deltastore.errors import CorruptObjectError
from deltastore.ids import hex_digest

WIDTHS = [1, 2, 4, 8, 16]


def float_like(n_bytes: int, seed: int, width: int) -> bytes:
    """Values with the byte statistics of weights: smooth exponents, noisy mantissas."""
    rng = np.random.default_rng(seed)
    dtype = {1: np.int8, 2: np.float16, 4: np.float32, 8: np.float64, 16: np.complex128}[width]
    n = n_bytes // width
    values = rng.standard_normal(n * (2 if width == 16 else 1)) * 0.02
    return (
        values.astype(np.float64).view(np.complex128).tobytes()
        if width == 16
        else (values.astype(dtype).tobytes())
    )


def decode_bytes(obj: bytes, raw: bytes, base: bytes | None = None) -> bytes:
    out = bytearray(len(raw))
    codecs.decode_into(obj, hex_digest(raw), memoryview(out), base=base)
    return bytes(out)


@settings(max_examples=150, deadline=None)
@given(
    width=st.sampled_from(WIDTHS),
    n=st.integers(0, 3000),
    seed=st.integers(0, 2**32 - 1),
    codec=st.sampled_from(codecs.CODECS),
    kind=st.sampled_from(["noise", "floats", "zeros"]),
)
def test_round_trip(width: int, n: int, seed: int, codec: str, kind: str) -> None:
    if kind == "noise":
        raw = np.random.default_rng(seed).integers(0, 256, n * width, dtype=np.uint8).tobytes()
    elif kind == "floats":
        raw = float_like(n * width, seed, width)
    else:
        raw = bytes(n * width)
    obj = codecs.encode(raw, width, codec=codec)
    assert decode_bytes(obj, raw) == raw


@settings(max_examples=100, deadline=None)
@given(
    width=st.sampled_from(WIDTHS),
    n=st.integers(1, 3000),
    seed=st.integers(0, 2**32 - 1),
    codec=st.sampled_from(codecs.CODECS),
)
def test_delta_round_trip(width: int, n: int, seed: int, codec: str) -> None:
    base = float_like(n * width, seed, width)
    raw = bytearray(base)
    rng = np.random.default_rng(seed + 1)
    for i in rng.integers(0, len(raw), size=max(1, len(raw) // 50)):
        raw[i] ^= 1 << int(rng.integers(0, 8))
    raw = bytes(raw)
    base_id = bytes.fromhex(hex_digest(base))
    obj = codecs.encode(raw, width, codec=codec, base=base, base_id=base_id)
    header = read_header(obj, hex_digest(raw))
    assert header.transform == Transform.XOR_PLANES and header.base_id == base_id
    assert decode_bytes(obj, raw, base) == raw
    with pytest.raises(CorruptObjectError, match="delta object decoded without its base"):
        decode_bytes(obj, raw)


def test_zero_planes_cost_nothing_and_noise_planes_are_raw() -> None:
    n = 4096
    values = np.zeros(n, dtype=np.uint32)
    values |= np.random.default_rng(0).integers(0, 256, n, dtype=np.uint32)  # byte 0: noise
    raw = values.tobytes()
    header = read_header(codecs.encode(raw, 4), hex_digest(raw))
    assert [p.codec for p in header.planes] == [
        PlaneCodec.RAW,
        PlaneCodec.ZERO,
        PlaneCodec.ZERO,
        PlaneCodec.ZERO,
    ]
    assert [p.stored_length for p in header.planes] == [n, 0, 0, 0]


def test_exponent_plane_of_floats_is_compressed() -> None:
    raw = float_like(1 << 20, 0, 4)
    header = read_header(codecs.encode(raw, 4), hex_digest(raw))
    assert header.planes[3].codec == PlaneCodec.ZSTD
    assert header.planes[3].stored_length < 0.5 * header.plane_length
    lz4_header = read_header(codecs.encode(raw, 4, codec="lz4"), hex_digest(raw))
    assert lz4_header.planes[3].codec == PlaneCodec.LZ4


def _valid(width: int = 4, transform_base: bool = False) -> tuple[bytes, bytes, bytes | None]:
    raw = float_like(4096, 1, 4)
    base = float_like(4096, 2, 4) if transform_base else None
    base_id = bytes.fromhex(hex_digest(base)) if base else None
    return codecs.encode(raw, width, base=base, base_id=base_id), raw, base


def _patch(obj: bytes, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(obj)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda o: o[:10], "truncated header"),
        (lambda o: b"XXXX" + o[4:], "bad magic"),
        (lambda o: _patch(o, 4, "<B", 2), "object format version 2"),
        (lambda o: _patch(o, 5, "<B", 9), "bad header field"),
        (lambda o: _patch(o, 6, "<B", 7), "bad header field"),
        (lambda o: _patch(o, 7, "<B", 0), "element width 0 out of range"),
        (lambda o: _patch(o, 7, "<B", 65), "element width 65 out of range"),
        (lambda o: _patch(o, 8, "<Q", 2**40), "raw length .* out of range"),
        (lambda o: _patch(o, 8, "<Q", 4097), "not a multiple of 4 planes"),
        (lambda o: o[:20], "truncated plane table"),
        (lambda o: _patch(o, 16, "<B", 9), "unknown plane codec 9"),
        (lambda o: _patch(_patch(o, 16, "<B", 0), 17, "<Q", 5), "zero plane with a payload"),
        (lambda o: _patch(_patch(o, 16, "<B", 1), 17, "<Q", 5), "raw plane of 5 bytes"),
        (lambda o: o + b"\x00", "header accounts for"),
    ],
)
def test_header_validation(damage: object, message: str) -> None:
    obj, raw, _ = _valid()
    with pytest.raises(CorruptObjectError, match=message):
        decode_bytes(damage(obj), raw)  # type: ignore[operator]


def test_truncated_base_id() -> None:
    obj, raw, base = _valid(transform_base=True)
    with pytest.raises(CorruptObjectError, match="truncated base id"):
        decode_bytes(obj[:30], raw, base)


def test_wrong_kind_is_corrupt() -> None:
    raw = b'{"a": 1}'
    manifest = codecs.encode(raw, 1, kind=Kind.MANIFEST)
    with pytest.raises(CorruptObjectError, match="object is a manifest, expected a chunk"):
        decode_bytes(manifest, raw)
    assert codecs.decode(manifest, hex_digest(raw)) == raw


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    width=st.sampled_from([1, 2, 4, 8]),
    delta=st.booleans(),
    codec=st.sampled_from(codecs.CODECS),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "cut", "insert", "set"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_objects_never_decode_wrong_or_crash(
    width: int, delta: bool, codec: str, edits: list[tuple[str, int, int]]
) -> None:
    raw = float_like(2048, 3, 4)
    base = float_like(2048, 4, 4) if delta else None
    base_id = bytes.fromhex(hex_digest(base)) if base else None
    obj = bytearray(codecs.encode(raw, width, codec=codec, base=base, base_id=base_id))
    for op, position, value in edits:
        at = position % (len(obj) + 1)
        if op == "flip" and obj:
            obj[at % len(obj)] ^= 1 << (value % 8)
        elif op == "cut":
            del obj[at:]
        elif op == "insert":
            obj[at:at] = bytes([value])
        elif op == "set" and obj:
            obj[at % len(obj)] = value
    out = bytearray(len(raw))
    try:
        codecs.decode_into(bytes(obj), hex_digest(raw), memoryview(out), base=base)
    except CorruptObjectError:
        return
    assert bytes(out) == raw  # whatever survived the edits still decodes to the right bytes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_garbage_is_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptObjectError):
        codecs.decode(MAGIC + data, "00" * 32)
