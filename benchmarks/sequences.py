"""Checkpoint sequences made by real training on CPU: deterministic, and cached on disk.

Ratios measured on zeros or on random noise say nothing about real checkpoints (DESIGN.md,
section 5), so every sequence here comes from actually training a small GPT-style byte-level
decoder on real text:

``pretrain``  trained from scratch on the standard library's ``.py`` sources with AdamW;
              a checkpoint is model + optimizer + step.
``finetune``  the final ``pretrain`` weights fine-tuned at a small learning rate on different
              text (``pydoc_data/topics.py``: English documentation), all parameters, fresh AdamW.
``frozen``    the same fine-tune with the embeddings and the lower half of the blocks frozen
              (the optimizer holds state for the trained parameters only).
``lora``      the ``pretrain`` model frozen, rank-8 adapters on every linear layer of the blocks;
              the checkpoint holds the whole model (frozen base included, as users save it).
``bf16``      model-only checkpoints in bfloat16, derived by casting the ``pretrain`` run's
              checkpoints (not a separate bf16 training run).

Checkpoints are ``torch.save`` files under ``<cache>/<key>/``, read back only with
``torch.load(weights_only=True)``.  The key hashes a version, the configuration, the exact
training texts and the torch version, so changing any of them trains again.  A sequence set is
built in a scratch folder and renamed into place when complete: an interrupted run leaves
nothing that a later run would take for a cache hit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

SEQUENCES = ("pretrain", "finetune", "frozen", "lora", "bf16")
#: Bump when the training code changes in a way the configuration does not show.
CACHE_VERSION = 2
#: Training always uses this many threads: CPU float reductions depend on the thread count, so a
#: fixed count keeps a sequence identical on machines with different core counts.
TRAIN_THREADS = 2

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    """Everything that shapes the checkpoints (all of it goes into the cache key)."""

    d_model: int
    layers: int
    heads: int
    context: int
    batch: int
    pretrain_steps: int
    finetune_steps: int
    every: int  # a checkpoint every this many steps
    lr: float = 3e-4
    finetune_lr: float = 2e-5
    lora_lr: float = 1e-3  # the adapters start from zero, so they need a larger step
    lora_rank: int = 8
    weight_decay: float = 0.01
    seed: int = 0


FULL = Config(
    d_model=384,
    layers=6,
    heads=6,
    context=128,
    batch=8,
    pretrain_steps=300,
    finetune_steps=250,
    every=25,
)  # 10.9 M parameters; 12 pretrain checkpoints, 10 per fine-tune
QUICK = Config(
    d_model=128,
    layers=2,
    heads=4,
    context=64,
    batch=8,
    pretrain_steps=60,
    finetune_steps=50,
    every=10,
)  # 0.47 M parameters; 6 pretrain checkpoints, 5 per fine-tune


#: One line per sequence for the report.
DESCRIPTIONS = {
    "pretrain": "from scratch on stdlib .py sources, AdamW; model + optimizer + step",
    "finetune": "pretrain fine-tuned on English docs at lr 2e-5, all parameters",
    "frozen": "the same fine-tune, embeddings and lower half of the blocks frozen",
    "lora": "pretrain frozen + rank-8 adapters; full model + optimizer saved",
    "bf16": "pretrain checkpoints cast to bfloat16, model only",
}


@dataclass
class Sequence:
    """One cached checkpoint sequence: its files in training order and how it was made."""

    name: str
    paths: list[Path]
    info: dict[str, Any] = field(default_factory=dict)

    def load(self, index: int) -> Any:
        """Checkpoint ``index`` as saved by training (``weights_only``: nothing is unpickled)."""
        return torch.load(self.paths[index], weights_only=True)


# -- data -------------------------------------------------------------------------------------


def pretrain_text(limit: int = 4_000_000) -> tuple[bytes, str]:
    """Real code: the standard library's top-level ``.py`` files in name order, up to ``limit``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(root.glob("*.py")):
        parts.append(path.read_bytes())
        size += len(parts[-1])
        if size >= limit:
            break
    return b"".join(parts), f"{len(parts)} stdlib .py files ({size / 1e6:.1f} MB)"


def finetune_text() -> tuple[bytes, str]:
    """Different real text: the stdlib's English documentation topics, shipped with CPython.

    Falls back to the ``email`` package's sources (disjoint from the top-level files pretrain
    reads) on a trimmed install without ``pydoc_data``.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    topics = root / "pydoc_data" / "topics.py"
    if topics.is_file():
        data = topics.read_bytes()
        return data, f"pydoc_data/topics.py ({len(data) / 1e6:.1f} MB of English docs)"
    files = sorted((root / "email").rglob("*.py"))
    data = b"".join(p.read_bytes() for p in files)
    return data, f"email package sources ({len(data) / 1e6:.1f} MB)"


def as_tokens(text: bytes) -> torch.Tensor:
    """Bytes as token ids (vocabulary 256: no tokenizer to install or version)."""
    return torch.frombuffer(bytearray(text), dtype=torch.uint8).long()


# -- model ------------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a GELU MLP."""

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
        return x + self.down(nn.functional.gelu(self.up(self.ln2(x))))  # type: ignore[no-any-return]


class GPT(nn.Module):
    """A small GPT-style decoder over bytes, with untied input and output embeddings."""

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
    """A frozen linear layer plus a trainable low-rank update ``B @ A`` (B starts at zero)."""

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
    """Freeze every parameter, then wrap each linear layer of the blocks with an adapter."""
    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.blocks:
        for name in ("qkv", "proj", "up", "down"):
            setattr(block, name, LoRALinear(getattr(block, name), rank))


def freeze_lower_half(model: GPT) -> None:
    """Freeze the embeddings and the lower half of the blocks (a common cheap fine-tune)."""
    for module in [model.tok, model.pos, *model.blocks[: len(model.blocks) // 2]]:
        for p in module.parameters():
            p.requires_grad_(False)


# -- training ---------------------------------------------------------------------------------


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    tokens: torch.Tensor,
    cfg: Config,
    gen: torch.Generator,
) -> float:
    """One AdamW step on a random batch of byte windows; returns the loss."""
    starts = torch.randint(0, len(tokens) - cfg.context - 1, (cfg.batch,), generator=gen)
    batch = torch.stack([tokens[s : s + cfg.context + 1] for s in starts.tolist()])
    logits = model(batch[:, :-1])
    loss = nn.functional.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()
    return float(loss.item())


def train(
    model: nn.Module,
    tokens: torch.Tensor,
    cfg: Config,
    steps: int,
    lr: float,
    seed: int,
    out: Path,
    log: Log,
) -> tuple[list[Path], list[float]]:
    """Train with AdamW, saving model + optimizer + step every ``cfg.every`` steps.

    Returns the checkpoint files and, for each, the mean loss since the previous checkpoint
    (evidence in the report that the run really learns).
    """
    out.mkdir(parents=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    paths: list[Path] = []
    losses: list[float] = []
    window_losses: list[float] = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        window_losses.append(train_step(model, opt, tokens, cfg, gen))
        if step % cfg.every == 0:
            path = out / f"ckpt_{step:05d}.pt"
            torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step}, path)
            paths.append(path)
            losses.append(sum(window_losses) / len(window_losses))
            window_losses.clear()
            log(
                f"  {out.name:8} step {step:4d}  loss {losses[-1]:.3f}  "
                f"({time.perf_counter() - started:.0f} s)"
            )
    return paths, losses


def cache_key(cfg: Config, texts: list[bytes]) -> str:
    """A short hash of everything that determines the checkpoints' bytes."""
    spec = {
        "version": CACHE_VERSION,
        "config": asdict(cfg),
        "texts": [hashlib.sha256(t).hexdigest() for t in texts],
        "torch": torch.__version__,
        "threads": TRAIN_THREADS,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def default_cache() -> Path:
    """``$DELTASTORE_BENCH_CACHE``, else ``~/.cache/deltastore-bench`` (outside the repository)."""
    env = os.environ.get("DELTASTORE_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "deltastore-bench"


def cache_dir(cfg: Config, cache: Path) -> Path:
    """The folder that holds (or will hold) the sequences of ``cfg`` under ``cache``."""
    return cache / cache_key(cfg, [pretrain_text()[0], finetune_text()[0]])


def is_cached(cfg: Config, cache: Path) -> bool:
    return (cache_dir(cfg, cache) / "meta.json").is_file()


def make_sequences(cfg: Config, cache: Path, log: Log = print) -> dict[str, Sequence]:
    """Every sequence, from the cache or trained now (then cached); checkpoints in order."""
    code, code_source = pretrain_text()
    docs, docs_source = finetune_text()
    root = cache_dir(cfg, cache)
    meta_file = root / "meta.json"
    if meta_file.is_file():
        log(f"sequences: cached in {root}")
        return _read_meta(root, meta_file)

    log(f"sequences: training (cached afterwards in {root})")
    scratch = cache / f"{root.name}.partial-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        meta = _train_all(cfg, scratch, as_tokens(code), as_tokens(docs), log)
        meta["pretrain"]["text"] = code_source
        for name in ("finetune", "frozen", "lora"):
            meta[name]["text"] = docs_source
        meta["bf16"]["text"] = f"cast from pretrain ({code_source})"
        (scratch / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            scratch.rename(root)
        except OSError:  # another run finished the same sequences first: theirs are as good
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _read_meta(root, meta_file)


def _train_all(
    cfg: Config, root: Path, code: torch.Tensor, docs: torch.Tensor, log: Log
) -> dict[str, dict[str, Any]]:
    """Train the five sequences into ``root``; return each one's metadata (files relative)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        meta: dict[str, dict[str, Any]] = {}

        def record(name: str, model: nn.Module, paths: list[Path], losses: list[float]) -> None:
            meta[name] = {
                "files": [str(p.relative_to(root)) for p in paths],
                "losses": losses,
                "parameters": sum(p.numel() for p in model.parameters()),
                "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "seconds": round(time.perf_counter() - started, 1),
            }

        started = time.perf_counter()
        torch.manual_seed(cfg.seed)
        model = GPT(cfg)
        log(f"  pretrain: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
        paths, losses = train(
            model, code, cfg, cfg.pretrain_steps, cfg.lr, cfg.seed + 1, root / "pretrain", log
        )
        record("pretrain", model, paths, losses)
        pretrained = {k: v.clone() for k, v in model.state_dict().items()}

        for name in ("finetune", "frozen", "lora"):
            started = time.perf_counter()
            model = GPT(cfg)
            model.load_state_dict(pretrained)
            lr = cfg.finetune_lr
            if name == "frozen":
                freeze_lower_half(model)
            elif name == "lora":
                torch.manual_seed(cfg.seed + 2)
                add_lora(model, cfg.lora_rank)
                lr = cfg.lora_lr
            paths, losses = train(
                model, docs, cfg, cfg.finetune_steps, lr, cfg.seed + 3, root / name, log
            )
            record(name, model, paths, losses)

        started = time.perf_counter()
        (root / "bf16").mkdir()
        bf16_paths = []
        for path in (root / f for f in meta["pretrain"]["files"]):
            weights = torch.load(path, weights_only=True)["model"]
            target = root / "bf16" / path.name
            torch.save({k: v.to(torch.bfloat16) for k, v in weights.items()}, target)
            bf16_paths.append(target)
        meta["bf16"] = {
            **meta["pretrain"],
            "files": [str(p.relative_to(root)) for p in bf16_paths],
            "seconds": round(time.perf_counter() - started, 1),
            "trainable": 0,
        }
        return meta
    finally:
        torch.set_num_threads(threads)


def _read_meta(root: Path, meta_file: Path) -> dict[str, Sequence]:
    meta = json.loads(meta_file.read_text())
    return {
        name: Sequence(
            name,
            [root / f for f in meta[name]["files"]],
            {k: v for k, v in meta[name].items() if k != "files"},
        )
        for name in SEQUENCES
    }
