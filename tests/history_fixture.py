"""A small store with a history worth checking: deltas two deep (as stores written before
session 5 chain them), two branches, moved and deleted tags; and helpers to damage it (verify,
rebuild and cat tests share them)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import deltastore
from deltastore.catalog import audit
from deltastore.catalog.audit import CatalogObject
from deltastore.catalog.engine import read_transaction
from deltastore.codecs import Kind

from .conftest import chained_deltas, trained_like

CHUNK_SIZE = 4096
FROZEN = trained_like((3000,), seed=11)


@dataclass(frozen=True)
class History:
    root: Path
    states: dict[str, Any]  # checkpoint id -> the state saved


def _state(w: torch.Tensor, m: torch.Tensor, step: int) -> dict[str, Any]:
    return {
        "model": {
            "w": w.clone(),
            "b": torch.full((10,), 0.5 * step),
            "frozen": FROZEN.clone(),  # never changes: stored once
        },
        "optim": {"m": m.clone(), "count": np.arange(step, step + 8, dtype=np.int64)},
        "step": step,
    }


def build_history(root: Path) -> History:
    """main: 5 saves, then exp: 2 saves from main~2; tags set, moved and deleted."""
    states: dict[str, Any] = {}
    g = torch.Generator().manual_seed(7)
    w = trained_like((64, 256), seed=3)
    m = torch.zeros(64, 256)
    with (
        chained_deltas(),  # deltas of deltas, as older stores hold: the readers' hard case
        deltastore.open(root, create=True, progress=False, chunk_size=CHUNK_SIZE) as store,
    ):
        for step in range(5):
            grad = 1e-3 * torch.randn(64, 256, generator=g)
            w = w - grad
            m = 0.9 * m + 0.1 * grad
            state = _state(w, m, step)
            metrics = {"loss": 2.0 / (step + 1), "tokens": 1000 * step}
            if step == 3:
                metrics.update(nan=float("nan"), inf=float("inf"))
            cid = store.save(state, f"step {step} — ünïcode", step=step, metrics=metrics)
            states[cid] = state
        store.tag("v1", "main~1")
        store.tag("old", "main~3")
        store.tag("v1", "main", force=True)
        store.delete_ref("old")
        store.branch("exp", "main~2")
        for step in (10, 11):
            w = w + 1e-3 * torch.randn(64, 256, generator=g)
            state = _state(w, m, step)
            cid = store.save(state, f"exp {step}", step=step, branch="exp")
            states[cid] = state
        store.tag("exp-best", "exp~1")
    return History(root, states)


def copy_history(template: History, root: Path) -> History:
    shutil.copytree(template.root, root)
    return History(root, template.states)


def catalog_objects(store: deltastore.Store) -> dict[str, CatalogObject]:
    with read_transaction(store.engine) as conn:
        return audit.all_objects(conn)


def first_use(store: deltastore.Store, object_id: str) -> tuple[str, str, int]:
    """(checkpoint, key path, chunk index) of the oldest chunk list naming the object."""
    with read_transaction(store.engine) as conn:
        where, _ = audit.first_references(conn, [object_id])[object_id]
    return where.checkpoint_id, where.key_path, where.chunk_index


def bases(store: deltastore.Store) -> list[CatalogObject]:
    """Chunks other chunks are deltas of, each with a delta of its own delta (depth 2 below)."""
    rows = catalog_objects(store)
    used = {o.base_id for o in rows.values() if o.base_id is not None}
    return [rows[i] for i in sorted(used) if rows[i].kind == Kind.CHUNK]


def object_path(store: deltastore.Store, object_id: str) -> Path:
    return store.root / "objects" / object_id[:2] / object_id[2:]


def flip_byte(store: deltastore.Store, object_id: str, offset: int = -1) -> None:
    """Flip one bit in an object's file (objects are written read-only)."""
    path = object_path(store, object_id)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    path.chmod(0o444)


def snapshot(store: deltastore.Store) -> str:
    """Everything the API tells of the history, as canonical JSON (NaN metrics compare too)."""
    stats = store.stats()
    data: dict[str, Any] = {"refs": store.refs(), "stats": stats.to_json()}
    for name in store.refs():
        data[f"log {name}"] = [c.to_json() for c in store.log(name)]
    for c in stats.checkpoints:
        data[f"entries {c.id}"] = [e.to_json() for e in store.entries(c.id)]
    return json.dumps(data, sort_keys=True, indent=1)
