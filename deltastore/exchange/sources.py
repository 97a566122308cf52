"""What a path to import holds: which checkpoints, in which order, read from which files.

- A weights file (``.pt``, ``.pth``, ``.bin``, ``.safetensors``): one checkpoint.
- A Hugging Face model folder (``config.json`` beside ``*.safetensors`` shards or
  ``pytorch_model*.bin``, or a shard ``*.index.json`` with or without a config):
  one checkpoint holding every tensor by its name, in the index's order (else
  file by file), and the parsed ``config.json`` under the key ``config``.
  Tokenizer files, optimizer and scheduler states and ``training_args.bin`` are
  not read.
- A folder whose subfolders are model folders (a Trainer's ``checkpoint-500/``,
  ``checkpoint-1000/``): one checkpoint per such subfolder; the folder's other
  contents (logs, a final model saved beside them) are left alone.
- Any other folder: one checkpoint per weights file; anything else in it
  (hidden files aside) is refused, so a stray file cannot silently vanish from
  the history.

A folder's members come in natural order (``ckpt_2`` before ``ckpt_10``) and
take their step from the last number in their name.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltastore import tree
from deltastore.errors import ImportSourceError
from deltastore.exchange import safetensors_format
from deltastore.exchange.readers import (
    SAFETENSORS_SUFFIX,
    is_weight_file,
    load_safetensors_file,
    load_torch_file,
    read_safetensors_header,
    safetensors_api,
)

CONFIG_FILE = "config.json"
CONFIG_KEY = "config"
#: Shard indexes, the safetensors one preferred when a folder has both.
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_DIGITS = re.compile(r"(\d+)")
#: What ModelFolder._config returns for a folder without config.json (``null`` is valid JSON).
_NO_CONFIG = object()


def natural_key(name: str) -> list[Any]:
    """Sort key that orders the numbers in names by value: ``ckpt_2`` < ``ckpt_10``."""
    parts: list[Any] = _DIGITS.split(name)
    parts[1::2] = [int(p) for p in parts[1::2]]  # text and numbers alternate: never compared
    return parts


def natural_sorted(paths: Iterable[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: (natural_key(p.name), p.name))


def step_from_name(name: str) -> int | None:
    """The last number in a name (``checkpoint-500`` -> 500, ``ckpt_2.pt`` -> 2), if any."""
    numbers = _DIGITS.findall(Path(name).stem if is_weight_file(Path(name)) else name)
    return int(numbers[-1]) if numbers else None


@dataclass(frozen=True)
class Loaded:
    """A source read into a state, with what its file says about itself."""

    state: Any
    message: str | None = None
    step: int | None = None
    metrics: dict[str, float | int] | None = None


class Source(ABC):
    """One checkpoint to import."""

    def __init__(self, path: Path, step: int | None = None) -> None:
        self.path = path
        self.name = path.absolute().name
        self.step = step  # from the name, for a folder's members

    @abstractmethod
    def check(self) -> None:
        """Raise ImportSourceError (or UnsupportedTypeError) if loading would fail; cheap."""

    @abstractmethod
    def load(self) -> Loaded:
        """Read the state (and the file's own message, step and metrics, if it has them)."""


class TorchFile(Source):
    def check(self) -> None:
        tree.flatten(load_torch_file(self.path))  # memory-mapped: reads no tensor data

    def load(self) -> Loaded:
        return Loaded(load_torch_file(self.path))


class SafetensorsFile(Source):
    def check(self) -> None:
        safetensors_api(self.path)
        read_safetensors_header(self.path)

    def load(self) -> Loaded:
        header = read_safetensors_header(self.path)
        state = load_safetensors_file(self.path, [t.name for t in header.tensors])
        return Loaded(state, *_provenance(header.metadata))


def _provenance(
    metadata: dict[str, str],
) -> tuple[str | None, int | None, dict[str, float | int] | None]:
    """Message, step and metrics of a file that deltastore exported, so a round trip keeps them."""
    step_text = metadata.get(safetensors_format.META_STEP, "")
    step = int(step_text) if re.fullmatch(r"-?\d+", step_text) else None
    try:
        metrics = json.loads(metadata.get(safetensors_format.META_METRICS, "null"))
    except ValueError:
        metrics = None
    if not isinstance(metrics, dict) or not all(
        isinstance(k, str) and type(v) in (int, float) for k, v in metrics.items()
    ):
        metrics = None
    return metadata.get(safetensors_format.META_MESSAGE), step, metrics


class ModelFolder(Source):
    """A Hugging Face model folder: its weight shards merged, and its config."""

    def check(self) -> None:
        self._config()
        for path, names in self._shards(self._index()):
            if path.suffix == SAFETENSORS_SUFFIX:
                safetensors_api(path)
                present = {t.name for t in read_safetensors_header(path).tensors}
                missing = [n for n in names or () if n not in present]
                if missing:
                    raise ImportSourceError(
                        str(path), f"the index names {missing[0]!r}, which the file lacks"
                    )
            else:
                _torch_shard(path, names)

    def load(self) -> Loaded:
        config = self._config()
        index = self._index()
        tensors: dict[str, Any] = {}
        for path, names in self._shards(index):
            if path.suffix == SAFETENSORS_SUFFIX:
                part = load_safetensors_file(path, names)
            else:
                part = _torch_shard(path, names)
            repeated = next((name for name in part if name in tensors), None)
            if repeated is not None:
                raise ImportSourceError(str(path), f"tensor {repeated!r} is in two shards")
            tensors.update(part)
        if index is not None:  # the index's key order, not the shards'
            tensors = {name: tensors[name] for name in index}
        if config is _NO_CONFIG:
            return Loaded(tensors)
        if CONFIG_KEY in tensors:
            raise ImportSourceError(
                str(self.path), f"a tensor is named {CONFIG_KEY!r}, the key its config goes under"
            )
        return Loaded({**tensors, CONFIG_KEY: config})

    def _config(self) -> Any:
        """The parsed config.json, or ``_NO_CONFIG`` (a sharded folder may come without one)."""
        path = self.path / CONFIG_FILE
        if not path.exists():
            return _NO_CONFIG
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ImportSourceError(str(path), f"not a readable JSON file ({exc})") from None

    def _index(self) -> dict[str, str] | None:
        """tensor name -> shard file name, from the folder's index (None without one)."""
        for index_name in INDEX_FILES:
            path = self.path / index_name
            if path.is_file():
                return _read_index(path)
        return None

    def _shards(self, index: dict[str, str] | None) -> list[tuple[Path, list[str] | None]]:
        """The weight files to read, with the tensor names to take from each (None: all)."""
        if index is None:
            return [(path, None) for path in model_weight_files(self.path)]
        names_by_file: dict[str, list[str]] = {}
        for name, file_name in index.items():
            names_by_file.setdefault(file_name, []).append(name)
        shards: list[tuple[Path, list[str] | None]] = []
        for file_name, names in names_by_file.items():
            path = self.path / file_name
            if not path.is_file():
                raise ImportSourceError(str(self.path), f"the index names a missing {file_name}")
            shards.append((path, names))
        return shards


def _read_index(path: Path) -> dict[str, str]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImportSourceError(str(path), f"not a readable JSON file ({exc})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(name, str) and isinstance(file, str) and _plain_file_name(file)
        for name, file in weight_map.items()
    ):
        raise ImportSourceError(
            str(path), "its weight_map is not a map of tensor names to file names in the folder"
        )
    return weight_map


def _plain_file_name(name: str) -> bool:
    """A file of this folder: an index must not send us to ``../../elsewhere``."""
    return name not in ("", ".", "..") and Path(name).name == name and is_weight_file(Path(name))


def _torch_shard(path: Path, names: list[str] | None) -> dict[str, Any]:
    """A ``pytorch_model*.bin`` shard: a dict of tensors (those in ``names``, in that order)."""
    shard = load_torch_file(path)
    if not isinstance(shard, dict) or not all(isinstance(k, str) for k in shard):
        raise ImportSourceError(str(path), "a model shard must hold a dict of named tensors")
    if names is None:
        return dict(shard)
    missing = [n for n in names if n not in shard]
    if missing:
        raise ImportSourceError(str(path), f"the index names {missing[0]!r}, which the file lacks")
    return {name: shard[name] for name in names}


def model_weight_files(folder: Path) -> list[Path]:
    """A model folder's weight files: its safetensors if any, else its pytorch_model*.bin."""
    safetensors = [p for p in folder.glob("*" + SAFETENSORS_SUFFIX) if p.is_file()]
    if safetensors:
        return natural_sorted(safetensors)
    return natural_sorted(p for p in folder.glob("pytorch_model*.bin") if p.is_file())


def is_model_folder(folder: Path) -> bool:
    """config.json beside weight files, or a shard index (which says what the folder is)."""
    if any((folder / name).is_file() for name in INDEX_FILES):
        return True
    return (folder / CONFIG_FILE).is_file() and bool(model_weight_files(folder))


def weight_file_source(path: Path, step: int | None = None) -> Source:
    if not is_weight_file(path):
        raise ImportSourceError(
            str(path), "not a .pt, .pth, .bin or .safetensors file, nor a model folder"
        )
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        return SafetensorsFile(path, step)
    return TorchFile(path, step)


def plan(path: Path) -> list[Source]:
    """The checkpoints ``path`` holds, in the order to import them (see the module docstring)."""
    if path.is_file():
        return [weight_file_source(path)]
    if not path.is_dir():
        raise ImportSourceError(str(path), "no such file or folder")
    visible = natural_sorted(p for p in path.iterdir() if not p.name.startswith("."))
    subfolders = [p for p in visible if p.is_dir() and is_model_folder(p)]
    if subfolders:
        return [ModelFolder(p, step_from_name(p.name)) for p in subfolders]
    if is_model_folder(path):
        return [ModelFolder(path)]
    if not visible:
        raise ImportSourceError(str(path), "the folder is empty")
    refused = [p.name for p in visible if not (p.is_file() and is_weight_file(p))]
    if refused:
        shown = ", ".join(refused[:3]) + (
            f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        )
        raise ImportSourceError(
            str(path),
            f"{shown}: not a .pt, .pth, .bin or .safetensors file, nor a model folder "
            "(nothing was imported)",
        )
    return [weight_file_source(p, step_from_name(p.name)) for p in visible]
