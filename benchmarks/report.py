"""The benchmark's outputs: a terminal table, a markdown report and a PNG chart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.measure import Baseline, Result

MIB = 2**20


@dataclass
class SequenceSummary:
    """What one sequence is, and its torch.save/torch.load baseline, for the report."""

    name: str
    description: str
    parameters: int
    trainable: int
    text: str
    losses: list[float]
    baseline: Baseline

    @property
    def checkpoints(self) -> int:
        return len(self.baseline.sizes)


TABLE_HEADERS = [
    "sequence",
    "tool",
    "stored/torch.save",
    "save s/ckpt",
    "save x",
    "restore newest x",
    "restore oldest x",
    "bit-exact",
]


def table(results: Sequence[Result]) -> str:
    """A plain-text table, one row per sequence x tool; a tool without figures says why."""
    rows: list[list[str]] = []
    for r in results:
        if r.note:
            rows.append([r.sequence, r.tool, r.note])
            continue
        rows.append(
            [
                r.sequence,
                r.tool,
                f"{r.ratio:.3f}",
                f"{r.save_s:.3f}",
                f"{r.save_x:.2f}",
                f"{r.restore_newest_x:.2f}",
                f"{r.restore_oldest_x:.2f}",
                "yes" if r.exact else "NO",
            ]
        )
    widths = [len(h) for h in TABLE_HEADERS]
    for row in rows:
        for i, cell in enumerate(row if len(row) == len(widths) else row[:2]):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(TABLE_HEADERS, widths, strict=True))]
    for i, row in enumerate(rows):
        if i and row[0] != rows[i - 1][0]:
            lines.append("")
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    return "\n".join(lines)


def _trained(s: SequenceSummary) -> str:
    return f"{s.trainable / 1e6:.2f} M" if s.trainable else "none: derived"


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def markdown(
    title: str,
    environment: list[str],
    summaries: Sequence[SequenceSummary],
    results: Sequence[Result],
    tools: Sequence[tuple[str, str, str]],
    chart_name: str | None,
) -> str:
    """The full report: environment, the sequences, one results table, the tools, the chart."""
    lines = [f"# {title}", ""]
    lines += [f"- {e}" for e in environment]
    lines += ["", "## Sequences", ""]
    lines += _md_table(
        [
            "sequence",
            "what",
            "text",
            "parameters (trained)",
            "checkpoints",
            "torch.save MiB/ckpt",
            "loss first → last",
            "torch.save s/ckpt",
            "torch.load s newest / oldest",
        ],
        [
            [
                s.name,
                s.description,
                s.text,
                f"{s.parameters / 1e6:.2f} M ({_trained(s)})",
                str(s.checkpoints),
                f"{sum(s.baseline.sizes) / len(s.baseline.sizes) / MIB:.1f}",
                f"{s.losses[0]:.2f} → {s.losses[-1]:.2f}" if s.losses else "",
                f"{sum(s.baseline.save_s) / len(s.baseline.save_s):.3f}",
                f"{s.baseline.load_newest_s:.3f} / {s.baseline.load_oldest_s:.3f}",
            ]
            for s in summaries
        ],
    )
    lines += [
        "",
        "## Results",
        "",
        "Stored = bytes on disk after every checkpoint of the sequence; `x` = this tool's seconds "
        "over `torch.save` (save) or `torch.load` (restore) of the same checkpoints in this run; "
        "restores timed with the page cache warm (median of repeats). Bit-exact: every "
        "checkpoint restored and compared bit for bit with what was saved.",
        "",
    ]
    rows = []
    for r in results:
        if r.note:
            rows.append([r.sequence, r.tool, r.note, "", "", "", "", "", "-"])
            continue
        rows.append(
            [
                r.sequence,
                r.tool,
                f"{r.stored_bytes / MIB:.1f}",
                f"**{r.ratio:.3f}**",
                f"{r.save_s:.3f}",
                f"{r.save_x:.2f}",
                f"{r.restore_newest_s:.3f} ({r.restore_newest_x:.2f}x)",
                f"{r.restore_oldest_s:.3f} ({r.restore_oldest_x:.2f}x)",
                "yes" if r.exact else f"**NO** ({r.mismatch})",
            ]
        )
    lines += _md_table(
        [
            "sequence",
            "tool",
            "stored MiB",
            "stored / torch.save",
            "save s/ckpt",
            "save x",
            "restore newest s (x)",
            "restore oldest s (x)",
            "bit-exact",
        ],
        rows,
    )
    lines += ["", "## Tools", ""]
    lines += _md_table(["tool", "how it stores", "version"], [list(t) for t in tools])
    if chart_name:
        lines += [
            "",
            "## Stored bytes over the run",
            "",
            f"![cumulative stored bytes]({chart_name})",
        ]
    return "\n".join(lines) + "\n"


def chart(results: Sequence[Result], path: Path) -> None:
    """Cumulative stored MiB after each checkpoint: one panel per sequence, one line per tool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    sequences = list(dict.fromkeys(r.sequence for r in results))
    tools = list(dict.fromkeys(r.tool for r in results if r.cumulative))
    styles = {t: _style(t, i) for i, t in enumerate(tools)}
    cols = min(3, len(sequences))
    rows = -(-len(sequences) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(sequences) :]:
        ax.set_visible(False)
    for ax, seq in zip(axes.flat, sequences, strict=False):
        for r in results:
            if r.sequence == seq and r.cumulative:
                ax.plot(
                    range(1, len(r.cumulative) + 1),
                    [b / MIB for b in r.cumulative],
                    label=r.tool,
                    markersize=4,
                    **styles[r.tool],
                )
        ax.set_title(seq)
        ax.set_xlabel("checkpoint")
        ax.set_ylabel("stored MiB (cumulative)")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = [], []
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: Lines that would otherwise hide each other (equal sizes) get their own look.
_FIXED_STYLES: dict[str, dict[str, Any]] = {
    "torch.save": {"color": "black", "linewidth": 2.5, "marker": "o"},
    "safetensors": {"color": "C1", "linestyle": "--", "marker": "s"},
    "deltastore": {"color": "C3", "linewidth": 2.5, "marker": "D"},
    "deltastore-nofsync": {"color": "C9", "linestyle": "--", "marker": "x"},
}


def _style(tool: str, index: int) -> dict[str, Any]:
    if tool in _FIXED_STYLES:
        return _FIXED_STYLES[tool]
    markers = "^v<>p*h"
    return {"color": f"C{[0, 2, 4, 5, 6, 7, 8][index % 7]}", "marker": markers[index % 7]}
