"""Export one checkpoint (or the part of it under a key prefix) to a file other tools load.

Two formats:

- **safetensors**: the array entries only, as torch tensors (numpy arrays keep
  their dtype and values); names are the key paths relative to the prefix with
  the ``~1``/``~0`` escaping undone, so the keys of a flat ``state_dict``
  come back exactly and ``model.load_state_dict(load_file(out))`` works for
  ``prefix="model/"``.  Non-array leaves (step counters, strings, config
  dicts) have no place in safetensors and are left out; the checkpoint's id,
  step, message and metrics go in the header's metadata.
- **torch**: ``torch.save`` of the restored tree (or the subtree at the prefix),
  loadable with ``torch.load(path, weights_only=True)`` with the same types and
  bits, except that numpy arrays and scalars become tensors of the same dtype
  and values: ``weights_only`` refuses numpy objects.

Each entry is decoded once, straight into the array that is written; the file
appears whole or not at all (:mod:`deltastore.exchange.atomic`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deltastore import arrays, tree
from deltastore.errors import ExportDtypeError, ExportError
from deltastore.exchange import safetensors_format
from deltastore.exchange.atomic import atomic_file
from deltastore.load import CheckpointReader, ListedCheckpoint
from deltastore.manifest import Manifest, ManifestEntry
from deltastore.progress import Progress, ProgressFactory, maybe

SAFETENSORS = "safetensors"
TORCH = "torch"
FORMATS = (SAFETENSORS, TORCH)
SUFFIX_FORMATS = {".safetensors": SAFETENSORS, ".pt": TORCH, ".pth": TORCH}
#: Entries decoded per write when streaming a safetensors file: enough to keep
#: every core decoding, little enough not to hold a model twice.
BATCH_BYTES = 64 << 20


# numpy dtype (kind and width) -> the torch dtype of the same values and bits.
_NUMPY_AS_TORCH = {
    "b1": "bool",
    "i1": "int8",
    "u1": "uint8",
    "i2": "int16",
    "u2": "uint16",
    "i4": "int32",
    "u4": "uint32",
    "i8": "int64",
    "u8": "uint64",
    "f2": "float16",
    "f4": "float32",
    "f8": "float64",
    "c8": "complex64",
    "c16": "complex128",
}


def choose_format(path: Path, format: str | None) -> str:
    """The format asked for, or the one the file's extension names."""
    if format is not None:
        if format not in FORMATS:
            raise ExportError(str(path), f"unknown format {format!r}; choose one of {FORMATS}")
        return format
    found = SUFFIX_FORMATS.get(path.suffix.lower())
    if found is None:
        raise ExportError(
            str(path),
            f"cannot tell the format from the extension {path.suffix!r}: use .safetensors, "
            ".pt or .pth, or name the format",
        )
    return found


@dataclass(frozen=True)
class ExportTarget:
    """The file an export writes, in which format, and the key prefix it keeps."""

    path: Path
    format: str
    prefix: str


def export_target(
    path: str | os.PathLike[str], format: str | None = None, prefix: str | None = None
) -> ExportTarget:
    """Check what an export can refuse before the checkpoint is read: format and folder."""
    target = Path(path)
    chosen = choose_format(target, format)
    _check_folder(target)
    return ExportTarget(target, chosen, normalize_prefix(prefix))


def export_checkpoint(
    reader: CheckpointReader,
    listed: ListedCheckpoint,
    target: ExportTarget,
    progress: ProgressFactory | None = None,
) -> Path:
    """Write a checkpoint (or its subtree at the target's prefix) to the target's file.

    Entries ``thin`` removed are left out of the file, as a load leaves them
    out.  Everything that can be refused (format, folder, prefix, dtypes,
    names) is checked before the file is created.
    """
    job = _Job(reader, listed.id, listed.manifest, target.path, target.prefix, progress)
    if target.format == SAFETENSORS:
        _write_safetensors(job)
    else:
        _write_torch(job)
    return target.path


def _check_folder(target: Path) -> None:
    """ExportError naming the target when its folder is missing, before anything is decoded.

    Found only at the temp file's creation, the error named that file
    (``.model.pt.3f2a....tmp``), and a torch export had decoded the whole tree first.
    """
    folder = target.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ExportError(str(target), f"the folder {str(folder)!r} {what}")


@dataclass(frozen=True)
class _Job:
    """One export: the checkpoint it reads, the file it writes, the key prefix it keeps."""

    reader: CheckpointReader
    checkpoint_id: str
    manifest: Manifest
    target: Path
    prefix: str
    progress: ProgressFactory | None

    def refuse(self, reason: str) -> ExportError:
        return ExportError(str(self.target), reason)

    def bar(self, entries: Sequence[ManifestEntry]) -> AbstractContextManager[Progress | None]:
        return maybe(self.progress, sum(e.nbytes for e in entries), "export")

    def restore(self, entries: Sequence[ManifestEntry], bar: Progress | None) -> list[Any]:
        """Decode entries (each once, in parallel) into new arrays."""
        return self.reader.restore_entries(self.checkpoint_id, self.manifest, entries, bar)


def normalize_prefix(prefix: str | None) -> str:
    """``"model/"``, ``"/model"`` and ``"model"`` name the same subtree; ``""`` the root."""
    return (prefix or "").strip("/")


def _under(key_path: str, prefix: str) -> bool:
    return not prefix or key_path == prefix or key_path.startswith(prefix + "/")


def _relative_name(key_path: str, prefix: str) -> str:
    """The safetensors name of an entry: its key path below the prefix, unescaped."""
    rest = key_path[len(prefix) + 1 :] if prefix else key_path
    if not rest:  # the prefix names this entry itself
        rest = key_path.rsplit("/", 1)[-1]
    return "/".join(tree.unescape_key(segment) for segment in rest.split("/"))


def _torch_dtype(entry: ManifestEntry) -> str:
    if entry.kind in (arrays.KIND_NUMPY, arrays.KIND_NUMPY_SCALAR):
        dtype = np.dtype(entry.dtype)
        return _NUMPY_AS_TORCH.get(f"{dtype.kind}{dtype.itemsize}", str(dtype))
    return entry.dtype


# -- safetensors ------------------------------------------------------------------------------


def _write_safetensors(job: _Job) -> None:
    entries = [e for e in job.manifest.entries if _under(e.key_path, job.prefix)]
    if not entries:
        under = f" under {job.prefix!r}" if job.prefix else ""
        raise job.refuse(f"checkpoint {job.checkpoint_id[:12]} has no array entries{under}")
    tensors = _tensor_headers(job.target, entries, job.prefix)
    metadata = _metadata(job.checkpoint_id, job.manifest, job.prefix)
    header = safetensors_format.encode_header(tensors, metadata)
    # Decode numpy entries as little-endian arrays: their bytes go to the file as they are.
    as_stored = [_little_endian(e) for e in entries]
    with job.bar(entries) as bar, atomic_file(job.target) as f:
        f.write(header)
        for batch in _batches(as_stored):
            for entry, value in zip(batch, job.restore(batch, bar), strict=True):
                f.write(arrays.to_bytes(value, entry.key_path).data)


def _tensor_headers(
    target: Path, entries: Sequence[ManifestEntry], prefix: str
) -> list[safetensors_format.TensorHeader]:
    """Names, dtype codes and sizes, refusing what safetensors cannot hold."""
    seen: dict[str, str] = {}
    tensors = []
    for entry in entries:
        code = safetensors_format.CODES.get(_torch_dtype(entry))
        if code is None:
            raise ExportDtypeError(str(target), entry.key_path, entry.dtype)
        name = _relative_name(entry.key_path, prefix)
        if name in seen or name == safetensors_format.METADATA_KEY:
            other = f"entry {seen[name]!r}" if name in seen else "the metadata"
            raise ExportError(
                str(target),
                f"entries {entry.key_path!r} and {other} would share the name {name!r}",
            )
        seen[name] = entry.key_path
        tensors.append(safetensors_format.TensorHeader(name, code, entry.shape, entry.nbytes))
    return tensors


def _metadata(checkpoint_id: str, m: Manifest, prefix: str) -> dict[str, str]:
    # "format": "pt" is what transformers requires of a safetensors file with metadata.
    metadata = {"format": "pt", safetensors_format.META_CHECKPOINT: checkpoint_id}
    if m.step is not None:
        metadata[safetensors_format.META_STEP] = str(m.step)
    if m.message:
        metadata[safetensors_format.META_MESSAGE] = m.message
    if m.metrics:
        metadata[safetensors_format.META_METRICS] = json.dumps(m.metrics)
    if prefix:
        metadata[safetensors_format.META_PREFIX] = prefix
    return metadata


def _little_endian(entry: ManifestEntry) -> ManifestEntry:
    if entry.kind in (arrays.KIND_NUMPY, arrays.KIND_NUMPY_SCALAR):
        dtype = np.dtype(entry.dtype).newbyteorder("<")
        return dataclasses.replace(entry, kind=arrays.KIND_NUMPY, dtype=dtype.str)
    return entry


def _batches(entries: Sequence[ManifestEntry]) -> Iterator[list[ManifestEntry]]:
    batch: list[ManifestEntry] = []
    size = 0
    for entry in entries:
        batch.append(entry)
        size += entry.nbytes
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# -- torch.save -------------------------------------------------------------------------------


def _write_torch(job: _Job) -> None:
    import torch

    structure = job.manifest.structure
    node = _subtree(structure, job.prefix.split("/")) if job.prefix else structure
    if node is _MISSING:
        raise job.refuse(f"checkpoint {job.checkpoint_id[:12]} has no key path {job.prefix!r}")
    indices = sorted(set(tree.iter_array_indices(node)))
    wanted = [_as_tensor(job.manifest.entries[i]) for i in indices]
    with job.bar(wanted) as bar:
        restored = job.restore(wanted, bar)
    leaves: list[Any] = [None] * len(job.manifest.entries)
    for index, value in zip(indices, restored, strict=True):
        leaves[index] = value
    state = tree.unflatten(node, leaves)
    with atomic_file(job.target) as f:
        torch.save(state, f)


def _as_tensor(entry: ManifestEntry) -> ManifestEntry:
    """Restore a numpy entry as a tensor: same little-endian bytes, so the same values."""
    if entry.kind in (arrays.KIND_NUMPY, arrays.KIND_NUMPY_SCALAR):
        return dataclasses.replace(entry, kind=arrays.KIND_TORCH, dtype=_torch_dtype(entry))
    return entry


#: What :func:`_subtree` finds at a key path that is not there (None is a leaf value).
_MISSING = object()


def _subtree(node: tree.JSON, segments: list[str]) -> tree.JSON:
    """The tagged-JSON node at a key path, or ``_MISSING``."""
    for segment in segments:
        node = _child(node, segment)
        if node is _MISSING:
            break
    return node


def _child(node: tree.JSON, segment: str) -> tree.JSON:
    if isinstance(node, list):
        items = node
    elif isinstance(node, dict) and "tuple" in node:
        items = node["tuple"]
    elif isinstance(node, dict) and ("dict" in node or "odict" in node):
        for key, value in node["dict"] if "dict" in node else node["odict"]:
            if _key_segment(key) == segment:
                return value
        return _MISSING
    else:
        return _MISSING
    if segment.isdigit() and str(int(segment)) == segment and int(segment) < len(items):
        return items[int(segment)]
    return _MISSING


def _key_segment(tagged_key: tree.JSON) -> str:
    """A dict key of the tagged JSON as it appears in a key path (str escaped, int as digits)."""
    return tree.escape_key(tagged_key) if isinstance(tagged_key, str) else str(tagged_key["int"])
