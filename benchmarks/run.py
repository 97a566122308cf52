"""Real checkpoint sequences, deltastore and its peers side by side.

    python benchmarks/run.py [--quick] [--sequences pretrain,finetune] [--tools deltastore,...]
                             [--cache DIR] [--results DIR]

Trains (or reuses from the cache) each sequence, stores it with every tool,
and prints per sequence x tool: stored bytes over the torch.save bytes, save
seconds per checkpoint and restore of the newest and oldest checkpoint as
ratios to torch.save/torch.load of the same checkpoint, and whether every
restore was bit-exact.  Writes report.md and cumulative.png to --results.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import TOOLS, Tool, remove, unavailable
from report import Result, chart, markdown, table
from sequences import FULL, QUICK, SEQUENCES, make_sequences

from deltastore import tree


def same_bits(a: Any, b: Any) -> bool:
    """Same structure and scalars, and every array leaf with the same dtype, shape and bits."""
    fa, fb = tree.flatten(a), tree.flatten(b)
    return fa.structure == fb.structure and all(
        (x.dtype, x.shape) == (y.dtype, y.shape) and x.data == y.data
        for (_, x), (_, y) in zip(fa.leaves, fb.leaves, strict=True)
    )


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run_tool(
    tool: Tool, states: list[Any], pt_bytes: list[bytes], result: Result
) -> tuple[list[float], float, float]:
    """Save every checkpoint, restore the newest and oldest (timed), check all restores."""
    seconds = []
    for i, (state, data) in enumerate(zip(states, pt_bytes, strict=True)):
        start = time.perf_counter()
        tool.save(i, state, data)
        seconds.append(time.perf_counter() - start)
        result.cumulative.append(tool.stored_bytes())
    newest = len(states) - 1
    # Checking every restore first also warms the page cache, as torch.load's was.
    exact = all(same_bits(tool.restore(i), s) for i, s in enumerate(states))
    t_new, got_new = timed(lambda: tool.restore(newest))
    t_old, got_old = timed(lambda: tool.restore(0))
    result.exact = exact and same_bits(got_new, states[newest]) and same_bits(got_old, states[0])
    tool.close()
    # After close: a store's SQLite WAL is folded into the catalog file by then.
    result.stored_bytes = tool.stored_bytes()
    return seconds, t_new, t_old


def bench_sequence(
    name: str, paths: list[Path], tools: list[str], work: Path, log: Any
) -> list[Result]:
    states = [torch.load(p, weights_only=True) for p in paths]
    dtype = "bf16" if name == "bf16" else "fp32"
    # The baseline, measured in this run: torch.save to a file, torch.load from it (warm).
    pt_sizes, save_base, load_base = [], [], []
    base_dir = work / "baseline"
    base_dir.mkdir()
    for i, state in enumerate(states):
        target = base_dir / f"{i}.pt"
        save_base.append(timed(lambda s=state, t=target: torch.save(s, t))[0])
        pt_sizes.append(target.stat().st_size)
        torch.load(target, weights_only=True)
        load_base.append(
            min(timed(lambda t=target: torch.load(t, weights_only=True))[0] for _ in range(2))
        )
    pt_bytes = [(base_dir / f"{i}.pt").read_bytes() for i in range(len(states))]
    remove(base_dir)
    total_pt = sum(pt_sizes)
    results = []
    for tool_name in tools:
        cls = TOOLS[tool_name]
        why = unavailable(cls)
        if why:
            results.append(Result(name, tool_name, note=why))
            continue
        tool: Tool = cls(work / tool_name.replace(" ", "_"), dtype)
        result = Result(name, tool_name, checkpoints=len(states))
        try:
            seconds, t_new, t_old = run_tool(tool, states, pt_bytes, result)
        except Exception as exc:  # a peer that fails here is reported, not hidden
            note = f"failed: {type(exc).__name__}: {exc}"[:120]
            results.append(Result(name, tool_name, note=note))
            tool.close()
            continue
        result.ratio = result.stored_bytes / total_pt
        result.save_s = sum(seconds) / len(seconds)
        result.save_x = sum(seconds) / sum(save_base)
        result.restore_newest_s, result.restore_oldest_s = t_new, t_old
        result.restore_newest_x = t_new / load_base[-1]
        result.restore_oldest_x = t_old / load_base[0]
        results.append(result)
        log(
            f"  {name:9} {tool_name:15} ratio {result.ratio:.3f}  save x{result.save_x:.2f}  "
            f"restore newest x{result.restore_newest_x:.2f} oldest x{result.restore_oldest_x:.2f}"
        )
        remove(tool.folder)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small model, few checkpoints (<5 min)"
    )
    parser.add_argument("--sequences", default=",".join(SEQUENCES))
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument(
        "--cache",
        default=os.environ.get(
            "DELTASTORE_BENCH_CACHE", str(Path.home() / ".cache" / "deltastore-bench")
        ),
    )
    parser.add_argument("--results", default=str(Path(__file__).resolve().parents[1] / "results"))
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    sequences = make_sequences(cfg, Path(args.cache), log=print)
    chosen = [s for s in args.sequences.split(",") if s]
    tools = [t for t in args.tools.split(",") if t]
    for name in chosen + tools:
        if name not in SEQUENCES and name not in TOOLS:
            parser.error(f"unknown sequence or tool {name!r}")
    work = Path(tempfile.mkdtemp(prefix="ds-bench-"))
    results: list[Result] = []
    try:
        for name in chosen:
            seq_dir = work / name
            seq_dir.mkdir()
            results += bench_sequence(name, sequences[name], tools, seq_dir, print)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    preamble = (
        f"# deltastore benchmark ({'quick' if args.quick else 'full'})\n\n"
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}. "
        "Ratios: stored bytes / torch.save bytes; speeds / torch.save and torch.load "
        "of the same checkpoints in the same run (page cache warm)."
    )
    (out / "report.md").write_text(markdown(results, preamble))
    chart(results, out / "cumulative.png")
    print()
    print(table(results))
    print(f"\nreport: {out / 'report.md'}  chart: {out / 'cumulative.png'}")
    return 0 if all(r.exact or r.note for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
