"""Figures for TensorBoard and for files: phase-transition curves, ticket maps, overlap heatmaps.

Figures are drawn on matplotlib's Agg canvas directly, without pyplot, so no display is needed and
the process's matplotlib backend is left as the user set it. Every figure has a title, axis labels,
task names and a colour bar where colour carries a number, so it reads on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .masks import Ticket

KIND_STYLE = {"winning": ("tab:green", "o"), "random": ("tab:blue", "s"), "losing": ("tab:red", "v")}


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas: no pyplot state, no global backend."""
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def phase_transition_figure(rows: Sequence[dict], reruns: Sequence[dict], task: str, metric: str) -> Figure:
    """Dev metric against the fraction of encoder weights kept, one line per ticket kind (rows: kind,
    kept, score), the full model as a horizontal line; reruns of the full model and the best winning
    ticket with more seeds (kind, kept, mean, std, seeds) as mean ± std, the full model's as a band."""
    fig = new_figure(6, 4.8)
    ax = fig.subplots()
    full = [r for r in rows if r["kind"] == "full"]
    for kind, (colour, marker) in KIND_STYLE.items():
        points = sorted((r["kept"], r["score"]) for r in rows if r["kind"] == kind)
        if points:
            x, y = zip(*points, strict=True)
            ax.plot(x, y, color=colour, marker=marker, label=f"{kind} tickets")
    if full:
        ax.axhline(full[0]["score"], color="black", linestyle="--", label="full model")
    for r in reruns:
        seeds = f"seeds {min(r['seeds'])}-{max(r['seeds'])}" if len(r["seeds"]) > 1 else f"seed {r['seeds'][0]}"
        if r["kind"] == "full":
            ax.axhspan(r["mean"] - r["std"], r["mean"] + r["std"], color="grey", alpha=0.2,
                       label=f"full model, {seeds}: mean ± std")
        else:
            ax.errorbar([r["kept"]], [r["mean"]], yerr=[r["std"]], color="darkgreen", marker="D", markerfacecolor="white",
                        capsize=4, linestyle="none", label=f"best {r['kind']} ticket, {seeds}: mean ± std")
    ax.set_xlabel("fraction of encoder weights kept")
    ax.set_ylabel(f"dev score ({metric})")
    ax.set_title(f"{task}: phase transition")
    ax.invert_xaxis()  # sparser to the right, as in the paper
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)  # below: never over a curve
    fig.tight_layout()
    return fig


def ticket_map_figure(ticket: Ticket, task: str) -> Figure:
    """Layer x head map of the kept heads, and the kept FFN fraction per layer beside it."""
    fig = new_figure(8, 3.2)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    heads = ticket.attn_heads.astype(float)
    image = left.imshow(heads, cmap="Greens", vmin=0, vmax=1, aspect="auto")
    left.set_xlabel("attention head")
    left.set_ylabel("layer")
    left.set_xticks(range(heads.shape[1]))
    left.set_yticks(range(heads.shape[0]))
    left.set_title(f"{task}: kept heads ({int(heads.sum())}/{heads.size})")
    fig.colorbar(image, ax=left, ticks=[0, 1], label="kept")
    ffn = ticket.ffn.mean(axis=1) if ticket.ffn.ndim == 2 else ticket.ffn.astype(float)
    right.barh(range(len(ffn)), ffn, color="tab:green")
    right.set_xlim(0, 1)
    right.set_ylim(len(ffn) - 0.5, -0.5)
    right.set_yticks(range(len(ffn)))
    right.set_ylabel("layer")
    right.set_xlabel("FFN kept")
    right.set_title("FFN")
    fig.tight_layout()
    return fig


def heatmap_figure(matrix: Sequence[Sequence[float]], labels: list[str], title: str, vmax: float | None = 1.0,
                   signed: bool = False) -> Figure:
    """A labelled task x task heatmap with the value in each cell; `signed` centres a diverging scale
    on 0 (for changes), `vmax=None` scales to the data (for counts)."""
    data = np.asarray(matrix, dtype=float)
    fig = new_figure(1.2 + 0.8 * len(labels), 1.0 + 0.7 * len(labels))
    ax = fig.subplots()
    if signed:
        limit = max(float(np.abs(data).max()), 0.01)
        image = ax.imshow(data, cmap="coolwarm", vmin=-limit, vmax=limit)
        vmax = None
    else:
        image = ax.imshow(data, cmap="viridis", vmin=0, vmax=vmax)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            value = data[i, j]
            text = f"{value:.2f}" if value < 10 else f"{value:.0f}"
            dark = not signed and value < 0.6 * (vmax or data.max() or 1)  # viridis is dark at its low end
            ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black", fontsize=8)
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def write_overlap_board(log_dir: Path, tickets: dict[str, Ticket], step: int = 0) -> None:
    """TensorBoard: Jaccard and shared-unit heatmaps (heads and FFN), per-task ticket maps, scalars."""
    from torch.utils.tensorboard import SummaryWriter

    from .masks import overlap

    result = overlap(tickets)
    names = list(tickets)
    writer = SummaryWriter(log_dir=str(log_dir))
    for part, label in (("attn_heads", "heads"), ("ffn", "FFN")):
        o = result[part]
        writer.add_figure(f"overlap/{label}_jaccard", heatmap_figure(o["jaccard"], names, f"Jaccard of kept {label}"), step)
        writer.add_figure(f"overlap/{label}_shared", heatmap_figure(o["shared"], names, f"shared {label} units", vmax=None), step)
        for i, a in enumerate(names):
            for j, b in enumerate(names[i + 1:], start=i + 1):
                writer.add_scalar(f"overlap/{label}_jaccard/{a}-{b}", o["jaccard"][i][j], step)
        counts = np.asarray(o["tasks_keeping"])
        writer.add_histogram(f"overlap/{label}_tasks_keeping_each_unit", counts.ravel(), step)
    for name, ticket in tickets.items():
        writer.add_figure(f"tickets/{name}", ticket_map_figure(ticket, name), step)
    writer.close()
