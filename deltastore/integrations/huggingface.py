"""Hugging Face transformers: save into a deltastore store every time the Trainer saves.

::

    from deltastore.integrations.huggingface import DeltastoreCallback
    trainer = Trainer(model, args, train_dataset=data,
                      callbacks=[DeltastoreCallback("runs/exp1")])

At each ``on_save`` (so at ``args.save_steps``, with any save strategy) the
main process stores the model, optimizer and LR scheduler states, the
Trainer's state (``trainer_state``, as plain JSON data) and the random
generators, as one checkpoint on branch ``hf`` with the step and the newest
logged metrics.  Other processes of a distributed run do nothing.  The
Trainer keeps writing its own ``checkpoint-*`` folders; set
``save_total_limit`` low to let deltastore hold the history.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from deltastore.store import Store
from deltastore.store import open as open_store
from deltastore.training import rng


class DeltastoreCallback(TrainerCallback):
    """A ``TrainerCallback`` that saves each checkpoint into a deltastore store."""

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        branch: str = "hf",
        include_optimizer: bool = True,
    ) -> None:
        self._owns_store = not isinstance(store, Store)
        self._store: Store | None = store if isinstance(store, Store) else None
        self._path = None if isinstance(store, Store) else Path(store)
        self.branch = branch
        self.include_optimizer = include_optimizer
        #: Ids of the checkpoints this callback saved, oldest first.
        self.saved: list[str] = []

    @property
    def store(self) -> Store:
        # Opened on first use, on the main process only.
        if self._store is None:
            assert self._path is not None
            self._store = open_store(self._path, create=True)
        return self._store

    def on_save(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or model is None:
            return
        tree: dict[str, Any] = {"model": model.state_dict()}
        if self.include_optimizer and optimizer is not None:
            tree["optimizer"] = optimizer.state_dict()
        if lr_scheduler is not None:
            tree["scheduler"] = lr_scheduler.state_dict()
        tree["trainer_state"] = plain_json(state)
        tree["rng"] = rng.capture()
        self.saved.append(
            self.store.save(
                tree,
                f"step {state.global_step}",
                step=state.global_step,
                metrics=latest_metrics(state.log_history),
                branch=self.branch,
            )
        )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None


def plain_json(state: Any) -> Any:
    """The Trainer's state as JSON data (what ``trainer_state.json`` holds), nothing pickled."""
    return json.loads(json.dumps(dataclasses.asdict(state), default=str))


def latest_metrics(log_history: list[dict[str, Any]] | None) -> dict[str, float | int]:
    """The newest value of every numeric metric the Trainer logged (loss, eval_loss, lr...)."""
    metrics: dict[str, float | int] = {}
    for entry in log_history or []:
        for name, value in entry.items():
            if type(value) in (int, float) and name != "step":
                metrics[name] = value
    return metrics
