"""The demo: train a small model on CPU, checkpoint it into a store, prove the savings.

``python -m deltastore.demo [--store runs/demo] [--steps 300] [--every 25]``

It trains a small byte-level language model on Python's own standard-library
sources, saves model + optimizer + step every N steps, prints the log and a
storage table against the ``torch.save`` files the same run would have
written, then restores the oldest checkpoint and checks it bit for bit.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import deltastore
from deltastore.cli.common import human_bytes, print_table


def corpus(limit: int = 2_000_000) -> bytes:
    """Real text: the standard library's own sources, read as bytes."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[bytes] = []
    size = 0
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes()
        parts.append(data)
        size += len(data)
        if size >= limit:
            break
    return b"".join(parts)


def build_model(seed: int) -> Any:
    import torch

    torch.manual_seed(seed)

    class ByteLM(torch.nn.Module):
        """Embeds a window of bytes and predicts the next one (an MLP, as in Bengio 2003)."""

        def __init__(self, context: int = 32, dim: int = 128, hidden: int = 512) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(256, dim)
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(context * dim, hidden),
                torch.nn.GELU(),
                torch.nn.LayerNorm(hidden),
                torch.nn.Linear(hidden, hidden),
                torch.nn.GELU(),
                torch.nn.Linear(hidden, 256),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mlp(self.embed(x).flatten(1))  # type: ignore[no-any-return]

    return ByteLM()


def torch_save_bytes(state: Any) -> int:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/demo", help="store folder (recreated)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25, help="checkpoint every N steps")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    data = torch.frombuffer(bytearray(corpus()), dtype=torch.uint8).long()
    model = build_model(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)

    shutil.rmtree(args.store, ignore_errors=True)
    store = deltastore.open(args.store, create=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"training a {n_params / 1e6:.1f} M-parameter byte-level model for {args.steps} steps, "
        f"checkpointing every {args.every} into {args.store}"
    )
    torch_bytes = 0
    save_seconds = 0.0
    first_state: dict[str, Any] | None = None
    for step in range(1, args.steps + 1):
        starts = torch.randint(0, len(data) - 33, (64,), generator=generator)
        window = torch.stack([data[s : s + 33] for s in starts.tolist()])
        loss = torch.nn.functional.cross_entropy(model(window[:, :32]), window[:, 32])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if step % args.every == 0:
            state = {"model": model.state_dict(), "optim": opt.state_dict(), "step": step}
            t0 = time.perf_counter()
            store.save(state, f"step {step}", step=step, metrics={"loss": loss.item()})
            save_seconds += time.perf_counter() - t0
            torch_bytes += torch_save_bytes(state)
            if first_state is None:
                import copy

                first_state = copy.deepcopy(state)

    print("\n$ deltastore log")
    rows = [
        [
            c.short_id,
            str(c.step),
            f"{c.metrics['loss']:.3f}",
            human_bytes(c.logical_bytes),
            human_bytes(c.stored_bytes),
        ]
        for c in store.log()
    ]
    print_table(["id", "step", "loss", "logical", "stored"], rows, {1, 2, 3, 4})

    stats = store.stats()
    print("\nstorage over the run")
    print_table(
        ["", "bytes", "vs torch.save"],
        [
            ["torch.save files", human_bytes(torch_bytes), "1.000"],
            [
                "deltastore",
                human_bytes(stats.stored_bytes),
                f"{stats.stored_bytes / torch_bytes:.3f}",
            ],
        ],
        {1, 2},
    )
    per_save_ms = save_seconds / max(stats.checkpoint_count, 1) * 1000
    print(f"{stats.checkpoint_count} checkpoints, {per_save_ms:.0f} ms per save")

    oldest = list(store.log())[-1]
    restored = store.load(oldest.id)
    assert first_state is not None
    same = _bits_equal(restored, first_state)
    print(
        f"\nrestored the oldest checkpoint ({oldest.short_id}, step {oldest.step}): "
        f"{'bit-exact' if same else 'MISMATCH'}"
    )
    store.close()
    return 0 if same else 1


def _bits_equal(a: Any, b: Any) -> bool:
    """Same structure, types, dtypes, shapes and bits (NaN payloads included)."""
    import torch

    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and (a.dtype, a.shape) == (b.dtype, b.shape)
            and bytes(a.contiguous().reshape(-1).view(torch.uint8).numpy())
            == bytes(b.contiguous().reshape(-1).view(torch.uint8).numpy())
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and list(a) == list(b) and all(_bits_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_bits_equal, a, b))
    return type(a) is type(b) and a == b


if __name__ == "__main__":
    sys.exit(main())
