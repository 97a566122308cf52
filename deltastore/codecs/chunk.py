"""Encode a chunk (or a manifest) into an object, and decode it back.

Encoding: optional XOR against a base chunk and byte-plane split, fused in one
native pass (``_native.split_planes``), then each plane compressed on its own:
an all-zero plane costs nothing, an incompressible plane is stored raw.
Planes help because the bytes of a float differ in kind: the sign/exponent
byte of fp32 weights compresses to a few bits, the low mantissa bytes are
close to random and are not worth the compressor's time.

Decoding validates the header completely before it touches a payload, writes
straight into the caller's buffer and re-hashes the result: a chunk's id is
the BLAKE3 of its raw bytes, so a decoded chunk either hashes to its id or is
reported corrupt.  Every call releases the GIL in the native kernel, the
compressors and the hash, so callers run chunks on a thread pool.
"""

from __future__ import annotations

import threading

import lz4.block
import numpy as np
import zstandard

from deltastore._native import merge_planes, split_planes, zigzag_diff, zigzag_undiff
from deltastore.codecs.header import (
    DELTAS,
    ZIGZAG_WIDTHS,
    Header,
    Kind,
    PlaneCodec,
    PlaneRecord,
    Transform,
    pack_header,
    parse_header,
)
from deltastore.errors import CorruptObjectError
from deltastore.ids import digest

CODECS = ("zstd", "lz4")
DEFAULT_CODEC = "zstd"
#: zstd level 1 matched LZ4's speed on exponent planes and stored them in ~0.39 of their
#: size against LZ4's ~0.68 (fp32 weights, 1 MiB chunks).  Level 1's "fast" strategy with
#: matches of at least 7 bytes does better still on planes: the exponent plane of fp32 weights
#: is a few distinct bytes, and shorter matches only add sequences for the entropy coder to
#: code.  Measured on 120 MiB of trained-like fp32 (one thread): full chunks 0.848 -> 0.841
#: of their size at 500 -> 670 MB/s; XOR deltas unchanged (0.458, ~700 MB/s).  A 64-entry
#: match table (hash_log 6, down from 14) does better again: the planes' gain is entropy, not
#: matches, so a table that finds fewer of them leaves more to the Huffman stage and misses
#: the cache less.  On the benchmark's newest checkpoints (benchmarks/bench_zstd.py,
#: docs/decisions.md): full fp32 planes 0.824 -> 0.821 at 1.5-1.9x the speed, full bf16
#: 0.677 -> 0.663 at 2.5x, deltas 0.740 -> 0.740 (pretrain) and 0.704 -> 0.702 (finetune).
ZSTD_PARAMETERS = {
    "strategy": zstandard.STRATEGY_FAST,
    "min_match": 7,
    "window_log": 17,
    "hash_log": 6,
    "write_checksum": 0,
}
#: Compressed output this much smaller than the plane may be an all-zero plane.
_ZERO_SUSPECT_RATIO = 64
#: Small planes are always scanned: the compressor's frame overhead hides them from the ratio.
_ALWAYS_SCAN_BELOW = 64 << 10
#: Planes this large are sampled before they are compressed (:func:`_looks_incompressible`).
_SAMPLE_PLANES_FROM = 64 << 10
_SAMPLES = 4
_SAMPLE_BYTES = 8 << 10
#: Noise has one zero byte in 256; a plane with more than this share of them is not noise.
_NOISE_MAX_ZERO_SHARE = 0.02
#: A sample compressed to at least 99/100 of its size is noise.
_NOISE_NUMERATOR, _NOISE_DENOMINATOR = 99, 100
#: LZ4 cannot expand a block more than ~255x; a header claiming more is corrupt, and
#: checking first keeps a flipped length bit from allocating gigabytes.
_LZ4_MAX_EXPANSION = 255


#: Scratch slots of :func:`encode_parts`: one thread may hold two encodings at once.
SCRATCH_SLOTS = 2


class _ThreadState(threading.local):
    """Per-thread compressors and scratch: zstd contexts are not thread-safe,
    and a fresh allocation per chunk costs more than the split kernel."""

    def __init__(self) -> None:
        self.zstd_c = zstandard.ZstdCompressor(
            compression_params=zstandard.ZstdCompressionParameters(**ZSTD_PARAMETERS)
        )
        self.zstd_d = zstandard.ZstdDecompressor()
        # Encoding slots 0 and 1 (split planes, then the zigzag differences), then the
        # decoder's merged planes.
        self.scratch = [bytearray() for _ in range(2 * SCRATCH_SLOTS + 1)]

    def scratch_view(self, size: int, slot: int) -> memoryview:
        if len(self.scratch[slot]) < size:
            self.scratch[slot] = bytearray(size)
        return memoryview(self.scratch[slot])[:size]


_state = _ThreadState()


def _pack(plane: memoryview, codec: str) -> bytes:
    packed: bytes
    if codec == "zstd":
        packed = _state.zstd_c.compress(plane)
    else:
        packed = lz4.block.compress(plane, store_size=False)
    return packed


def _looks_incompressible(plane: memoryview, codec: str) -> bool:
    """Whether a large plane is noise that compressing whole would shrink by under 1 %.

    The low mantissa planes of floats are close to noise: three of the four
    planes of a full fp32 chunk, one or two of a delta's.  Compressing them
    only to store them raw cost a third of a full chunk's encoding time.  A
    plane is judged instead by its share of zero bytes (noise has ~1/256; a
    delta whose unchanged rows are zeros has many more, wherever they lie) and
    by samples spread over it.  On the benchmark's checkpoints the samples
    never called a plane noise that compressed below 0.99 of its size whole
    (docs/decisions.md); a wrong call costs ratio on that plane, never bits.
    """
    length = len(plane)
    if length < _SAMPLE_PLANES_FROM:
        return False
    zeros = length - int(np.count_nonzero(np.frombuffer(plane, np.uint8)))
    if zeros > length * _NOISE_MAX_ZERO_SHARE:
        return False
    step = length // _SAMPLES
    for start in range(0, step * _SAMPLES, step):
        sample = plane[start : start + _SAMPLE_BYTES]
        if len(_pack(sample, codec)) * _NOISE_DENOMINATOR < len(sample) * _NOISE_NUMERATOR:
            return False
    return True


def _compress_plane(plane: memoryview, codec: str) -> tuple[PlaneCodec, bytes | memoryview]:
    length = len(plane)
    if length == 0:
        return PlaneCodec.ZERO, b""
    if _looks_incompressible(plane, codec):
        return PlaneCodec.RAW, plane
    packed = _pack(plane, codec)
    tag = PlaneCodec.ZSTD if codec == "zstd" else PlaneCodec.LZ4
    suspect = len(packed) * _ZERO_SUSPECT_RATIO < length or length <= _ALWAYS_SCAN_BELOW
    if suspect and not np.frombuffer(plane, np.uint8).any():
        return PlaneCodec.ZERO, b""
    if len(packed) >= length:
        return PlaneCodec.RAW, plane
    return tag, packed


def default_delta(element_width: int) -> Transform:
    """The delta transform for elements of this width.

    A float that moved a little keeps its sign and exponent, so its bit pattern
    moved by a small integer; XOR flips a whole run of bits whenever that move
    carries.  On the benchmark's checkpoints the difference stored fp32 weights
    in 0.61 of their size against XOR's 0.63, Adam's second moment in 0.69
    against 0.77, bf16 weights in 0.38 against 0.43 (docs/decisions.md).
    """
    return Transform.ZIGZAG_PLANES if element_width in ZIGZAG_WIDTHS else Transform.XOR_PLANES


def encode(
    raw: memoryview | bytes,
    element_width: int,
    *,
    kind: Kind = Kind.CHUNK,
    codec: str = DEFAULT_CODEC,
    base: memoryview | bytes | bytearray | None = None,
    base_id: bytes | None = None,
    delta: Transform | None = None,
) -> bytes:
    """Encode ``raw`` into a self-describing object.

    With ``base`` (the same-sized raw bytes of ``base_id``) the object is a
    delta: the zigzag difference of the two for 2, 4 and 8-byte elements, else
    their XOR (``delta`` forces one), split into planes.
    """
    return b"".join(
        encode_parts(
            raw, element_width, kind=kind, codec=codec, base=base, base_id=base_id, delta=delta
        )
    )


def encode_parts(
    raw: memoryview | bytes,
    element_width: int,
    *,
    kind: Kind = Kind.CHUNK,
    codec: str = DEFAULT_CODEC,
    base: memoryview | bytes | bytearray | None = None,
    base_id: bytes | None = None,
    slot: int = 0,
    delta: Transform | None = None,
) -> list[bytes | memoryview]:
    """:func:`encode`, as the pieces of the object in order, for a vectored write.

    Raw planes are views of this thread's scratch ``slot`` and stay valid only
    until the thread's next encoding into the same slot: joining a multi-MiB object
    would take fresh memory for every chunk, and page faults cost more here
    than the compression (benchmarks/README.md).
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {CODECS}")
    raw = memoryview(raw).cast("B")
    if base is not None and (base_id is None or len(base) != len(raw)):
        raise ValueError("a delta needs a base of the same length and its id")
    if element_width < 1 or len(raw) % element_width:
        element_width = 1
    if base is not None:
        transform = delta if delta is not None else default_delta(element_width)
        if transform == Transform.ZIGZAG_PLANES and element_width not in ZIGZAG_WIDTHS:
            raise ValueError(
                f"zigzag differences need 2, 4 or 8-byte elements, not {element_width}"
            )
    elif element_width > 1:
        transform = Transform.PLANES
    else:
        transform = Transform.NONE
    if transform == Transform.NONE:
        planes = [raw]
    else:
        split = _state.scratch_view(len(raw), 2 * slot)
        if transform == Transform.ZIGZAG_PLANES:
            assert base is not None
            diff = _state.scratch_view(len(raw), 2 * slot + 1)
            zigzag_diff(raw, base, diff, element_width)
            split_planes(diff, split, element_width)
        else:
            split_planes(raw, split, element_width, base)
        n = len(raw) // element_width
        planes = [split[p * n : (p + 1) * n] for p in range(element_width)]
    records: list[PlaneRecord] = []
    payloads: list[bytes | memoryview] = []
    for plane in planes:
        tag, payload = _compress_plane(plane, codec)
        records.append(PlaneRecord(tag, len(payload)))
        payloads.append(payload)
    header = pack_header(
        kind, transform, element_width, len(raw), base_id if base is not None else None, records
    )
    return [header, *payloads]


def read_header(
    obj: bytes | memoryview, object_id: str, *, object_size: int | None = None
) -> Header:
    """The validated header of an object (for the plumbing and the decoder).

    With ``object_size``, ``obj`` may be just the object's first
    ``header.MAX_HEADER_BYTES`` bytes (see ``parse_header``).
    """
    return parse_header(obj, object_id, object_size=object_size)


def _decompress_plane(
    obj: memoryview, offset: int, record: PlaneRecord, plane_length: int, object_id: str
) -> memoryview | bytes | None:
    payload = obj[offset : offset + record.stored_length]
    if record.codec == PlaneCodec.ZERO:
        return None
    if record.codec == PlaneCodec.RAW:
        return payload
    try:
        if record.codec == PlaneCodec.LZ4:
            if plane_length > _LZ4_MAX_EXPANSION * len(payload) + 16:
                raise CorruptObjectError(object_id, "LZ4 plane claims an impossible length")
            plain: bytes = lz4.block.decompress(payload, uncompressed_size=plane_length)
        else:
            # zstandard sizes its output by the frame's own content size, ignoring
            # max_output_size: a flipped bit there must not decide an allocation.
            claimed = zstandard.frame_content_size(payload)
            if claimed not in (plane_length, -1):
                raise CorruptObjectError(
                    object_id, f"zstd plane claims {claimed} bytes, expected {plane_length}"
                )
            plain = _state.zstd_d.decompress(payload, max_output_size=plane_length)
    except (lz4.block.LZ4BlockError, zstandard.ZstdError, ValueError) as exc:
        raise CorruptObjectError(object_id, f"plane does not decompress: {exc}") from None
    if len(plain) != plane_length:
        raise CorruptObjectError(
            object_id, f"plane decompressed to {len(plain)} bytes, expected {plane_length}"
        )
    return plain


def _check_claimed_length(header: Header, obj: bytes | memoryview, object_id: str) -> None:
    """Refuse a raw length the payloads cannot produce, before anything is allocated for it."""
    view = memoryview(obj)
    offset = header.payload_offset
    for record in header.planes:
        payload = view[offset : offset + record.stored_length]
        offset += record.stored_length
        if record.codec == PlaneCodec.LZ4 and header.plane_length > (
            _LZ4_MAX_EXPANSION * len(payload) + 16
        ):
            raise CorruptObjectError(object_id, "LZ4 plane claims an impossible length")
        if record.codec == PlaneCodec.ZSTD:
            try:
                claimed = zstandard.frame_content_size(payload)
            except zstandard.ZstdError as exc:
                raise CorruptObjectError(object_id, f"plane does not decompress: {exc}") from None
            if claimed not in (header.plane_length, -1):
                raise CorruptObjectError(
                    object_id, f"zstd plane claims {claimed} bytes, expected {header.plane_length}"
                )


def decode_into(
    obj: bytes | memoryview,
    object_id: str,
    out: memoryview,
    *,
    base: memoryview | bytes | bytearray | None = None,
    verify: bool = True,
    kind: Kind = Kind.CHUNK,
) -> Header:
    """Decode an object into ``out`` (exactly its raw length) and check its id.

    ``object_id`` is the 64-hex id the object was read under; with ``verify``
    the decoded bytes must hash to it.  ``base`` is the raw bytes of the
    header's base chunk, required for a delta.  ``kind`` is what the caller
    asked for: a manifest read where a chunk is expected is corrupt too.
    """
    view = memoryview(obj)
    header = parse_header(view, object_id)
    if header.kind != kind:
        raise CorruptObjectError(
            object_id, f"object is a {header.kind.name.lower()}, expected a {kind.name.lower()}"
        )
    if len(out) != header.raw_length:
        raise CorruptObjectError(
            object_id, f"decodes to {header.raw_length} bytes where {len(out)} were expected"
        )
    if header.transform in DELTAS:
        if base is None or len(base) != header.raw_length:
            raise CorruptObjectError(object_id, "delta object decoded without its base")
    else:
        base = None
    plane_length = header.plane_length
    planes = []
    offset = header.payload_offset
    for record in header.planes:
        planes.append(_decompress_plane(view, offset, record, plane_length, object_id))
        offset += record.stored_length
    if header.transform == Transform.NONE:
        if planes[0] is None:
            out[:] = bytes(len(out))
        else:
            out[:] = planes[0]
    elif header.transform == Transform.ZIGZAG_PLANES:
        assert base is not None
        merged = _state.scratch_view(len(out), 2 * SCRATCH_SLOTS)
        merge_planes(planes, merged, header.element_width)
        zigzag_undiff(merged, base, out, header.element_width)
    else:
        merge_planes(planes, out, header.element_width, base)
    if verify and digest(out).hex() != object_id:
        raise CorruptObjectError(object_id, "decoded bytes do not hash to the object's id")
    return header


def decode(
    obj: bytes | memoryview, object_id: str, *, verify: bool = True, kind: Kind = Kind.MANIFEST
) -> bytearray:
    """Decode a full (non-delta) object into a new buffer: manifests and plumbing."""
    header = parse_header(obj, object_id)
    if header.kind != kind:
        raise CorruptObjectError(
            object_id, f"object is a {header.kind.name.lower()}, expected a {kind.name.lower()}"
        )
    _check_claimed_length(header, obj, object_id)
    out = bytearray(header.raw_length)
    decode_into(obj, object_id, memoryview(out), verify=verify, kind=kind)
    return out
