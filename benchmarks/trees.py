"""Walking checkpoint states without deltastore: the bit-exact check and the safetensors split.

Both live here, written from scratch, so that neither the check of a restore nor a peer's
storage depends on the code under test (deltastore's own tree module).

A state is a tree of dict / OrderedDict (str or int keys), list, tuple, None, bool, int, float,
str and torch tensors: what ``torch.save`` of a model + optimizer state holds.
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from typing import Any

import torch

State = Any

_SCALARS = (type(None), bool, int, str)


def first_difference(got: State, want: State, path: str = "") -> str | None:
    """Where ``got`` differs from ``want`` (a key path and what differs), or None if bit-equal.

    Containers must have the same type, keys in the same order and the same length; tensors the
    same dtype, shape and bytes; floats the same bits (so NaN payloads and -0.0 count); other
    leaves the same type and value.  Returning the place, not a bool, makes a failure in the
    report actionable.
    """
    where = path or "<root>"
    if type(got) is not type(want):
        return f"{where}: type {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, torch.Tensor):
        return _tensor_difference(got, want, where)
    if isinstance(want, dict):
        if list(got) != list(want):
            return f"{where}: keys differ"
        for key in want:
            found = first_difference(got[key], want[key], f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(want, (list, tuple)):
        if len(got) != len(want):
            return f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            found = first_difference(g, w, f"{path}/{i}")
            if found:
                return found
        return None
    if isinstance(want, float):
        same = struct.pack("<d", got) == struct.pack("<d", want)
        return None if same else f"{where}: float {got!r} != {want!r}"
    if isinstance(want, _SCALARS):
        return None if got == want else f"{where}: {got!r} != {want!r}"
    return f"{where}: unexpected leaf type {type(want).__name__}"


def _tensor_difference(got: torch.Tensor, want: torch.Tensor, where: str) -> str | None:
    if got.dtype != want.dtype:
        return f"{where}: dtype {got.dtype} != {want.dtype}"
    if got.shape != want.shape:
        return f"{where}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if not torch.equal(_raw_bytes(got), _raw_bytes(want)):
        return f"{where}: tensor bytes differ"
    return None


def _raw_bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's elements as a flat uint8 tensor (compares bits, not values: NaN == NaN)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


# -- the split used by the safetensors peers ------------------------------------------------------
#
# safetensors stores a flat name -> tensor mapping plus string metadata.  A checkpoint is more:
# nested dicts with int keys (optimizer state), tuples (Adam's betas), floats, None.  The
# skeleton below is tagged JSON, kept in the file's metadata, with each tensor replaced by its
# name in the flat mapping.


def split(state: State) -> tuple[str, dict[str, torch.Tensor]]:
    """``state`` as (skeleton JSON, tensors by name), for a safetensors file."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(node: State, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            name = f"{len(tensors)}:{path}"  # the index keeps names unique whatever the keys
            tensors[name] = node.detach().cpu().contiguous()
            return {"T": name}
        if isinstance(node, dict):
            kind = "O" if isinstance(node, OrderedDict) else "D"
            return {kind: [[_key(k), encode(v, f"{path}/{k}")] for k, v in node.items()]}
        if isinstance(node, (list, tuple)):
            kind = "L" if isinstance(node, list) else "U"
            return {kind: [encode(v, f"{path}/{i}") for i, v in enumerate(node)]}
        if isinstance(node, float):
            return {"F": struct.pack("<d", node).hex()}  # exact bits, NaN and -0.0 included
        if isinstance(node, bool) or node is None or isinstance(node, str):
            return {"S": node}
        if isinstance(node, int):
            return {"I": str(node)}  # any size
        raise TypeError(f"{path or '<root>'}: cannot store a {type(node).__name__}")

    skeleton = json.dumps(encode(state, ""), separators=(",", ":"))
    return skeleton, tensors


def join(skeleton: str, tensors: dict[str, torch.Tensor]) -> State:
    """The inverse of :func:`split`."""

    def decode(node: dict[str, Any]) -> State:
        ((kind, value),) = node.items()
        if kind == "T":
            return tensors[value]
        if kind in ("D", "O"):
            items = [(_unkey(k), decode(v)) for k, v in value]
            return OrderedDict(items) if kind == "O" else dict(items)
        if kind == "L":
            return [decode(v) for v in value]
        if kind == "U":
            return tuple(decode(v) for v in value)
        if kind == "F":
            return struct.unpack("<d", bytes.fromhex(value))[0]
        if kind == "I":
            return int(value)
        return value  # "S": bool, None, str

    return decode(json.loads(skeleton))


def _key(key: Any) -> list[Any]:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"dict key {key!r}: only str and int keys are stored")
    return ["i", str(key)] if isinstance(key, int) else ["s", key]


def _unkey(key: list[Any]) -> str | int:
    return int(key[1]) if key[0] == "i" else str(key[1])


def dominant_dtype(state: State) -> torch.dtype:
    """The dtype holding most of the state's tensor bytes: the element type for byte compressors.

    File compressors (zipnn, z4ai) take one element type for a whole buffer; giving them the
    one most bytes have is what a user would do.
    """
    sizes: dict[torch.dtype, int] = {}

    def visit(node: State) -> None:
        if isinstance(node, torch.Tensor):
            sizes[node.dtype] = sizes.get(node.dtype, 0) + node.numel() * node.element_size()
        elif isinstance(node, dict):
            for v in node.values():
                visit(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                visit(v)

    visit(state)
    return max(sizes, key=lambda d: sizes[d]) if sizes else torch.uint8


def tensor_bytes(state: State) -> int:
    """Bytes of all tensor elements in ``state`` (the logical size of a checkpoint)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v) for v in state)
    return 0
