"""One adapter per tool, each storing a checkpoint sequence its own way.

Every adapter gets the checkpoints in order (the state, and the bytes
``torch.save`` made of it) and must give any of them back exactly.  File
compressors (zstd, zipnn, z4ai per file) compress the ``torch.save`` bytes and
restore with ``torch.load(weights_only=True)``; z4ai's delta mode works on
safetensors files, each a delta against the previous one.
"""

from __future__ import annotations

import io
import json
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

import deltastore
from deltastore import tree


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def torch_load_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


class Tool(ABC):
    """A way of storing a checkpoint sequence in a folder of its own."""

    name: str

    def __init__(self, folder: Path, dtype: str) -> None:
        self.folder = folder
        self.dtype = dtype  # "fp32" or "bf16": a hint for the float-aware compressors
        folder.mkdir(parents=True)

    @abstractmethod
    def save(self, index: int, state: Any, pt_bytes: bytes) -> None:
        """Store checkpoint ``index`` (they arrive in order)."""

    @abstractmethod
    def restore(self, index: int) -> Any:
        """Give checkpoint ``index`` back."""

    def stored_bytes(self) -> int:
        return dir_bytes(self.folder)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class TorchSave(Tool):
    name = "torch.save"

    def save(self, index: int, state: Any, pt_bytes: bytes) -> None:
        torch.save(state, self.folder / f"{index}.pt")

    def restore(self, index: int) -> Any:
        return torch.load(self.folder / f"{index}.pt", weights_only=True)


class Safetensors(Tool):
    """Tensors in a safetensors file, the rest of the tree as JSON in its metadata."""

    name = "safetensors"

    def save(self, index: int, state: Any, pt_bytes: bytes) -> None:
        (self.folder / f"{index}.safetensors").write_bytes(to_safetensors(state))

    def restore(self, index: int) -> Any:
        return from_safetensors((self.folder / f"{index}.safetensors").read_bytes())


def to_safetensors(state: Any) -> bytes:
    from safetensors.torch import save

    flat = tree.flatten(state)
    tensors = {f"{i}:{path}": _leaf_tensor(state, path) for i, (path, _) in enumerate(flat.leaves)}
    return save(tensors, metadata={"structure": json.dumps(flat.structure)})  # type: ignore[no-any-return]


def from_safetensors(data: bytes) -> Any:
    from safetensors.torch import load

    tensors = load(data)
    leaves = [t for _, t in sorted(tensors.items(), key=lambda kv: int(kv[0].split(":")[0]))]
    # The metadata sits in the JSON header: 8-byte little-endian length, then the JSON.
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_len])["__metadata__"]
    return tree.unflatten(json.loads(metadata["structure"]), leaves)


def _leaf_tensor(state: Any, path: str) -> torch.Tensor:
    node = state
    for segment in path.split("/") if path else []:
        key = tree.unescape_key(segment)
        if isinstance(node, (list, tuple)):
            node = node[int(key)]
        elif key in node:
            node = node[key]
        else:
            node = node[int(key)]
    return node.contiguous()  # type: ignore[no-any-return]


class ZstdFile(Tool):
    name = "zstd per file"

    def save(self, index: int, state: Any, pt_bytes: bytes) -> None:
        import zstandard

        data = zstandard.ZstdCompressor(level=3, threads=2).compress(pt_bytes)
        (self.folder / f"{index}.pt.zst").write_bytes(data)

    def restore(self, index: int) -> Any:
        import zstandard

        data = (self.folder / f"{index}.pt.zst").read_bytes()
        return torch_load_bytes(zstandard.ZstdDecompressor().decompress(data))


class ZipNNFile(Tool):
    name = "zipnn per file"

    def _codec(self) -> Any:
        from zipnn import ZipNN

        return ZipNN(
            input_format="byte",
            bytearray_dtype="bfloat16" if self.dtype == "bf16" else "float32",
            threads=2,
        )

    def save(self, index: int, state: Any, pt_bytes: bytes) -> None:
        # zipnn 0.5.4 reorders its input's bytes in place, even of an immutable
        # bytes object: it gets a private copy, or the next tool reads garbage.
        private = bytearray(pt_bytes)
        (self.folder / f"{index}.pt.znn").write_bytes(self._codec().compress(private))

    def restore(self, index: int) -> Any:
        data = (self.folder / f"{index}.pt.znn").read_bytes()
        return torch_load_bytes(bytes(self._codec().decompress(data)))


class Z4aiFile(Tool):
    name = "z4ai per file"

    def save(self, index: int, state: Any, pt_bytes: bytes) -> None:
        import z4ai

        blob = z4ai.compress(pt_bytes, dtype="bf16" if self.dtype == "bf16" else "fp32")
        (self.folder / f"{index}.pt.z4").write_bytes(blob)

    def restore(self, index: int) -> Any:
        import z4ai

        return torch_load_bytes(
            bytes(z4ai.decompress((self.folder / f"{index}.pt.z4").read_bytes()))
        )


class Z4aiDelta(Tool):
    """z4ai's whole-checkpoint delta: each safetensors file against the previous one.

    Restoring checkpoint k replays the chain from the first checkpoint.
    """

    name = "z4ai delta"

    def __init__(self, folder: Path, dtype: str) -> None:
        super().__init__(folder, dtype)
        self.previous: bytes | None = None

    def save(self, index: int, state: Any, pt_bytes: bytes) -> None:
        import z4ai
        from z4ai import model_delta

        data = to_safetensors(state)
        if self.previous is None:
            blob = z4ai.compress(data, dtype="bf16" if self.dtype == "bf16" else "fp32")
        else:
            blob = model_delta.compress(data, self.previous)
        (self.folder / f"{index}.z4d").write_bytes(blob)
        self.previous = data

    def restore(self, index: int) -> Any:
        import z4ai
        from z4ai import model_delta

        data = bytes(z4ai.decompress((self.folder / "0.z4d").read_bytes()))
        for i in range(1, index + 1):
            data = model_delta.decompress((self.folder / f"{i}.z4d").read_bytes(), data)
        return from_safetensors(data)


class Deltastore(Tool):
    name = "deltastore"

    def __init__(self, folder: Path, dtype: str) -> None:
        super().__init__(folder, dtype)
        self.store = deltastore.open(folder / "store", create=True, progress=False)
        self.ids: list[str] = []

    def save(self, index: int, state: Any, pt_bytes: bytes) -> None:
        self.ids.append(self.store.save(state, f"checkpoint {index}", step=index))

    def restore(self, index: int) -> Any:
        return self.store.load(self.ids[index])

    def close(self) -> None:
        self.store.close()


TOOLS: dict[str, type[Tool]] = {
    t.name: t
    for t in (TorchSave, Safetensors, ZstdFile, ZipNNFile, Z4aiFile, Z4aiDelta, Deltastore)
}


def unavailable(tool: type[Tool]) -> str | None:
    """Why a tool cannot run here (a missing package), or None."""
    module = {ZipNNFile: "zipnn", Z4aiFile: "z4ai", Z4aiDelta: "z4ai"}.get(tool)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError as exc:
        return f"not installed ({exc})"
    return None


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
