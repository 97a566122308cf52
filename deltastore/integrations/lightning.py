"""PyTorch Lightning: keep every checkpoint ModelCheckpoint writes in a deltastore store.

::

    from deltastore.integrations.lightning import DeltastoreCheckpointIO
    trainer = lightning.Trainer(
        plugins=[DeltastoreCheckpointIO("runs/exp1")],
        callbacks=[ModelCheckpoint(dirpath="ckpt", every_n_train_steps=50, save_top_k=3,
                                   monitor="val_loss")],
    )

ModelCheckpoint works unchanged: it still names, ranks, finds and removes
``.ckpt`` paths, and each path holds a small pointer (JSON: the store and the
checkpoint id) instead of the weights, which live deduplicated and
delta-encoded in the store.  ``trainer.fit(ckpt_path=...)`` resumes through
the pointer.  Removing a checkpoint removes the pointer and its tag; the
version stays in the store's history until gc.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import suppress
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from deltastore.store import Store
from deltastore.store import open as open_store

#: Marks a pointer file, so a stray .ckpt of another origin is refused with a clear message.
POINTER_FORMAT = "deltastore-pointer/1"


class DeltastoreCheckpointIO(CheckpointIO):
    """A Lightning ``CheckpointIO`` that saves into (and loads from) a deltastore store."""

    def __init__(self, store: Store | str | os.PathLike[str], *, branch: str = "lightning") -> None:
        self._owns_store = not isinstance(store, Store)
        self.store = store if isinstance(store, Store) else open_store(Path(store), create=True)
        self.branch = branch

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        step = checkpoint.get("global_step")
        checkpoint_id = self.store.save(
            plain(checkpoint),
            f"lightning {target.name}",
            step=step if type(step) is int and step >= 0 else None,
            branch=self.branch,
        )
        self.store.tag(_tag_name(self.branch, target), checkpoint_id, force=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        pointer = {
            "format": POINTER_FORMAT,
            "store": str(self.store.root.resolve()),
            "checkpoint": checkpoint_id,
        }
        temporary.write_text(json.dumps(pointer))
        os.replace(temporary, target)  # a pointer appears only once its checkpoint is committed

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # weights_only is moot: nothing is unpickled, ever.
        pointer = read_pointer(Path(path))
        if Path(pointer["store"]) != self.store.root.resolve():
            with open_store(pointer["store"]) as other:
                state = other.load(pointer["checkpoint"])
        else:
            state = self.store.load(pointer["checkpoint"])
        if not isinstance(state, dict):
            raise ValueError(f"{path}: checkpoint {pointer['checkpoint'][:12]} is not a dict")
        return state

    def remove_checkpoint(self, path: Any) -> None:
        target = Path(path)
        with suppress(KeyError):  # saved by another branch, or already untagged
            self.store.delete_ref(_tag_name(self.branch, target))
        target.unlink(missing_ok=True)

    def teardown(self) -> None:
        if self._owns_store:
            self.store.close()


def read_pointer(path: Path) -> dict[str, str]:
    """The store and checkpoint id a pointer file names; ValueError for anything else."""
    try:
        pointer = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(
            f"{path} is not a deltastore pointer (a torch.save checkpoint? load it with "
            "torch.load(weights_only=True) or import it into the store)"
        ) from None
    if not isinstance(pointer, dict) or pointer.get("format") != POINTER_FORMAT:
        raise ValueError(f"{path} is not a deltastore pointer")
    return pointer


def plain(value: Any) -> Any:
    """Lightning's checkpoint as plain data: dict subclasses (AttributeDict) become dicts,
    paths and enums their text.  Anything else is left for the store to accept or refuse
    by key path (UnsupportedTypeError): nothing is pickled."""
    if type(value) in (dict, OrderedDict):
        return type(value)((k, plain(v)) for k, v in value.items())
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(plain(v) for v in value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Enum):
        return plain(value.value)
    return value


def _tag_name(branch: str, path: Path) -> str:
    """A tag per checkpoint path: ``<branch>/ckpt/<file name>``, characters refs refuse escaped."""
    safe = "".join(c if c.isalnum() or c in "._-=" else "_" for c in path.name)
    return f"{branch}/ckpt/{safe}"
