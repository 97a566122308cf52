"""Chunk <-> object bytes.  The only package that imports the native extension.

It knows nothing of the catalog, the object store or checkpoints: it turns
raw bytes into self-describing objects and back.
"""

from deltastore.codecs.chunk import (
    CODECS,
    DEFAULT_CODEC,
    decode,
    decode_into,
    default_delta,
    encode,
    encode_parts,
    read_header,
)
from deltastore.codecs.header import Header, Kind, PlaneCodec, Transform

__all__ = [
    "CODECS",
    "DEFAULT_CODEC",
    "Header",
    "Kind",
    "PlaneCodec",
    "Transform",
    "decode",
    "decode_into",
    "default_delta",
    "encode",
    "encode_parts",
    "read_header",
]
