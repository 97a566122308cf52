"""Content ids: BLAKE3-256 digests, shown as 64 lower-case hex characters.

A leaf module: imports nothing from deltastore.
"""

from __future__ import annotations

import re

import blake3

ID_BYTES = 32
ID_HEX_LEN = 2 * ID_BYTES
_HEX_ID = re.compile(r"[0-9a-f]{64}")
_HEX_PREFIX = re.compile(r"[0-9a-f]{6,64}")
#: Shortest id prefix accepted where an id is expected (as in git, short ids are a convenience).
MIN_PREFIX_LEN = 6


def digest(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of ``data`` as 32 raw bytes.

    blake3-py releases the GIL while hashing, so callers on a thread pool
    hash in parallel.
    """
    return blake3.blake3(data).digest()


def hex_digest(data: bytes | bytearray | memoryview) -> str:
    """BLAKE3-256 of ``data`` as 64 hex characters."""
    return digest(data).hex()


def is_full_id(text: str) -> bool:
    """True for exactly 64 lower-case hex characters."""
    return _HEX_ID.fullmatch(text) is not None


def is_id_prefix(text: str) -> bool:
    """True for 6 to 64 lower-case hex characters."""
    return _HEX_PREFIX.fullmatch(text) is not None
