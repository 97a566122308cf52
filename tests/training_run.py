"""A small training run, driven by tests/test_training.py in real subprocesses.

    python tests/training_run.py STORE BRANCH TOTAL_STEPS sync|async [PAUSE_AT]

Trains an MLP with dropout on a fixed dataset, shuffled per epoch from a
seeded generator, with augmentation noise from Python's ``random`` and numpy:
every random source a resumed run must restore.  Saves every 5 steps through
CheckpointManager and prints ``step N`` after each step, so the test can kill
it at a known point.  With PAUSE_AT it waits for a signal after printing that
step, so a signal always lands between the same two steps however loaded the
machine is.
"""

from __future__ import annotations

import random
import sys
import time

import numpy as np
import torch

import deltastore

SAMPLES, BATCH = 96, 16


def _wait_for_preemption(manager: deltastore.CheckpointManager) -> None:
    """Wait until SIGTERM's handler ran (SIGKILL ends the process here instead).

    Polling the manager's flag, not ``signal.pause()``: a signal that lands
    between the print and the pause would leave pause() waiting forever.
    """
    deadline = time.monotonic() + 120
    while not manager.preempted and time.monotonic() < deadline:
        time.sleep(0.005)


def main() -> None:
    store, branch, total, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    pause_at = int(sys.argv[5]) if len(sys.argv) > 5 else None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    data = torch.Generator().manual_seed(123)
    inputs = torch.randn(SAMPLES, 16, generator=data)
    targets = torch.randn(SAMPLES, 4, generator=data)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 4)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
    manager = deltastore.CheckpointManager(
        store,
        branch=branch,
        every_n_steps=5,
        keep_last=2,
        keep_best=1,
        monitor="loss",
        async_save=mode == "async",
    )
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    start = manager.resume(**parts) or 0
    position = manager.extra or {"epoch": 0, "index": 0}
    for step in range(start + 1, total + 1):
        order = torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(position["epoch"]))
        batch = order[position["index"] : position["index"] + BATCH]
        position = dict(position, index=position["index"] + BATCH)
        if position["index"] >= SAMPLES:
            position = {"epoch": position["epoch"] + 1, "index": 0}
        noise = float(np.random.normal()) * 0.01 + random.random() * 0.01
        loss = torch.nn.functional.mse_loss(model(inputs[batch] + noise), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        manager.maybe_save(step, **parts, extra=position, metrics={"loss": loss.item()})
        print(f"step {step}", flush=True)
        if step == pause_at:
            _wait_for_preemption(manager)
    manager.close()


if __name__ == "__main__":
    main()
