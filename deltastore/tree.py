"""A state <-> its tagged-JSON structure plus a list of array leaves.

The structure keeps every Python type exactly (DESIGN.md invariant 4) and is
plain JSON, so reading it back executes nothing:

=====================  ==========================================
value                  tagged JSON
=====================  ==========================================
None, True, False      null, true, false
str                    a JSON string
int (any size)         {"int": "<decimal>"}
float                  {"float": "<16 hex digits: IEEE-754 bits>"}
bytes                  {"bytes": "<base64>"}
list                   [ ... ]
tuple                  {"tuple": [ ... ]}
dict / OrderedDict     {"dict": [[key, value], ...]} / {"odict": ...}
array leaf             {"array": <index into the entry list>}
=====================  ==========================================

Floats are stored as their bits, which keeps NaN payloads, infinities and
-0.0.  Dict keys are str or int (tagged like values) and keep their order.

Key paths name array leaves: the keys and sequence indices from the root,
joined by ``/``.  Inside a key, ``~`` is written ``~0`` and ``/`` is written
``~1`` (the escaping of RFC 6901, JSON Pointer), so ``{"a/b": {"c": t}}``
gives ``a~1b/c``.  An int key and a str key that print alike in one dict
(``1`` and ``"1"``) would share a key path; such a state is refused.
"""

from __future__ import annotations

import base64
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from deltastore import arrays
from deltastore.errors import UnsupportedTypeError

JSON = Any  # the structure is recursive JSON; a precise alias buys nothing here


def escape_key(key: str) -> str:
    """Escape one dict key for use as a key-path segment."""
    return key.replace("~", "~0").replace("/", "~1")


def unescape_key(segment: str) -> str:
    """Inverse of :func:`escape_key`."""
    return segment.replace("~1", "/").replace("~0", "~")


@dataclass(frozen=True)
class FlatState:
    """A state taken apart: its structure and its array leaves in order."""

    structure: JSON
    leaves: list[tuple[str, arrays.ArrayBytes]]  # (key path, bytes view)


def _float_bits(value: float) -> str:
    return struct.pack(">d", value).hex()


def _bits_float(text: str) -> float:
    return float(struct.unpack(">d", bytes.fromhex(text))[0])


class _Flattener:
    def __init__(self) -> None:
        self.leaves: list[tuple[str, arrays.ArrayBytes]] = []
        self.paths: set[str] = set()
        self.active: set[int] = set()  # ids of containers on the current path: cycle guard

    def key_segment(self, key: object, path: str) -> tuple[JSON, str]:
        if type(key) is str:
            return key, escape_key(key)
        if type(key) is int:
            return {"int": str(key)}, str(key)
        raise UnsupportedTypeError(
            path, f"dict key of type {type(key).__qualname__}", "dict keys must be str or int"
        )

    def visit(self, value: Any, path: str) -> JSON:
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return value
        if kind is int:
            return {"int": str(value)}
        if kind is float:
            return {"float": _float_bits(value)}
        if kind is bytes:
            return {"bytes": base64.b64encode(value).decode("ascii")}
        if kind in (list, tuple, dict, OrderedDict):
            if id(value) in self.active:
                raise UnsupportedTypeError(path, kind.__qualname__, "the state contains a cycle")
            self.active.add(id(value))
            try:
                return self.visit_container(value, path)
            finally:
                self.active.discard(id(value))
        if arrays.is_array(value):
            if path in self.paths:
                raise UnsupportedTypeError(
                    path, kind.__qualname__, "two leaves share this key path"
                )
            self.paths.add(path)
            self.leaves.append((path, arrays.to_bytes(value, path)))
            return {"array": len(self.leaves) - 1}
        raise UnsupportedTypeError(path, f"{kind.__module__}.{kind.__qualname__}")

    def visit_container(self, value: Any, path: str) -> JSON:
        if type(value) is list:
            return [self.visit(v, _child(path, str(i))) for i, v in enumerate(value)]
        if type(value) is tuple:
            return {"tuple": [self.visit(v, _child(path, str(i))) for i, v in enumerate(value)]}
        items = []
        for key, item in value.items():
            tagged_key, segment = self.key_segment(key, path)
            items.append([tagged_key, self.visit(item, _child(path, segment))])
        return {"odict" if type(value) is OrderedDict else "dict": items}


def _child(path: str, segment: str) -> str:
    return segment if path == "" else f"{path}/{segment}"


def flatten(state: Any) -> FlatState:
    """Take a state apart; raise UnsupportedTypeError naming the first bad leaf."""
    flattener = _Flattener()
    structure = flattener.visit(state, "")
    return FlatState(structure, flattener.leaves)


def unflatten(structure: JSON, leaves: list[Any]) -> Any:
    """Rebuild a state from its structure and its restored array leaves."""
    return _build(structure, leaves)


def _build(node: JSON, leaves: list[Any]) -> Any:
    if node is None or isinstance(node, (bool, str)):
        return node
    if isinstance(node, list):
        return [_build(v, leaves) for v in node]
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"malformed structure node: {node!r:.80}")
    ((tag, body),) = node.items()
    if tag == "int":
        return int(body)
    if tag == "float":
        return _bits_float(body)
    if tag == "bytes":
        return base64.b64decode(body, validate=True)
    if tag == "tuple":
        return tuple(_build(v, leaves) for v in body)
    if tag == "array":
        return leaves[body]
    if tag in ("dict", "odict"):
        pairs = ((_build(k, leaves), _build(v, leaves)) for k, v in body)
        return OrderedDict(pairs) if tag == "odict" else dict(pairs)
    raise ValueError(f"unknown structure tag {tag!r}")


def iter_array_indices(structure: JSON) -> Iterator[int]:
    """The entry indices the structure refers to, in order (for validation)."""
    if isinstance(structure, list):
        for item in structure:
            yield from iter_array_indices(item)
    elif isinstance(structure, dict) and len(structure) == 1:
        ((tag, body),) = structure.items()
        if tag == "array":
            yield body
        elif tag in ("tuple",):
            for item in body:
                yield from iter_array_indices(item)
        elif tag in ("dict", "odict"):
            for _, item in body:
                yield from iter_array_indices(item)
