"""Real checkpoint sequences, deltastore and its peers side by side.

    python benchmarks/run.py [--quick] [--sequences pretrain,finetune,...] [--tools deltastore,...]
                             [--cache DIR] [--results DIR] [--repeats N]

Trains (or takes from the cache) each sequence, stores it with every tool and prints, per
sequence x tool: stored bytes over the torch.save files' bytes, save seconds per checkpoint and
restore seconds of the newest and the oldest checkpoint as ratios to torch.save / torch.load of
the same checkpoints measured in this run, and whether every restore was bit-exact.  Writes
report.md and cumulative.png to --results.

Exits 1 only if deltastore (or the torch.save baseline) fails or restores a checkpoint that is
not bit-exact: the numbers themselves are never judged here, and a peer's failure is reported,
not fatal.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the suite as the package it is
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

import deltastore
from benchmarks import peers, report, sequences
from benchmarks.measure import Result, measure_baseline, measure_tool

REPO = Path(__file__).resolve().parents[1]
#: Tools whose failure fails the run (the others are peers: their failure is a finding).
MUST_PASS = ("deltastore", "deltastore-nofsync", "torch.save")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="0.47 M parameters, fewer checkpoints: < 5 min"
    )
    parser.add_argument(
        "--sequences",
        default=",".join(sequences.SEQUENCES),
        help=f"comma-separated, from {', '.join(sequences.SEQUENCES)}",
    )
    parser.add_argument(
        "--tools",
        default=",".join(peers.TOOLS),
        help=f"comma-separated, from {', '.join(peers.TOOLS)}",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=sequences.default_cache(),
        help="where trained sequences are kept (default $DELTASTORE_BENCH_CACHE "
        "or ~/.cache/deltastore-bench)",
    )
    parser.add_argument(
        "--results", type=Path, default=REPO / "results", help="report folder (default results/)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed restores per figure (median; default 3)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch folder for the tools (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    args.sequences = [s for s in args.sequences.split(",") if s]
    args.tools = [t for t in args.tools.split(",") if t]
    for name in args.sequences:
        if name not in sequences.SEQUENCES:
            parser.error(f"unknown sequence {name!r}; choose from {', '.join(sequences.SEQUENCES)}")
    for name in args.tools:
        if name not in peers.TOOLS:
            parser.error(f"unknown tool {name!r}; choose from {', '.join(peers.TOOLS)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def environment(quick: bool, seconds: float, prepared: float, cached: bool) -> list[str]:
    native = sys.modules.get("deltastore._native")
    built = getattr(native, "__file__", None) is not None
    how = "from the cache" if cached else "trained in this run"
    return [
        f"{'quick' if quick else 'full'} run: {seconds:.0f} s in all; sequences {how} "
        f"({prepared:.0f} s)",
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        f"deltastore {deltastore.__version__}, native extension "
        f"{'built' if built else 'NOT built (pure-Python stand-in: slower)'}",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain kill (SIGTERM) unwinds like Ctrl-C, so the scratch folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    cfg = sequences.QUICK if args.quick else sequences.FULL
    cached = sequences.is_cached(cfg, args.cache)
    made = sequences.make_sequences(cfg, args.cache, log=print)
    prepared = time.perf_counter() - started
    torch.set_num_threads(os.cpu_count() or 1)

    summaries: list[report.SequenceSummary] = []
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="deltastore-bench-", dir=args.work) as scratch:
        for name in args.sequences:
            seq = made[name]
            print(f"\n{name}: loading {len(seq.paths)} checkpoints")
            states = [seq.load(i) for i in range(len(seq.paths))]
            work = Path(scratch) / name
            baseline = measure_baseline(states, work / "baseline", args.repeats)
            summaries.append(
                report.SequenceSummary(
                    name,
                    sequences.DESCRIPTIONS[name],
                    seq.info["parameters"],
                    seq.info["trainable"],
                    seq.info["text"],
                    seq.info["losses"],
                    baseline,
                )
            )
            for tool_name in args.tools:
                began = time.perf_counter()
                tool = peers.TOOLS[tool_name]
                result = measure_tool(tool, name, states, work / tool_name, baseline, args.repeats)
                results.append(result)
                took = time.perf_counter() - began
                print(f"  {tool_name:19} {_one_line(result)}  [{took:.0f} s]", flush=True)
            del states

    elapsed = time.perf_counter() - started
    args.results.mkdir(parents=True, exist_ok=True)
    chart_path = args.results / "cumulative.png"
    report.chart(results, chart_path)
    tools = [
        (t.name, t.summary, t.unavailable() or t.version())
        for t in (peers.TOOLS[n] for n in args.tools)
    ]
    (args.results / "report.md").write_text(
        report.markdown(
            f"deltastore benchmark ({'quick' if args.quick else 'full'})",
            environment(args.quick, elapsed, prepared, cached),
            summaries,
            results,
            tools,
            chart_path.name,
        )
    )
    print()
    print(report.table(results))
    for r in results:
        if r.mismatch:
            print(f"NOT BIT-EXACT: {r.sequence} / {r.tool}: {r.mismatch}")
    print(f"\n{elapsed:.0f} s.  report: {args.results / 'report.md'}  chart: {chart_path}")
    failed = [r for r in results if r.tool in MUST_PASS and not r.exact]
    return 1 if failed else 0


def _one_line(r: Result) -> str:
    if r.note:
        return r.note
    exact = "bit-exact" if r.exact else f"NOT BIT-EXACT ({r.mismatch})"
    return (
        f"stored {r.ratio:.3f}  save x{r.save_x:.2f}  restore newest x{r.restore_newest_x:.2f} "
        f"oldest x{r.restore_oldest_x:.2f}  {exact}"
    )


if __name__ == "__main__":
    sys.exit(main())
