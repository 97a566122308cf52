"""Objects (docs/format.md, "Objects"): round trips, per-plane codecs, header checks, fuzzing.

The codec layer promises two things: any bytes come back exactly, and any
damaged object is a CorruptObjectError, never another exception and never
wrong bytes.  Property tests draw the data from seeded numpy generators
(noise, zeros, and values with the byte statistics of weights), so a failing
example is reproduced from its printed seed.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable

import lz4.block
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltastore import codecs
from deltastore.codecs import Kind, PlaneCodec, Transform, read_header
from deltastore.codecs.header import BASE_ID_LEN, MAGIC, PlaneRecord, pack_header
from deltastore.codecs.reference import split_planes_reference, zigzag_diff_reference
from deltastore.errors import CorruptObjectError
from deltastore.ids import hex_digest

WIDTHS = [1, 2, 4, 8, 16]
FUZZ = settings(
    max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
PROPERTY = settings(max_examples=120, deadline=None, database=None)
#: What a plane of each codec name is tagged when it is compressed.
COMPRESSED = {"zstd": PlaneCodec.ZSTD, "lz4": PlaneCodec.LZ4}


# -- data ---------------------------------------------------------------------------------------


def weights(n: int, seed: int) -> np.ndarray:
    """float64 values with the statistics of trained weights: small, heavy-tailed, structured."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(n) * 0.02
    return base + 5 * base**3 + 1e-3 * np.linspace(-1, 1, n)


def float_like(kind: str, n: int, seed: int) -> bytes:
    """``n`` elements of a float dtype (bfloat16 as the high half of float32), little-endian."""
    values = weights(n * (2 if kind == "complex128" else 1), seed)
    if kind == "bfloat16":
        return (values.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    if kind == "complex128":
        return values.astype("<f8").view("<c16").tobytes()
    return values.astype({"float16": "<f2", "float32": "<f4", "float64": "<f8"}[kind]).tobytes()


FLOAT_WIDTHS = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8, "complex128": 16}


@st.composite
def chunk_bytes(draw: st.DrawFn) -> tuple[bytes, int]:
    """(raw bytes, element width): noise, zeros or floats; sometimes a ragged tail."""
    kind = draw(st.sampled_from(["noise", "zeros", *FLOAT_WIDTHS]))
    width = FLOAT_WIDTHS.get(kind) or draw(st.sampled_from(WIDTHS))
    n = draw(st.integers(0, 2048))
    seed = draw(st.integers(0, 2**32 - 1))
    if kind == "noise":
        raw = np.random.default_rng(seed).integers(0, 256, n * width, dtype=np.uint8).tobytes()
    elif kind == "zeros":
        raw = bytes(n * width)
    else:
        raw = float_like(kind, n, seed)
    tail = draw(st.integers(0, width - 1)) if draw(st.integers(0, 9)) == 0 else 0
    return raw + bytes(range(tail)), width


def drifted(raw: bytes, seed: int, fraction: float) -> bytes:
    """``raw`` with a fraction of its bytes' low bits changed: a training step's worth."""
    out = bytearray(raw)
    rng = np.random.default_rng(seed)
    for i in rng.integers(0, len(out), size=int(len(out) * fraction)) if out else []:
        out[i] ^= 1 << int(rng.integers(0, 3))
    return bytes(out)


def make_object(
    planes: list[tuple[PlaneCodec, bytes]],
    *,
    raw_length: int,
    width: int = 1,
    transform: Transform = Transform.NONE,
    kind: Kind = Kind.CHUNK,
    base_id: bytes | None = None,
) -> bytes:
    """An object assembled by hand from its header fields and plane payloads."""
    records = [PlaneRecord(codec, len(payload)) for codec, payload in planes]
    header = pack_header(kind, transform, width, raw_length, base_id, records)
    return header + b"".join(payload for _, payload in planes)


def decode_bytes(obj: bytes, object_id: str, length: int, base: bytes | None = None) -> bytes:
    out = bytearray(length)
    codecs.decode_into(obj, object_id, memoryview(out), base=base)
    return bytes(out)


def plane_payloads(obj: bytes, object_id: str) -> list[bytes]:
    """Each plane decoded by the format's rules alone (not by the decoder under test)."""
    header = read_header(obj, object_id)
    planes, offset = [], header.payload_offset
    for record in header.planes:
        payload = obj[offset : offset + record.stored_length]
        offset += record.stored_length
        if record.codec == PlaneCodec.ZERO:
            planes.append(bytes(header.plane_length))
        elif record.codec == PlaneCodec.RAW:
            planes.append(payload)
        elif record.codec == PlaneCodec.LZ4:
            planes.append(lz4.block.decompress(payload, uncompressed_size=header.plane_length))
        else:
            planes.append(zstandard.ZstdDecompressor().decompress(payload))
    return planes


# -- round trips --------------------------------------------------------------------------------


@PROPERTY
@given(
    data=chunk_bytes(),
    codec=st.sampled_from(codecs.CODECS),
    delta=st.sampled_from([None, "drift", "noise"]),
    seed=st.integers(0, 2**32 - 1),
    transform=st.sampled_from([None, Transform.XOR_PLANES, Transform.ZIGZAG_PLANES]),
)
def test_round_trip_with_and_without_a_base(
    data: tuple[bytes, int], codec: str, delta: str | None, seed: int, transform: Transform | None
) -> None:
    raw, width = data
    object_id = hex_digest(raw)
    base = None
    if delta == "drift":
        base = drifted(raw, seed, 0.05)
    elif delta == "noise":
        base = np.random.default_rng(seed).integers(0, 256, len(raw), dtype=np.uint8).tobytes()
    base_id = bytes.fromhex(hex_digest(base)) if base is not None else None
    expected_width = width if len(raw) % width == 0 else 1  # a ragged tail: no planes
    if transform == Transform.ZIGZAG_PLANES and expected_width not in (2, 4, 8):
        transform = None
    obj = codecs.encode(raw, width, codec=codec, base=base, base_id=base_id, delta=transform)

    header = read_header(obj, object_id)
    assert (header.kind, header.raw_length, header.element_width) == (
        Kind.CHUNK,
        len(raw),
        expected_width,
    )
    if base is not None:
        assert header.transform == (transform or codecs.default_delta(expected_width))
        assert header.base_id == base_id
    else:
        assert header.transform == (Transform.PLANES if expected_width > 1 else Transform.NONE)
        assert header.base_id is None
    assert {p.codec for p in header.planes} <= {PlaneCodec.ZERO, PlaneCodec.RAW, COMPRESSED[codec]}
    assert decode_bytes(obj, object_id, len(raw), base) == raw
    # The planes hold what the format says: byte p of every element, XORed with the base
    # or of its zigzag difference from the base.
    if header.transform == Transform.ZIGZAG_PLANES:
        assert base is not None
        diff = zigzag_diff_reference(raw, base, expected_width)
        expected = split_planes_reference(diff, expected_width)
        assert b"".join(plane_payloads(obj, object_id)) == expected
    elif header.transform != Transform.NONE:
        expected = split_planes_reference(raw, expected_width, base)
        assert b"".join(plane_payloads(obj, object_id)) == expected


@PROPERTY
@given(data=chunk_bytes(), codec=st.sampled_from(codecs.CODECS))
def test_decode_returns_a_full_object_in_a_new_buffer(data: tuple[bytes, int], codec: str) -> None:
    raw, width = data
    obj = codecs.encode(raw, width, codec=codec)
    assert codecs.decode(obj, hex_digest(raw), kind=Kind.CHUNK) == raw


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_manifest_round_trip(codec: str) -> None:
    raw = b'{"deltastore_manifest":1,"entries":[' + b'{"path":"model/w"},' * 300 + b"{}]}"
    obj = codecs.encode(raw, 1, kind=Kind.MANIFEST, codec=codec)
    header = read_header(obj, hex_digest(raw))
    assert header.kind == Kind.MANIFEST and header.planes[0].codec == COMPRESSED[codec]
    assert header.planes[0].stored_length < len(raw) // 10
    assert codecs.decode(obj, hex_digest(raw)) == raw


# -- plane codecs -------------------------------------------------------------------------------


@PROPERTY
@given(
    width=st.sampled_from(WIDTHS),
    n=st.integers(2048, 8192),
    zero=st.lists(st.booleans(), min_size=16, max_size=16),
    seed=st.integers(0, 2**32 - 1),
    codec=st.sampled_from(codecs.CODECS),
)
def test_zero_planes_are_zero_and_noise_planes_are_raw(
    width: int, n: int, zero: list[bool], seed: int, codec: str
) -> None:
    """An all-zero plane costs no payload; a plane compression cannot shrink is stored as is."""
    matrix = np.random.default_rng(seed).integers(0, 256, (n, width), dtype=np.uint8)
    matrix[:, np.array(zero[:width])] = 0
    raw = matrix.tobytes()
    obj = codecs.encode(raw, width, codec=codec)
    header = read_header(obj, hex_digest(raw))
    assert [(p.codec, p.stored_length) for p in header.planes] == [
        (PlaneCodec.ZERO, 0) if is_zero else (PlaneCodec.RAW, n) for is_zero in zero[:width]
    ]
    assert len(obj) == header.payload_offset + n * (width - sum(zero[:width]))
    assert decode_bytes(obj, hex_digest(raw), len(raw)) == raw


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_small_all_zero_planes_cost_nothing(codec: str) -> None:
    """Bug: an all-zero plane under ~1 KiB was stored compressed (12-20 bytes), not as ZERO.

    The encoder only looks for zeros when the compressed plane is 64x smaller
    than the plane, and zstd's frame overhead alone is ~13 bytes: the planes
    of small entries (biases, norms) and of entries' last chunks missed the
    rule "zero if the plane is all zero" (docs/format.md).
    """
    found = {}
    for n in (16, 64, 256, 1024):
        values = np.arange(n, dtype="<u4") % 251  # bytes 1-3 of every element are zero
        raw = values.tobytes()
        header = read_header(codecs.encode(raw, 4, codec=codec), hex_digest(raw))
        found[n] = [p.codec for p in header.planes[1:]]
    assert found == {n: [PlaneCodec.ZERO] * 3 for n in found}


@pytest.mark.parametrize("codec", codecs.CODECS)
@pytest.mark.parametrize("width", WIDTHS)
def test_delta_against_an_identical_base_is_header_only(width: int, codec: str) -> None:
    raw = np.random.default_rng(width).integers(0, 256, 4096 * width, dtype=np.uint8).tobytes()
    base_id = bytes.fromhex(hex_digest(raw))
    obj = codecs.encode(raw, width, codec=codec, base=raw, base_id=base_id)
    header = read_header(obj, hex_digest(raw))
    assert [p.codec for p in header.planes] == [PlaneCodec.ZERO] * width
    assert len(obj) == header.payload_offset == 16 + BASE_ID_LEN + 9 * width
    assert decode_bytes(obj, hex_digest(raw), len(raw), base=raw) == raw


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_exponent_plane_of_float32_is_compressed_and_mantissa_is_raw(codec: str) -> None:
    raw = float_like("float32", 1 << 16, 0)
    header = read_header(codecs.encode(raw, 4, codec=codec), hex_digest(raw))
    assert header.planes[0].codec == PlaneCodec.RAW  # lowest mantissa byte: noise
    assert header.planes[3].codec == COMPRESSED[codec]  # sign and exponent
    assert header.planes[3].stored_length < 0.7 * header.plane_length


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_noise_planes_are_stored_raw_without_compressing_them_whole(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltastore.codecs import chunk

    packed: list[int] = []
    pack = chunk._pack

    def counting(plane: memoryview, codec: str) -> bytes:
        packed.append(len(plane))
        return pack(plane, codec)

    monkeypatch.setattr(chunk, "_pack", counting)
    raw = float_like("float32", 1 << 18, 1)  # 1 MiB: four 256 KiB planes
    header = read_header(codecs.encode(raw, 4, codec=codec), hex_digest(raw))
    assert [p.codec for p in header.planes[:3]] == [PlaneCodec.RAW] * 3
    assert header.planes[3].codec == COMPRESSED[codec]
    # Only the exponent plane was compressed whole; the noise planes were only sampled.
    assert sorted(n for n in packed if n > chunk._SAMPLE_BYTES) == [1 << 18]


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_a_plane_with_a_noisy_head_is_still_compressed(codec: str) -> None:
    rng = np.random.default_rng(3)
    plane = rng.integers(0, 256, 1 << 17, dtype=np.uint8)
    plane[1 << 14 :] = 7  # noise, then a constant
    raw = plane.tobytes()
    obj = codecs.encode(raw, 1, codec=codec)
    header = read_header(obj, hex_digest(raw))
    assert header.planes[0].codec == COMPRESSED[codec]
    assert header.planes[0].stored_length < 0.2 * len(raw)
    assert decode_bytes(obj, hex_digest(raw), len(raw)) == raw


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_a_sparse_delta_whose_samples_hit_changed_rows_is_still_compressed(codec: str) -> None:
    """Only a few rows changed, and the samples land on them: the zeros give it away."""
    rng = np.random.default_rng(4)
    base = (rng.standard_normal((256, 4096)) * 0.02).astype(np.float32)
    new = base.copy()
    for row in (0, 1, 64, 65, 128, 129, 192, 193):  # where the four samples of each plane fall
        new[row] += rng.standard_normal(4096).astype(np.float32) * 1e-3
    raw, base_raw = new.tobytes(), base.tobytes()
    obj = codecs.encode(
        raw, 4, codec=codec, base=base_raw, base_id=bytes.fromhex(hex_digest(base_raw))
    )
    header = read_header(obj, hex_digest(raw))
    assert PlaneCodec.RAW not in {p.codec for p in header.planes}
    assert len(obj) < 0.1 * len(raw)
    assert decode_bytes(obj, hex_digest(raw), len(raw), base=base_raw) == raw


@pytest.mark.parametrize("width", WIDTHS)
def test_delta_decoded_without_its_base_is_corrupt(width: int) -> None:
    base = float_like("float64", 64 * width, 1)
    raw = drifted(base, 2, 0.1)
    obj = codecs.encode(raw, width, base=base, base_id=bytes.fromhex(hex_digest(base)))
    object_id = hex_digest(raw)
    for wrong_base in (None, base[:-width]):
        with pytest.raises(CorruptObjectError) as info:
            decode_bytes(obj, object_id, len(raw), wrong_base)
        assert info.value.reason == "delta object decoded without its base"
        assert info.value.object_id == object_id
    with pytest.raises(CorruptObjectError, match="do not hash to the object's id"):
        decode_bytes(obj, object_id, len(raw), drifted(base, 3, 0.1))  # a different base


def test_encode_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"unknown codec 'gzip'; choose one of \('zstd', 'lz4'\)"):
        codecs.encode(b"abcd", 1, codec="gzip")
    for base, base_id in ((b"abc", b"\0" * 32), (b"abcd", None)):
        with pytest.raises(ValueError, match="a delta needs a base of the same length and its id"):
            codecs.encode(b"abcd", 1, base=base, base_id=base_id)


# -- header validation --------------------------------------------------------------------------

_RAW = float_like("float32", 1024, 7)  # 4096 bytes: planes RAW, RAW, RAW?, ZSTD
_ID = hex_digest(_RAW)
_VALID = codecs.encode(_RAW, 4)
_HEADER = read_header(_VALID, _ID)
_BASE = float_like("float32", 1024, 8)
_DELTA = codecs.encode(_RAW, 4, base=_BASE, base_id=bytes.fromhex(hex_digest(_BASE)))


def _patched(obj: bytes, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(obj)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def _first_compressed_plane() -> int:
    return next(i for i, p in enumerate(_HEADER.planes) if p.codec == PlaneCodec.ZSTD)


def _record_offset(plane: int) -> int:
    return 16 + 9 * plane


_ZSTD_PLANE = _first_compressed_plane()
_ZSTD_STORED = _HEADER.planes[_ZSTD_PLANE].stored_length

HEADER_CASES: dict[str, tuple[bytes, str]] = {
    "truncated header": (_VALID[:15], "truncated header (15 bytes)"),
    "empty object": (b"", "truncated header (0 bytes)"),
    "bad magic": (b"DSOX" + _VALID[4:], "not a deltastore object (bad magic)"),
    "newer format version": (
        _patched(_VALID, 4, "<B", 2),
        "object format version 2; this deltastore reads 1",
    ),
    "unknown kind": (_patched(_VALID, 5, "<B", 7), "bad header field: 7 is not a valid Kind"),
    "unknown transform": (
        _patched(_VALID, 6, "<B", 4),
        "bad header field: 4 is not a valid Transform",
    ),
    "width zero": (_patched(_VALID, 7, "<B", 0), "element width 0 out of range"),
    "zigzag of 3-byte elements": (
        _patched(_patched(_VALID, 6, "<B", 3), 7, "<B", 3),
        "zigzag differences of 3-byte elements",
    ),
    "width too large": (_patched(_VALID, 7, "<B", 65), "element width 65 out of range"),
    "raw length too large": (
        _patched(_VALID, 8, "<Q", (1 << 34) + 4),
        f"raw length {(1 << 34) + 4} out of range",
    ),
    "raw length not a multiple": (
        _patched(_VALID, 8, "<Q", 4098),
        "raw length 4098 is not a multiple of 4 planes",
    ),
    "truncated base id": (_DELTA[:40], "truncated base id"),
    "truncated plane table": (_VALID[:30], "truncated plane table"),
    "truncated plane table of a delta": (_DELTA[:60], "truncated plane table"),
    "unknown plane codec": (
        _patched(_VALID, _record_offset(_ZSTD_PLANE), "<B", 9),
        "unknown plane codec 9",
    ),
    "zero plane with payload": (
        _patched(_VALID, _record_offset(_ZSTD_PLANE), "<B", PlaneCodec.ZERO),
        "zero plane with a payload",
    ),
    "raw plane of the wrong size": (
        _patched(_VALID, _record_offset(_ZSTD_PLANE), "<B", PlaneCodec.RAW),
        f"raw plane of {_ZSTD_STORED} bytes, expected 1024",
    ),
    "object longer than its header says": (
        _VALID + b"\0",
        f"object is {len(_VALID) + 1} bytes, header accounts for {len(_VALID)}",
    ),
    "object shorter than its header says": (
        _VALID[:-1],
        f"object is {len(_VALID) - 1} bytes, header accounts for {len(_VALID)}",
    ),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_header_check_names_what_is_wrong(case: str) -> None:
    obj, reason = HEADER_CASES[case]
    with pytest.raises(CorruptObjectError) as info:
        read_header(obj, _ID)
    assert info.value.reason == reason
    assert str(info.value) == f"corrupt object {_ID[:16]}: {reason}"
    with pytest.raises(CorruptObjectError) as info:
        decode_bytes(obj, _ID, len(_RAW), _BASE)  # the decoder checks before it reads
    assert info.value.reason == reason


def test_header_of_the_valid_objects_used_above() -> None:
    """The damaged cases start from these; the cases are only right if these are."""
    assert _HEADER.transform == Transform.PLANES and _HEADER.payload_offset == 16 + 9 * 4
    assert _HEADER.planes[0].codec == PlaneCodec.RAW and _ZSTD_STORED != 1024
    assert read_header(_DELTA, _ID).payload_offset == 16 + BASE_ID_LEN + 9 * 4
    assert decode_bytes(_VALID, _ID, len(_RAW)) == _RAW
    assert decode_bytes(_DELTA, _ID, len(_RAW), _BASE) == _RAW


DECODE_CASES: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "payload that does not decompress": (
        lambda: make_object(
            [(PlaneCodec.ZSTD, b"\x28\xb5\x2f\xfd" + b"\xff" * 12)], raw_length=len(_RAW)
        ),
        len(_RAW),
        "plane does not decompress: ",
    ),
    "zstd payload of the wrong size": (
        lambda: make_object(
            [(PlaneCodec.ZSTD, zstandard.ZstdCompressor().compress(_RAW[:100]))],
            raw_length=len(_RAW),
        ),
        len(_RAW),
        f"zstd plane claims 100 bytes, expected {len(_RAW)}",
    ),
    "lz4 payload of the wrong size": (
        lambda: make_object(
            [(PlaneCodec.LZ4, lz4.block.compress(_RAW[:100], store_size=False))],
            raw_length=len(_RAW),
        ),
        len(_RAW),
        f"plane decompressed to 100 bytes, expected {len(_RAW)}",
    ),
    "manifest read as a chunk": (
        lambda: codecs.encode(_RAW, 1, kind=Kind.MANIFEST),
        len(_RAW),
        "object is a manifest, expected a chunk",
    ),
    "chunk of another length": (
        lambda: _VALID,
        len(_RAW) - 4,
        f"decodes to {len(_RAW)} bytes where {len(_RAW) - 4} were expected",
    ),
    "bytes that hash to another id": (
        lambda: codecs.encode(_BASE, 4),
        len(_RAW),
        "decoded bytes do not hash to the object's id",
    ),
}


@pytest.mark.parametrize("case", list(DECODE_CASES))
def test_decode_names_what_is_wrong(case: str) -> None:
    make, length, reason = DECODE_CASES[case]
    with pytest.raises(CorruptObjectError) as info:
        decode_bytes(make(), _ID, length)
    assert info.value.reason.startswith(reason)
    assert info.value.object_id == _ID


def test_chunk_read_as_a_manifest_is_corrupt() -> None:
    with pytest.raises(CorruptObjectError) as info:
        codecs.decode(_VALID, _ID)  # decode expects a manifest unless told otherwise
    assert info.value.reason == "object is a chunk, expected a manifest"


def test_unverified_decode_skips_only_the_hash() -> None:
    """verify=False (the chain below a delta) still checks everything but the id."""
    out = bytearray(len(_RAW))
    codecs.decode_into(_VALID, "0" * 64, memoryview(out), verify=False)
    assert out == _RAW
    with pytest.raises(CorruptObjectError, match="header accounts for"):
        codecs.decode_into(_VALID + b"\0", "0" * 64, memoryview(out), verify=False)


# -- damaged headers must not make the decoder allocate what they claim -------------------------


def _peak_allocation(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(CorruptObjectError):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_manifest_with_a_flipped_raw_length_bit_is_refused_without_allocating_it(
    codec: str,
) -> None:
    """Bug: decode() allocates (and zeroes) the header's raw length before any other check.

    The header check caps the raw length at 2^34, so one flipped bit (33) in a
    compressed manifest's raw-length field makes loading a checkpoint zero
    8 GiB before the plane is found to decompress to a few KiB (MemoryError,
    not CorruptObjectError, on a smaller machine).  Bit 26 here claims 64 MiB.
    """
    raw = b'{"entries":[' + b'{"path":"model/w"},' * 300 + b"{}]}"
    obj = bytearray(codecs.encode(raw, 1, kind=Kind.MANIFEST, codec=codec))
    (raw_length,) = struct.unpack_from("<Q", obj, 8)
    struct.pack_into("<Q", obj, 8, raw_length | 1 << 26)
    peak = _peak_allocation(lambda: codecs.decode(bytes(obj), hex_digest(raw)))
    assert peak < 8 << 20, f"peak {peak >> 20} MiB decoding a {len(obj)}-byte object"


def test_zstd_frame_claiming_a_larger_plane_is_refused_without_allocating_it() -> None:
    """Bug: a zstd frame's own content-size field decides what the decompressor allocates.

    ``max_output_size`` only applies to frames that do not state their size,
    and the writer's frames always do.  One flipped bit in that field of a
    1 MiB chunk's exponent plane (a 4-byte field) made decode_into allocate
    1 GiB for a 256 KiB plane; bit 31 makes it 2 GiB.
    """
    raw = float_like("float32", 1 << 18, 0)  # 1 MiB: 256 KiB planes
    obj = bytearray(codecs.encode(raw, 4))
    header = read_header(bytes(obj), hex_digest(raw))
    assert header.planes[3].codec == PlaneCodec.ZSTD
    start = len(obj) - header.planes[3].stored_length
    assert zstandard.frame_content_size(bytes(obj[start:])) == header.plane_length
    frame_descriptor = obj[start + 4]
    assert frame_descriptor >> 6 == 2  # the content size is the 4 bytes after the descriptor
    obj[start + 5 + 3] ^= 0x40  # 256 Ki -> 1 Gi + 256 Ki
    peak = _peak_allocation(lambda: decode_bytes(bytes(obj), hex_digest(raw), len(raw)))
    assert peak < 64 << 20, f"peak {peak >> 20} MiB decoding a 1 MiB chunk"


# -- fuzzing ------------------------------------------------------------------------------------

_FUZZ_RAW = float_like("float32", 512, 3)
_FUZZ_BASE = drifted(_FUZZ_RAW, 4, 0.05)


def _fuzz_object(kind: str, codec: str) -> tuple[bytes, Kind, bytes | None]:
    if kind == "manifest":
        return codecs.encode(_FUZZ_RAW, 1, kind=Kind.MANIFEST, codec=codec), Kind.MANIFEST, None
    if kind == "delta":
        base_id = bytes.fromhex(hex_digest(_FUZZ_BASE))
        obj = codecs.encode(_FUZZ_RAW, 4, codec=codec, base=_FUZZ_BASE, base_id=base_id)
        return obj, Kind.CHUNK, _FUZZ_BASE
    width = {"planes": 4, "bytes": 1}[kind]
    return codecs.encode(_FUZZ_RAW, width, codec=codec), Kind.CHUNK, None


_EDIT = st.tuples(
    st.sampled_from(["flip", "set", "cut", "insert", "garbage"]),
    st.integers(0, 2**20),
    st.binary(min_size=1, max_size=16),
)


@FUZZ
@given(
    kind=st.sampled_from(["planes", "bytes", "delta", "manifest"]),
    codec=st.sampled_from(codecs.CODECS),
    edits=st.lists(_EDIT, min_size=1, max_size=4),
    header_bias=st.booleans(),
)
def test_mutated_objects_are_corrupt_or_decode_right(
    kind: str, codec: str, edits: list[tuple[str, int, bytes]], header_bias: bool
) -> None:
    """Flips, overwrites, truncations, insertions, garbage runs: never a crash, never wrong bytes.

    Half of the examples aim their edits at the header and plane table, where
    a single byte changes how everything after it is read.
    """
    original, object_kind, base = _fuzz_object(kind, codec)
    obj = bytearray(original)
    for op, position, value in edits:
        span = min(len(obj), 96) if header_bias else len(obj)
        at = position % (span + 1)
        if op == "flip" and obj:
            obj[at % len(obj)] ^= 1 << (value[0] % 8)
        elif op == "set" and obj:
            obj[at % len(obj)] = value[0]
        elif op == "cut":
            del obj[at:]
        elif op == "insert":
            obj[at:at] = value
        elif op == "garbage":
            obj[at : at + len(value)] = value
    out = bytearray(len(_FUZZ_RAW))
    try:
        codecs.decode_into(
            bytes(obj), hex_digest(_FUZZ_RAW), memoryview(out), base=base, kind=object_kind
        )
    except CorruptObjectError as err:
        assert err.object_id == hex_digest(_FUZZ_RAW)
        return
    # Surviving edits are those the decoded bytes do not notice: they must be the right ones.
    assert bytes(out) == _FUZZ_RAW


@FUZZ
@given(body=st.binary(max_size=300), version=st.booleans())
def test_random_garbage_is_corrupt(body: bytes, version: bool) -> None:
    """Bytes that start like an object (magic, and sometimes the right version)."""
    obj = MAGIC + (b"\x01" if version else b"") + body
    out = bytearray(64)
    with pytest.raises(CorruptObjectError):
        codecs.decode_into(obj, "ab" * 32, memoryview(out), base=bytes(64))


@FUZZ
@given(
    width=st.sampled_from(WIDTHS),
    planes=st.lists(
        st.tuples(st.sampled_from(list(PlaneCodec)), st.binary(max_size=64)),
        min_size=16,
        max_size=16,
    ),
    delta=st.booleans(),
)
def test_well_formed_headers_with_garbage_payloads_are_corrupt(
    width: int, planes: list[tuple[PlaneCodec, bytes]], delta: bool
) -> None:
    """Headers that pass every check, over payloads no encoder wrote: the decoder's own paths."""
    plane_length = 16
    chosen = []
    for codec, payload in planes[:width]:
        if codec == PlaneCodec.ZERO:
            payload = b""
        elif codec == PlaneCodec.RAW:
            payload = (payload * plane_length)[:plane_length].ljust(plane_length, b"\1")
        chosen.append((codec, payload))
    obj = make_object(
        chosen,
        raw_length=plane_length * width,
        width=width,
        transform=Transform.XOR_PLANES if delta else Transform.PLANES,
        base_id=b"\x07" * BASE_ID_LEN if delta else None,
    )
    read_header(obj, "cd" * 32)  # well-formed by construction
    out = bytearray(plane_length * width)
    with pytest.raises(CorruptObjectError):  # the id is no hash of anything: never verifies
        codecs.decode_into(obj, "cd" * 32, memoryview(out), base=bytes(len(out)) if delta else None)
