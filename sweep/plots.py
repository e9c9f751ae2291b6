"""Figures of a study (matplotlib, rendered off-screen): the accuracy vs size front.

`save_figure` writes PNG, or a self-contained HTML page (inline SVG plus a table) when the
file name ends in .html.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed, safe in workers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from optuna.trial import FrozenTrial  # noqa: E402

from sweep.pareto import is_feasible, metric  # noqa: E402

FAMILY_COLOURS = {"polynomial": "tab:blue", "constant": "tab:orange", "step": "tab:green"}
SUPPORTED = (".png", ".html")


def pareto_figure(
    trials: Sequence[FrozenTrial],
    front: Sequence[FrozenTrial],
    baseline: Mapping[str, float],
    title: str,
) -> Figure:
    """Every completed trial by schedule family, the Pareto front highlighted and joined,
    the dense baseline as a reference point; size on a log axis."""
    figure, axes = plt.subplots(figsize=(8, 5), layout="constrained")
    for family, colour in FAMILY_COLOURS.items():
        members = [t for t in trials if t.params.get("schedule") == family]
        for feasible in (True, False):
            group = [t for t in members if is_feasible(t) == feasible]
            if group:
                axes.scatter(
                    [metric(t, "compressed_bytes") for t in group],
                    [metric(t, "val_accuracy") for t in group],
                    s=28,
                    alpha=0.6,
                    color=colour if feasible else "none",
                    edgecolors=colour,
                    label=f"{family}{'' if feasible else ' (infeasible)'}",
                )
    ordered = sorted(front, key=lambda t: metric(t, "compressed_bytes"))
    if ordered:
        axes.plot(
            [metric(t, "compressed_bytes") for t in ordered],
            [metric(t, "val_accuracy") for t in ordered],
            "-o", color="black", markerfacecolor="gold", markersize=8, linewidth=1.2,
            drawstyle="steps-post", label="Pareto-optimal", zorder=3,
        )
        for trial in ordered:
            axes.annotate(
                str(trial.number), (metric(trial, "compressed_bytes"), metric(trial, "val_accuracy")),
                textcoords="offset points", xytext=(4, 4), fontsize=7,
            )
    axes.scatter(
        [baseline["compressed_bytes"]], [baseline["val_accuracy"]], marker="*", s=220,
        color="crimson", label="dense baseline", zorder=4,
    )
    axes.set_xscale("log")
    axes.set_xlabel("compressed size (gzip of Keras H5, bytes, log scale)")
    axes.set_ylabel("validation accuracy")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return figure


def save_figure(figure: Figure, path: Path, table: pd.DataFrame | None = None, title: str = "") -> None:
    """PNG, or HTML (inline SVG and `table`) by the file's extension."""
    if path.suffix.lower() == ".png":
        figure.savefig(path, dpi=120)
    elif path.suffix.lower() == ".html":
        svg = io.StringIO()
        figure.savefig(svg, format="svg")
        rows = table.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0) if table is not None else ""
        path.write_text(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}</style>"
            f"</head><body><h1>{html.escape(title)}</h1>{svg.getvalue()}{rows}</body></html>"
        )
    else:
        raise ValueError(f"unsupported plot format {path.suffix!r}; use .png or .html")
    plt.close(figure)
