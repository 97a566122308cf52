"""One adapter per tool, each storing a checkpoint sequence in a folder of its own.

Every adapter gets the checkpoints in training order and must give any of them back exactly.
The file compressors (zstd, zipnn, z4ai per file) do what a user of them would: their save is
``torch.save`` to bytes + compress + write, their restore is read + decompress +
``torch.load(weights_only=True)`` from the bytes.  z4ai's delta mode works on safetensors files:
the first checkpoint is compressed on its own, each later one as a delta against the previous
one, so restoring checkpoint k replays the chain from the first.

The runner times ``save`` and ``restore`` from outside, the same way for every tool.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import json
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

import deltastore
from benchmarks import trees
from benchmarks.trees import State

#: zipnn and z4ai take one element type per buffer, named their own way.
_ZIPNN_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
_Z4AI_DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path``: what the tool really leaves on disk."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def torch_bytes(state: State) -> bytes:
    """``torch.save`` of ``state`` into memory (the input of the file compressors)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def torch_from_bytes(data: bytes | bytearray | memoryview) -> State:
    return torch.load(io.BytesIO(data), weights_only=True)


class Tool(ABC):
    """A way of storing a checkpoint sequence, in a folder of its own."""

    #: The name on the command line and in the report.
    name: ClassVar[str]
    #: The distributions it needs; a missing one turns its rows into "not installed".
    requires: ClassVar[tuple[str, ...]] = ()
    #: How it stores, for the report.
    summary: ClassVar[str]

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True)

    @abstractmethod
    def save(self, index: int, state: State) -> None:
        """Store checkpoint ``index`` (checkpoints arrive in order, 0 first)."""

    @abstractmethod
    def restore(self, index: int) -> State:
        """Give checkpoint ``index`` back as a state."""

    def restore_all(self, count: int) -> Iterator[State]:
        """Checkpoints 0 to ``count - 1`` in order, for the bit-exact check (not timed).

        A tool whose restore replays a chain overrides this to walk the chain once.
        """
        for index in range(count):
            yield self.restore(index)

    def stored_bytes(self) -> int:
        return dir_bytes(self.folder)

    def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Release what the tool holds (files, threads); the folder stays for stored_bytes."""

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the tool cannot run here (a package that does not import), or None."""
        for module in cls.requires:
            try:
                importlib.import_module(module)
            except Exception as exc:  # ImportError, or a broken install failing on import
                return f"not installed: {type(exc).__name__}: {exc}"
        return None

    @classmethod
    def version(cls) -> str:
        names = cls.requires or ("torch",)
        return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)


class TorchSave(Tool):
    name = "torch.save"
    summary = "one torch.save file per checkpoint (the 1.0 baseline)"

    def save(self, index: int, state: State) -> None:
        torch.save(state, self.folder / f"{index}.pt")

    def restore(self, index: int) -> State:
        return torch.load(self.folder / f"{index}.pt", weights_only=True)


class Safetensors(Tool):
    name = "safetensors"
    requires = ("safetensors",)
    summary = "one safetensors file per checkpoint; the non-tensor tree as JSON in its metadata"

    def save(self, index: int, state: State) -> None:
        from safetensors.torch import save_file

        skeleton, tensors = trees.split(state)
        save_file(tensors, self.folder / f"{index}.safetensors", metadata={"tree": skeleton})

    def restore(self, index: int) -> State:
        # Not safe_open/load_file: they hand back copy-on-write maps of the file, read only when
        # touched, so the timing would leave out the reading every other tool pays for (and
        # load_state_dict would pay for next).  Reading the file and copying is the fair cost.
        return _state_from_safetensors((self.folder / f"{index}.safetensors").read_bytes())


class ZstdFile(Tool):
    name = "zstd"
    requires = ("zstandard",)
    summary = "torch.save bytes compressed with zstd level 3 (2 threads), one file each"

    def save(self, index: int, state: State) -> None:
        import zstandard

        data = zstandard.ZstdCompressor(level=3, threads=2).compress(torch_bytes(state))
        (self.folder / f"{index}.pt.zst").write_bytes(data)

    def restore(self, index: int) -> State:
        import zstandard

        data = (self.folder / f"{index}.pt.zst").read_bytes()
        return torch_from_bytes(zstandard.ZstdDecompressor().decompress(data))


class ZipNNFile(Tool):
    name = "zipnn"
    requires = ("zipnn",)
    summary = "torch.save bytes compressed with zipnn (byte mode, the state's main float type)"

    @staticmethod
    def _codec(dtype: str) -> Any:
        from zipnn import ZipNN

        return ZipNN(input_format="byte", bytearray_dtype=dtype, threads=2)

    def save(self, index: int, state: State) -> None:
        dtype = _ZIPNN_DTYPES.get(trees.dominant_dtype(state), "float32")
        # zipnn 0.5.4 reorders its input's bytes in place (even of an immutable bytes object):
        # it gets a buffer no one else reads.
        data = bytearray(torch_bytes(state))
        blob = self._codec(dtype).compress(data)
        (self.folder / f"{index}.pt.znn").write_bytes(dtype.encode() + b"\n" + blob)

    def restore(self, index: int) -> State:
        dtype, _, blob = (self.folder / f"{index}.pt.znn").read_bytes().partition(b"\n")
        return torch_from_bytes(self._codec(dtype.decode()).decompress(blob))


class Z4aiFile(Tool):
    name = "z4ai"
    requires = ("z4ai",)
    summary = "torch.save bytes compressed with z4ai.compress (the state's main float type)"

    def save(self, index: int, state: State) -> None:
        import z4ai

        dtype = _Z4AI_DTYPES.get(trees.dominant_dtype(state), "fp32")
        (self.folder / f"{index}.pt.z4").write_bytes(z4ai.compress(torch_bytes(state), dtype=dtype))

    def restore(self, index: int) -> State:
        import z4ai

        return torch_from_bytes(z4ai.decompress((self.folder / f"{index}.pt.z4").read_bytes()))


def _safetensors_bytes(state: State) -> bytes:
    from safetensors.torch import save

    skeleton, tensors = trees.split(state)
    return save(tensors, metadata={"tree": skeleton})


def _state_from_safetensors(data: bytes) -> State:
    from safetensors.torch import load

    # The metadata sits in the JSON header: an 8-byte little-endian length, then the JSON.
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return trees.join(header["__metadata__"]["tree"], load(data))


class Z4aiDelta(Tool):
    """z4ai's whole-checkpoint delta mode (``z4ai.model_delta``) over safetensors files.

    It deltas tensor by tensor, matched by name, against a base the caller supplies; the natural
    base in a training run is the previous checkpoint, so the files form a chain.
    """

    name = "z4ai-delta"
    requires = ("z4ai", "safetensors")
    summary = (
        "safetensors files: the first z4ai-compressed, each later one a z4ai.model_delta "
        "against the previous (restore replays the chain)"
    )

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.previous: bytes | None = None  # the last saved file, the next delta's base

    def save(self, index: int, state: State) -> None:
        from z4ai import model_delta
        from z4ai import safetensors as z4st

        data = _safetensors_bytes(state)
        if self.previous is None:
            blob = z4st.compress_bytes(data)
        else:
            blob = model_delta.compress(data, self.previous)
        (self.folder / f"{index}.z4d").write_bytes(blob)
        self.previous = data

    def restore(self, index: int) -> State:
        for i, data in enumerate(self._chain()):
            if i == index:
                return _state_from_safetensors(data)
        raise IndexError(index)

    def restore_all(self, count: int) -> Iterator[State]:
        for _, data in zip(range(count), self._chain(), strict=False):
            yield _state_from_safetensors(data)

    def _chain(self) -> Iterator[bytes]:
        """The safetensors bytes of checkpoint 0, 1, 2, ...: each decoded from the one before."""
        from z4ai import model_delta
        from z4ai import safetensors as z4st

        data = z4st.decompress_bytes((self.folder / "0.z4d").read_bytes())
        yield data
        index = 1
        while (path := self.folder / f"{index}.z4d").is_file():
            data = model_delta.decompress(path.read_bytes(), data)
            yield data
            index += 1


class Deltastore(Tool):
    name = "deltastore"
    requires = ("deltastore",)
    summary = "deltastore.open(..., create=True); save() per checkpoint (fsync per object)"
    durable = True

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.store = deltastore.open(
            folder / "store", create=True, progress=False, durable=self.durable
        )
        self.ids: list[str] = []

    def save(self, index: int, state: State) -> None:
        self.ids.append(self.store.save(state, f"checkpoint {index}", step=index))

    def restore(self, index: int) -> State:
        return self.store.load(self.ids[index])

    def close(self) -> None:
        self.store.close()


class DeltastoreNoFsync(Deltastore):
    """deltastore with ``durable=False``: no fsync, like the file tools here.

    torch.save and the other file tools do not fsync what they write; this row shows how much
    of deltastore's save time is the durability they do not pay for.
    """

    name = "deltastore-nofsync"
    summary = "the same with durable=False (no fsync, as the file tools)"
    durable = False


TOOLS: dict[str, type[Tool]] = {
    t.name: t
    for t in (
        TorchSave,
        Safetensors,
        ZstdFile,
        ZipNNFile,
        Z4aiFile,
        Z4aiDelta,
        Deltastore,
        DeltastoreNoFsync,
    )
}


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
