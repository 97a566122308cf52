"""Checkpointing inside a training loop: save every N steps, keep what matters, resume exactly."""

from deltastore.training.manager import CheckpointManager
from deltastore.training.retention import KeepPolicy

__all__ = ["CheckpointManager", "KeepPolicy"]
