"""The object header (docs/format.md, "Objects"): what an object says about itself.

All integers are little-endian.  The header is followed by one record per
plane, then the plane payloads in plane order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from deltastore.errors import CorruptObjectError

MAGIC = b"DSOB"
FORMAT_VERSION = 1
#: magic, version, kind, transform, element width, raw length.
_FIXED = struct.Struct("<4sBBBBQ")
_PLANE = struct.Struct("<BQ")  # codec, stored length
BASE_ID_LEN = 32
#: A chunk is at most a few MiB; a manifest at most this.  Bounds what a
#: malicious header can make the decoder allocate.
MAX_RAW_LENGTH = 1 << 34
MAX_ELEMENT_WIDTH = 64


class Kind(IntEnum):
    CHUNK = 0
    MANIFEST = 1
    RECORD = 2  # a journal record (deltastore.journal): a ref change, a forget, a thin


class Transform(IntEnum):
    NONE = 0  # one plane: the raw bytes
    PLANES = 1  # byte-plane split: plane p holds byte p of every element
    XOR_PLANES = 2  # XOR against the base chunk, then byte-plane split (a delta)
    ZIGZAG_PLANES = 3  # zigzag integer difference from the base, then byte-plane split (a delta)


#: Transforms that are deltas: their header carries the base id.
DELTAS = (Transform.XOR_PLANES, Transform.ZIGZAG_PLANES)
#: Element widths the zigzag difference is defined for.
ZIGZAG_WIDTHS = (2, 4, 8)


class PlaneCodec(IntEnum):
    ZERO = 0  # all-zero plane, no payload
    RAW = 1  # stored as is
    LZ4 = 2  # LZ4 block, no size prefix
    ZSTD = 3  # one zstd frame


@dataclass(frozen=True)
class PlaneRecord:
    codec: PlaneCodec
    stored_length: int


@dataclass(frozen=True)
class Header:
    kind: Kind
    transform: Transform
    element_width: int
    raw_length: int
    base_id: bytes | None
    planes: tuple[PlaneRecord, ...]
    payload_offset: int  # where the first plane's payload starts

    @property
    def plane_count(self) -> int:
        return plane_count(self.transform, self.element_width)

    @property
    def plane_length(self) -> int:
        return self.raw_length // self.plane_count


def plane_count(transform: Transform, element_width: int) -> int:
    return 1 if transform == Transform.NONE else element_width


def pack_header(
    kind: Kind,
    transform: Transform,
    element_width: int,
    raw_length: int,
    base_id: bytes | None,
    planes: list[PlaneRecord],
) -> bytes:
    """Serialise a header; the caller appends the payloads in plane order."""
    parts = [_FIXED.pack(MAGIC, FORMAT_VERSION, kind, transform, element_width, raw_length)]
    if transform in DELTAS:
        assert base_id is not None and len(base_id) == BASE_ID_LEN
        parts.append(base_id)
    parts.extend(_PLANE.pack(p.codec, p.stored_length) for p in planes)
    return b"".join(parts)


def parse_header(
    obj: bytes | memoryview, object_id: str, *, object_size: int | None = None
) -> Header:
    """Parse and validate a header; raise CorruptObjectError on anything off.

    Validation is complete before any payload is touched: lengths add up to the
    object's size exactly, so the decoder never reads out of bounds.
    ``object_size`` lets ``obj`` be only the object's first bytes (at least
    its header: MAX_HEADER_BYTES always suffice) when the size is known from
    the file, so a rebuild reads headers without reading payloads.
    """

    def corrupt(reason: str) -> CorruptObjectError:
        return CorruptObjectError(object_id, reason)

    if len(obj) < _FIXED.size:
        raise corrupt(f"truncated header ({len(obj)} bytes)")
    magic, version, kind, transform, width, raw_length = _FIXED.unpack_from(obj, 0)
    if magic != MAGIC:
        raise corrupt("not a deltastore object (bad magic)")
    if version != FORMAT_VERSION:
        raise corrupt(f"object format version {version}; this deltastore reads {FORMAT_VERSION}")
    try:
        kind, transform = Kind(kind), Transform(transform)
    except ValueError as exc:
        raise corrupt(f"bad header field: {exc}") from None
    if not 1 <= width <= MAX_ELEMENT_WIDTH:
        raise corrupt(f"element width {width} out of range")
    if raw_length > MAX_RAW_LENGTH:
        raise corrupt(f"raw length {raw_length} out of range")
    if transform == Transform.ZIGZAG_PLANES and width not in ZIGZAG_WIDTHS:
        raise corrupt(f"zigzag differences of {width}-byte elements")
    count = plane_count(transform, width)
    if raw_length % count:
        raise corrupt(f"raw length {raw_length} is not a multiple of {count} planes")
    offset = _FIXED.size
    base_id = None
    if transform in DELTAS:
        if len(obj) < offset + BASE_ID_LEN:
            raise corrupt("truncated base id")
        base_id = bytes(obj[offset : offset + BASE_ID_LEN])
        offset += BASE_ID_LEN
    if len(obj) < offset + count * _PLANE.size:
        raise corrupt("truncated plane table")
    plane_length = raw_length // count
    records = []
    for _ in range(count):
        codec_value, stored = _PLANE.unpack_from(obj, offset)
        offset += _PLANE.size
        try:
            codec = PlaneCodec(codec_value)
        except ValueError:
            raise corrupt(f"unknown plane codec {codec_value}") from None
        if codec == PlaneCodec.ZERO and stored != 0:
            raise corrupt("zero plane with a payload")
        if codec == PlaneCodec.RAW and stored != plane_length:
            raise corrupt(f"raw plane of {stored} bytes, expected {plane_length}")
        records.append(PlaneRecord(codec, stored))
    payload = sum(r.stored_length for r in records)
    size = len(obj) if object_size is None else object_size
    if offset + payload != size:
        raise corrupt(f"object is {size} bytes, header accounts for {offset + payload}")
    return Header(kind, transform, width, raw_length, base_id, tuple(records), offset)


#: Enough bytes to hold the fixed header and the base id.
HEAD_BYTES = _FIXED.size + BASE_ID_LEN
#: Enough bytes to hold any whole header: the fixed part, the base id and the widest plane table.
MAX_HEADER_BYTES = HEAD_BYTES + MAX_ELEMENT_WIDTH * _PLANE.size


def peek_base_id(head: bytes, object_id: str) -> bytes | None:
    """The base id named by an object's first HEAD_BYTES bytes (None for a full object)."""
    if len(head) < _FIXED.size or head[:4] != MAGIC:
        raise CorruptObjectError(object_id, "not a deltastore object (bad magic)")
    if head[6] not in DELTAS:
        return None
    if len(head) < HEAD_BYTES:
        raise CorruptObjectError(object_id, "truncated base id")
    return bytes(head[_FIXED.size : HEAD_BYTES])
