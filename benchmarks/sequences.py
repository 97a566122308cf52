"""Checkpoint sequences made by real training on CPU, deterministic and cached.

``pretrain``  a GPT-style byte-level decoder trained from scratch on the
              standard library's .py sources with AdamW; checkpoint = model +
              optimizer + step.
``finetune``  the final pretrain model fine-tuned at lr 2e-5 on different text
              (pydoc_data/topics.py: English documentation), all parameters.
``frozen``    the same fine-tune with the embeddings and the lower half of the
              layers frozen.
``lora``      the pretrain model frozen, rank-8 adapters on every linear layer.
``bf16``      model-only checkpoints in bfloat16, cast from the pretrain run's
              checkpoints (the weights a bf16 training run would save).

Checkpoints are cached as torch.save files (read back with weights_only=True)
under a folder keyed by the configuration, so reruns skip training.
"""

from __future__ import annotations

import hashlib
import json
import math
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

SEQUENCES = ("pretrain", "finetune", "frozen", "lora", "bf16")
CACHE_VERSION = 1


@dataclass(frozen=True)
class Config:
    d_model: int
    layers: int
    heads: int
    context: int
    batch: int
    pretrain_steps: int
    finetune_steps: int
    every: int
    lr: float = 3e-4
    finetune_lr: float = 2e-5
    lora_rank: int = 8
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({"v": CACHE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


FULL = Config(
    d_model=384,
    layers=6,
    heads=6,
    context=128,
    batch=8,
    pretrain_steps=300,
    finetune_steps=250,
    every=25,
)  # ~10.7 M parameters
QUICK = Config(
    d_model=128,
    layers=2,
    heads=4,
    context=64,
    batch=8,
    pretrain_steps=60,
    finetune_steps=50,
    every=10,
)  # ~0.4 M parameters


def stdlib_text(kind: str, limit: int = 4_000_000) -> bytes:
    """Real text: the stdlib's Python sources, or its English documentation."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if kind == "docs":
        return (root / "pydoc_data" / "topics.py").read_bytes()
    parts, size = [], 0
    for path in sorted(root.glob("*.py")):
        parts.append(path.read_bytes())
        size += len(parts[-1])
        if size >= limit:
            break
    return b"".join(parts)


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        att = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.down(nn.functional.gelu(self.up(self.ln2(x))))


class GPT(nn.Module):
    """A small GPT-style decoder over bytes (vocabulary 256)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.tok = nn.Embedding(256, cfg.d_model)
        self.pos = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.heads) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, 256, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))  # type: ignore[no-any-return]


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update B @ A (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(
            torch.randn(rank, base.in_features) / math.sqrt(base.in_features)
        )
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T) @ self.lora_b.T  # type: ignore[no-any-return]


def add_lora(model: GPT, rank: int) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.blocks:
        for name in ("qkv", "proj", "up", "down"):
            setattr(block, name, LoRALinear(getattr(block, name), rank))


def train(
    model: nn.Module,
    data: torch.Tensor,
    cfg: Config,
    steps: int,
    lr: float,
    seed: int,
    out: Path,
    log: Any,
) -> list[Path]:
    """Train with AdamW, saving model + optimizer + step every cfg.every steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    paths = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(data) - cfg.context - 1, (cfg.batch,), generator=gen)
        window = torch.stack([data[s : s + cfg.context + 1] for s in starts.tolist()])
        logits = model(window[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 256), window[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if step % cfg.every == 0:
            path = out / f"ckpt_{step:05d}.pt"
            torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step}, path)
            paths.append(path)
            log(
                f"  {out.name} step {step} loss {loss.item():.3f} "
                f"({time.perf_counter() - started:.0f} s)"
            )
    return paths


def _bytes_tensor(text: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(text), dtype=torch.uint8).long()


def make_sequences(cfg: Config, cache: Path, log: Any = print) -> dict[str, list[Path]]:
    """Train (or find in the cache) every sequence; return their checkpoint files in order."""
    torch.set_num_threads(2)
    root = cache / cfg.key()
    done = root / "done.json"
    if done.exists():
        listing = json.loads(done.read_text())
        return {name: [root / p for p in paths] for name, paths in listing.items()}
    code, docs = _bytes_tensor(stdlib_text("code")), _bytes_tensor(stdlib_text("docs"))
    seqs: dict[str, list[Path]] = {}

    torch.manual_seed(cfg.seed)
    model = GPT(cfg)
    log(f"pretrain: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    (root / "pretrain").mkdir(parents=True, exist_ok=True)
    seqs["pretrain"] = train(
        model, code, cfg, cfg.pretrain_steps, cfg.lr, 1, root / "pretrain", log
    )
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}

    for name in ("finetune", "frozen", "lora"):
        model = GPT(cfg)
        model.load_state_dict(pretrained)
        if name == "frozen":
            for module in [model.tok, model.pos, *model.blocks[: cfg.layers // 2]]:
                for p in module.parameters():
                    p.requires_grad_(False)
        if name == "lora":
            torch.manual_seed(cfg.seed + 1)
            add_lora(model, cfg.lora_rank)
        (root / name).mkdir(parents=True, exist_ok=True)
        lr = 1e-3 if name == "lora" else cfg.finetune_lr  # adapters train from zero
        seqs[name] = train(model, docs, cfg, cfg.finetune_steps, lr, 2, root / name, log)

    (root / "bf16").mkdir(parents=True, exist_ok=True)
    seqs["bf16"] = []
    for path in seqs["pretrain"]:
        state = torch.load(path, weights_only=True)
        target = root / "bf16" / path.name
        torch.save({k: v.to(torch.bfloat16) for k, v in state["model"].items()}, target)
        seqs["bf16"].append(target)
    done.write_text(
        json.dumps({n: [str(p.relative_to(root)) for p in ps] for n, ps in seqs.items()})
    )
    return seqs
