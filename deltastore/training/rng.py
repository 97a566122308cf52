"""The random number generators a training run draws from, captured and restored.

Resuming bit-identically needs every generator back where it was: Python's
``random`` (data augmentation, shuffling in user code), numpy's global state,
torch's CPU generator (dropout, ``randperm``) and, when present, every CUDA
device's.  The states are plain data (ints, tuples, uint8 tensors), so they go
into the store like any other part of the state; nothing is pickled.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np


def capture() -> dict[str, Any]:
    """The current state of every generator, as a tree deltastore can store."""
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=True),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Put every generator back to a captured state.

    A state captured with CUDA present and restored without it restores the
    CPU generators only (the run moved machines; there is nothing to seed).
    """
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
