"""Write the golden store of format version 1: ``python tests/golden/make_golden.py``.

Run once per format version; the store it writes is committed and every later
deltastore must read it bit-exactly (tests/test_golden.py).  Never regenerate
the v1 store: a change that needs that is a format change (docs/format.md).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import deltastore

HERE = Path(__file__).resolve().parent
STORE = HERE / "store-v1"


def golden_state(step: int) -> dict[str, Any]:
    """A small state touching every kind of value, drifting with ``step`` like training."""
    g = torch.Generator().manual_seed(1234)
    w = torch.randn(64, 96, generator=g) / math.sqrt(96)
    drift = torch.randn(64, 96, generator=torch.Generator().manual_seed(step)) * 1e-4 * step
    return {
        "model": OrderedDict(
            [
                ("fc.weight", w + drift),
                ("fc.bias", torch.full((64,), 0.01 * step)),
                ("emb", (w[:, :32] + drift[:, :32]).to(torch.bfloat16)),
                ("half", (w[:8] * step).to(torch.float16)),
            ]
        ),
        "optim": {
            "state": {0: {"step": torch.tensor(float(step)), "exp_avg": drift * 0.1}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0], "amsgrad": False}],
        },
        "rng": {
            "torch": torch.arange(40, dtype=torch.uint8),
            "numpy": ("MT19937", np.arange(8, dtype=np.uint32), 3, 0, 0.0),
        },
        "extras": {
            "f8": torch.linspace(-2, 2, 16).to(torch.float8_e4m3fn),
            "c64": torch.complex(torch.ones(5), torch.arange(5.0)),
            "i64": np.arange(-5, 5, dtype=np.int64),
            "big_endian": np.arange(6, dtype=">f4"),
            "flag": np.bool_(True),
            "bytes": b"\x00\xff",
            "nan": float("nan"),
            "neg_zero": -0.0,
            "huge": 2**100,
            "text": "päth/with~slash",
            1: None,
        },
        "step": step,
    }


def main() -> None:
    if STORE.exists() and "--force" not in sys.argv:
        raise SystemExit(f"{STORE} exists: the golden store is written once per format version")
    shutil.rmtree(STORE, ignore_errors=True)
    expected = []
    with deltastore.open(STORE, create=True, chunk_size=4096, progress=False) as store:
        for step in (10, 20, 30):
            cid = store.save(
                golden_state(step), f"golden step {step}", step=step, metrics={"loss": 1.0 / step}
            )
            expected.append({"id": cid, "step": step})
    (STORE / "lock").unlink(missing_ok=True)
    for extra in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        (STORE / extra).unlink(missing_ok=True)
    (HERE / "store-v1.json").write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    main()
