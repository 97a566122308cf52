"""The safetensors file format: its dtype codes, writing a header, reading one back.

A safetensors file (huggingface/safetensors, "Format") is an 8-byte little-endian
header length N, N bytes of UTF-8 JSON ``{name: {"dtype", "shape", "data_offsets":
[begin, end]}, "__metadata__": {str: str}}``, then every tensor's bytes back to
back, little-endian, in C order, without holes.

The exporter writes the header itself rather than calling
``safetensors.torch.save_file`` because that call needs every tensor of the
file at once (a whole model in memory, next to the store's decode buffers)
and an optional package; with the header known up front, entries are decoded
and written one batch at a time.  Tests read every file back with the
safetensors library.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: torch dtype name -> safetensors dtype code, for every dtype both sides know.
CODES = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "uint16": "U16",
    "int32": "I32",
    "uint32": "U32",
    "int64": "I64",
    "uint64": "U64",
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
    "complex64": "C64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e8m0fnu": "F8_E8M0",
}
#: safetensors dtype code -> torch dtype name.
TORCH_NAMES = {code: name for name, code in CODES.items()}

METADATA_KEY = "__metadata__"
# What deltastore writes into the metadata of an export, and reads back on import.
META_CHECKPOINT = "deltastore.checkpoint"
META_STEP = "deltastore.step"
META_MESSAGE = "deltastore.message"
META_METRICS = "deltastore.metrics"  # JSON object
META_PREFIX = "deltastore.prefix"
#: The data starts at a multiple of this, as the safetensors writer pads its header.
DATA_ALIGNMENT = 8
#: The safetensors reader refuses larger headers (a guard against hostile files).
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorHeader:
    """One tensor's line in the header."""

    name: str
    code: str
    shape: tuple[int, ...]
    nbytes: int


def encode_header(tensors: Sequence[TensorHeader], metadata: Mapping[str, str]) -> bytes:
    """The length prefix and JSON header for ``tensors`` written in this order."""
    header: dict[str, Any] = {METADATA_KEY: dict(metadata)} if metadata else {}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {
            "dtype": tensor.code,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % DATA_ALIGNMENT)
    return struct.pack("<Q", len(text)) + text


@dataclass(frozen=True)
class FileHeader:
    """What a safetensors file holds, read from its header alone."""

    tensors: list[TensorHeader]  # in the order of their data in the file
    metadata: dict[str, str]


def read_header(path: Path) -> FileHeader:
    """Parse a safetensors header; ValueError saying what is wrong with a malformed one.

    The tensors come in the order their bytes sit in the file, which is the
    order the writer chose (safetensors' own header lists names sorted).
    """
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"header of {length} bytes is larger than safetensors allows")
        raw = f.read(length)
    if len(raw) != length:
        raise ValueError("the header is truncated")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError("__metadata__ is not a map of strings to strings")
    tensors = [(_tensor_header(name, info), _begin(info)) for name, info in header.items()]
    tensors.sort(key=lambda pair: pair[1])  # stable: empty tensors keep their header order
    return FileHeader([t for t, _ in tensors], metadata)


def _tensor_header(name: str, info: Any) -> TensorHeader:
    try:
        code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(code, str) or not all(isinstance(n, int) for n in shape):
            raise TypeError
        return TensorHeader(name, code, tuple(shape), int(end) - int(begin))
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"tensor {name!r} has a malformed header entry") from None


def _begin(info: Any) -> int:
    return int(info["data_offsets"][0])
