"""The benchmark's outputs: a terminal table, a markdown report, a PNG chart."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Result:
    """One tool on one sequence; times in seconds, ratios against torch.save/torch.load."""

    sequence: str
    tool: str
    checkpoints: int = 0
    stored_bytes: int = 0
    ratio: float = 0.0  # stored bytes / torch.save bytes of the same checkpoints
    save_s: float = 0.0  # mean per checkpoint
    save_x: float = 0.0  # save_s / torch.save seconds of the same checkpoints
    restore_newest_s: float = 0.0
    restore_newest_x: float = 0.0
    restore_oldest_s: float = 0.0
    restore_oldest_x: float = 0.0
    exact: bool = False
    cumulative: list[int] = field(default_factory=list)  # stored bytes after each checkpoint
    note: str = ""


HEADERS = [
    "sequence",
    "tool",
    "stored/torch.save",
    "save s/ckpt",
    "save x",
    "restore newest x",
    "restore oldest x",
    "bit-exact",
]


def rows(results: list[Result]) -> list[list[str]]:
    out = []
    for r in results:
        if r.note:
            out.append([r.sequence, r.tool, r.note, "", "", "", "", ""])
            continue
        out.append(
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
    return out


def table(results: list[Result]) -> str:
    body = rows(results)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def markdown(results: list[Result], preamble: str) -> str:
    lines = [preamble, "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    return "\n".join(lines) + "\n"


def chart(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sequences = sorted({r.sequence for r in results}, key=[r.sequence for r in results].index)
    fig, axes = plt.subplots(1, len(sequences), figsize=(4.5 * len(sequences), 4), squeeze=False)
    for ax, seq in zip(axes[0], sequences, strict=True):
        for r in results:
            if r.sequence == seq and r.cumulative:
                ax.plot(
                    range(1, len(r.cumulative) + 1),
                    [b / 2**20 for b in r.cumulative],
                    marker=".",
                    label=r.tool,
                )
        ax.set_title(seq)
        ax.set_xlabel("checkpoint")
        ax.set_ylabel("cumulative stored MiB")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
