"""Shared helpers of the audit and reproduction scripts: mean ± std, PNG plots, HTML.

Plots use matplotlib's Agg backend (no display needed). Every function writes one file and
returns its path; nothing here knows about federations, only about numbers and labels.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "bar_plot",
    "curve_plot",
    "fmt_pm",
    "html_page",
    "html_table",
    "mean_std",
]


def mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    """Mean and sample std (ddof=1; 0 for one value) of the finite values, and their count.

    NaN mean when no value is finite.
    """
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if xs.size == 0:
        return float("nan"), float("nan"), 0
    std = float(xs.std(ddof=1)) if xs.size > 1 else 0.0
    return float(xs.mean()), std, int(xs.size)


def fmt_pm(mean: float, std: float, digits: int = 3) -> str:
    """``0.712 ± 0.004`` (``n/a`` for NaN)."""
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def curve_plot(
    path: Path,
    curves: Mapping[str, Sequence[Sequence[float]]],
    *,
    title: str,
    ylabel: str,
    xlabel: str = "round",
) -> Path:
    """One line per label: the mean over runs per x (1-based), with a ±1 std band.

    ``curves[label]`` holds one sequence per run; runs may differ in length (shortest wins).
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, runs in curves.items():
        if not runs:
            continue
        n = min(len(r) for r in runs)
        if n == 0:
            continue
        arr = np.array([[np.nan if v is None else v for v in r[:n]] for r in runs], dtype=float)
        mean = np.nanmean(arr, axis=0)
        std = np.nanstd(arr, axis=0, ddof=1) if arr.shape[0] > 1 else np.zeros(n)
        xs = np.arange(1, n + 1)
        ax.plot(xs, mean, label=f"{label} (n={arr.shape[0]})")
        ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("wrote %s", path)
    return path


def bar_plot(
    path: Path,
    labels: Sequence[str],
    means: Sequence[float],
    stds: Sequence[float],
    *,
    title: str,
    ylabel: str,
    reference: tuple[str, float] | None = None,
) -> Path:
    """Bars with ±1 std error bars, optionally a dashed horizontal reference line."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) + 2), 4))
    xs = np.arange(len(labels))
    ax.bar(xs, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    if reference is not None:
        ax.axhline(reference[1], color="tab:red", linestyle="--", label=reference[0])
        ax.legend(fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("wrote %s", path)
    return path


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An escaped HTML table."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, sections: Sequence[tuple[str, str]], images: Sequence[str]) -> str:
    """A self-contained page: ``sections`` are (heading, trusted HTML body), then images."""
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        ".bad{color:#b00;font-weight:bold}.ok{color:#070}"
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    for img in images:
        parts.append(f"<p><img src='{html.escape(img)}' alt='{html.escape(img)}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
