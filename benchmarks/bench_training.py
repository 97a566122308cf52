"""What checkpointing costs a training loop: the benchmark's pretrain model, saving every 25 steps.

    python benchmarks/bench_training.py [--steps 150] [--every 25] [--dir /tmp]

Trains the 10.9 M-parameter GPT of benchmarks/sequences.py (model + AdamW
state: ~125 MB per checkpoint) four times from the same start: without
saving, with ``torch.save`` every N steps, and with deltastore's
CheckpointManager, synchronous and asynchronous.  Prints the loop's wall
time, its overhead over the run without saving, and how long each save
blocked the loop, as a ratio to ``torch.save`` of the same state in the same
run.  Target (issue 5): async blocking <= 0.2 x torch.save.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import deltastore
from benchmarks.sequences import FULL, GPT, as_tokens, pretrain_text, train_step

Saver = Callable[[int, nn.Module, torch.optim.Optimizer], None]


def run(steps: int, tokens: torch.Tensor, save: Saver | None) -> tuple[float, list[float]]:
    """Train ``steps`` steps from a fixed start; return the wall time and each save's seconds."""
    torch.manual_seed(0)
    model = GPT(FULL)
    optimizer = torch.optim.AdamW(model.parameters(), lr=FULL.lr, weight_decay=FULL.weight_decay)
    gen = torch.Generator().manual_seed(0)
    save_seconds: list[float] = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        train_step(model, optimizer, tokens, FULL, gen)
        if save is not None:
            before = time.perf_counter()
            save(step, model, optimizer)
            if time.perf_counter() - before > 1e-3:
                save_seconds.append(time.perf_counter() - before)
    return time.perf_counter() - started, save_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    tokens = as_tokens(pretrain_text()[0])
    work = Path(tempfile.mkdtemp(prefix="ds-train-", dir=args.dir))
    results: dict[str, tuple[float, list[float]]] = {}
    try:
        results["no saving"] = run(args.steps, tokens, None)

        def torch_save(step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
            if step % args.every == 0:
                state = {"model": model.state_dict(), "optim": optimizer.state_dict(), "step": step}
                torch.save(state, work / f"ckpt_{step}.pt")

        results["torch.save"] = run(args.steps, tokens, torch_save)
        for name, async_save in (("deltastore sync", False), ("deltastore async", True)):
            manager = deltastore.CheckpointManager(
                work / name.replace(" ", "-"), every_n_steps=args.every, async_save=async_save
            )

            def managed(step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
                manager.maybe_save(step, model=model, optimizer=optimizer)  # noqa: B023

            elapsed, _ = run(args.steps, tokens, managed)
            flush_started = time.perf_counter()
            manager.close()
            results[name] = (
                elapsed + time.perf_counter() - flush_started,
                manager.blocking_seconds,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["no saving"][0]
    torch_block = statistics.median(results["torch.save"][1])
    print(
        f"{FULL.layers}-layer GPT, 10.9 M parameters + AdamW; {args.steps} steps, "
        f"a save every {args.every}; loop times include the final flush"
    )
    print(
        f"{'mode':<18} {'loop s':>7} {'overhead':>9} {'blocking s/save':>16} {'x torch.save':>13}"
    )
    for name, (elapsed, blocks) in results.items():
        block = statistics.median(blocks) if blocks else 0.0
        ratio = f"{block / torch_block:>13.2f}" if blocks else f"{'':>13}"
        first = f"{blocks[0]:>13.3f}" if blocks else f"{'':>13}"
        print(
            f"{name:<18} {elapsed:>7.1f} {100 * (elapsed - base) / base:>8.1f}% "
            f"{block:>16.3f} {ratio} {first}"
        )
    print("target: async blocking <= 0.20 x torch.save")


if __name__ == "__main__":
    main()
