"""Figures of a study (matplotlib, off-screen), shared by `sweep pareto --plot`,
`sweep report` and notebooks/pareto_analysis.ipynb.

Every function takes a trial table (`sweep.results.pareto.trial_table`, or
`sweep.results.analysis.load_runs(...).trials` built from MLflow) and returns a Figure.
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed: safe in workers, CI and headless notebooks
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweep.results.pareto import feasible_mask
from sweep.search.trial_plan import SchedulePlan

FAMILY_COLOURS = {"polynomial": "tab:blue", "constant": "tab:orange", "step": "tab:green"}


def _families(table: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame]]:
    for family, colour in FAMILY_COLOURS.items():
        rows = table[table["schedule"] == family]
        if not rows.empty:
            yield family, colour, rows


AXIS_LABELS = {
    "val_accuracy": "validation accuracy",
    "int8_val_accuracy": "int8 validation accuracy",
    "sparsity": "sparsity",
    "compressed_bytes": "compressed size (gzip of Keras H5, bytes, log scale)",
    "int8_bytes": "int8 TFLite size (bytes, log scale)",
    "int8_gzip_bytes": "int8 TFLite size (gzip, bytes, log scale)",
    "latency_ms": "float32 latency (ms, one example)",
    "int8_latency_ms": "int8 latency (ms, one example)",
}


def pareto_figure(
    table: pd.DataFrame,
    front: pd.DataFrame,
    baseline: Mapping[str, float],
    title: str,
    objectives: Sequence[str] = ("accuracy", "compressed_size"),
) -> Figure:
    """The objectives two by two (one panel for two objectives, three for three): every
    trial by schedule family (hollow if infeasible), the Pareto-optimal ones highlighted
    (and, with two objectives, joined), the dense baseline as a star."""
    from sweep.config import OBJECTIVES

    if len(objectives) < 2:  # one objective: show it against accuracy and size as usual
        objectives = ("accuracy", "compressed_size")
    pairs = [(a, b) for i, a in enumerate(objectives) for b in objectives[i + 1:]]
    figure, panels = plt.subplots(1, len(pairs), figsize=(8 if len(pairs) == 1 else 5.5 * len(pairs), 5),
                                  layout="constrained", squeeze=False)
    feasible = feasible_mask(table)
    for axes, (first, second) in zip(panels[0], pairs, strict=True):
        # the minimised objective (a size or latency) across, the other up
        x_objective, y_objective = (first, second) if OBJECTIVES[first][1] == "minimize" else (second, first)
        x, y = OBJECTIVES[x_objective][0], OBJECTIVES[y_objective][0]
        for family, colour, rows in _families(table):
            for ok in (True, False):
                group = rows[feasible[rows.index] == ok]
                if not group.empty:
                    axes.scatter(group[x], group[y], s=28, alpha=0.6, color=colour if ok else "none",
                                 edgecolors=colour, label=f"{family}{'' if ok else ' (infeasible)'}")
        ordered = front.sort_values(x)
        if not ordered.empty:
            staircase = "steps-post" if OBJECTIVES[x_objective][1] == "minimize" else "steps-pre"
            axes.plot(ordered[x], ordered[y], "-o" if len(pairs) == 1 else "o", color="black",
                      markerfacecolor="gold", markersize=8, linewidth=1.2, drawstyle=staircase,
                      label="Pareto-optimal", zorder=3)
            for row in ordered.itertuples():
                axes.annotate(str(row.trial), (getattr(row, x), getattr(row, y)),
                              textcoords="offset points", xytext=(4, 4), fontsize=7)
        if x in baseline and y in baseline:
            axes.scatter([baseline[x]], [baseline[y]], marker="*", s=220, color="crimson",
                         label="dense baseline", zorder=4)
        if x.endswith("bytes"):
            axes.set_xscale("log")
        axes.set_xlabel(AXIS_LABELS[x])
        axes.set_ylabel(AXIS_LABELS[y])
        axes.grid(True, which="both", alpha=0.3)
    panels[0][0].legend(fontsize=8, loc="lower right")
    figure.suptitle(title)
    return figure


def sparsity_figure(table: pd.DataFrame) -> Figure:
    """Achieved sparsity (measured on the stripped model) against the target."""
    figure, axes = plt.subplots(figsize=(5.5, 5), layout="constrained")
    for family, colour, rows in _families(table):
        axes.scatter(rows["final_sparsity"], rows["sparsity"], color=colour, alpha=0.7, label=family)
    limits = [0, 1]
    axes.plot(limits, limits, "--", color="grey", linewidth=1, label="achieved = target")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("target final_sparsity")
    axes.set_ylabel("achieved sparsity (stripped model)")
    axes.set_title("achieved vs target sparsity")
    axes.legend(fontsize=8)
    return figure


def weight_decay_figure(table: pd.DataFrame, bins: int = 3) -> Figure:
    """Accuracy against weight decay by schedule family, one panel per sparsity band, so
    trials are compared at a similar sparsity."""
    edges = np.unique(np.quantile(table["sparsity"], np.linspace(0, 1, bins + 1)))
    bands = max(len(edges) - 1, 1)
    figure, axes = plt.subplots(1, bands, figsize=(4.2 * bands, 4), sharey=True, layout="constrained", squeeze=False)
    for index in range(bands):
        low, high = (edges[index], edges[index + 1]) if len(edges) > 1 else (edges[0], edges[0])
        band = table[(table["sparsity"] >= low) & ((table["sparsity"] <= high) if index == bands - 1 else (table["sparsity"] < high))]
        ax = axes[0][index]
        for family, colour, rows in _families(band):
            ax.scatter(rows["weight_decay"], rows["val_accuracy"], color=colour, alpha=0.7, label=family)
        ax.set_xscale("log")
        ax.set_title(f"sparsity {low:.2f}-{high:.2f}", fontsize=9)
        ax.set_xlabel("weight decay (log)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy")
    axes[0][0].legend(fontsize=8)
    figure.suptitle("weight decay and schedule family vs accuracy, at similar sparsity")
    return figure


def schedules_figure(plans: Mapping[int, SchedulePlan]) -> Figure:
    """The sparsity of the pruning masks over training, for each given trial's plan (the
    plan tfmot's schedules are built from, so this is what training did)."""
    figure, axes = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for number, plan in sorted(plans.items()):
        steps = np.arange(0, plan.total_steps + 1)
        axes.step(steps, [plan.mask_sparsity_after(int(s)) for s in steps], where="post",
                  color=FAMILY_COLOURS.get(plan.family), alpha=0.8, label=f"trial {number} ({plan.family})")
    axes.set_xlabel("training step")
    axes.set_ylabel("mask sparsity")
    axes.set_ylim(0, 1)
    axes.set_title("sparsity schedules of the Pareto-optimal trials")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    return figure


def layer_sparsity_figure(row: pd.Series) -> Figure:
    """Sparsity of each pruned layer of one trial (`sparsity/<layer>` metrics)."""
    layers = {k.split("/", 1)[1]: float(v) for k, v in row.items() if isinstance(k, str) and k.startswith("sparsity/")
              and v is not None and not pd.isna(v)}
    figure, axes = plt.subplots(figsize=(6, 3.5), layout="constrained")
    axes.bar(list(layers), list(layers.values()), color="tab:purple")
    axes.axhline(float(row["sparsity"]), color="black", linestyle="--", linewidth=1, label="whole model")
    axes.set_ylim(0, 1)
    axes.set_ylabel("sparsity")
    axes.set_title(f"per-layer sparsity of trial {int(row['trial'])}")
    axes.legend(fontsize=8)
    return figure


def hypervolume_figure(history: Sequence[tuple[int, float]]) -> Figure:
    """Hypervolume of the front after each completed trial: how the search converged."""
    figure, axes = plt.subplots(figsize=(6, 3.5), layout="constrained")
    if history:
        numbers, volumes = zip(*history)
        axes.plot(numbers, volumes, "-o", markersize=3)
    axes.set_xlabel("trial")
    axes.set_ylabel("hypervolume")
    axes.set_title("hypervolume after each trial")
    axes.grid(True, alpha=0.3)
    return figure


def save_figure(figure: Figure, path: Path, table: pd.DataFrame | None = None, title: str = "") -> None:
    """PNG, or HTML (inline SVG and `table`) by the file's extension."""
    if path.suffix.lower() == ".png":
        figure.savefig(path, dpi=120)
    elif path.suffix.lower() == ".html":
        path.write_text(html_page(title, [svg(figure), table_html(table) if table is not None else ""]))
    else:
        raise ValueError(f"unsupported plot format {path.suffix!r}; use .png or .html")
    plt.close(figure)


def svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    return buffer.getvalue()


def table_html(table: pd.DataFrame) -> str:
    return table.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, na_rep="")


def html_page(title: str, sections: Sequence[str]) -> str:
    """A self-contained page (no external files) from HTML fragments, in order."""
    body = "".join(f"<section>{part}</section>" for part in sections if part)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
        "margin:1em 0}td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}"
        "pre{background:#f6f6f6;padding:1em}svg{max-width:100%;height:auto}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
