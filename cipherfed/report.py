"""The demo's report: PNG plots (matplotlib, Agg) and one HTML page that shows them."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

logger = logging.getLogger(__name__)


def _auc_plot(results: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label, style in (
        ("encrypted", "encrypted federation (CKKS)", "-o"),
        ("plaintext", "plaintext FedAvg reference", "--"),
        ("centralized", "centralized baseline", ":"),
    ):
        ys = results[key]["auc_per_round"]
        ax.plot(range(1, len(ys) + 1), ys, style, label=label, markersize=3)
    ax.set_xlabel("round")
    ax.set_ylabel("validation AUC")
    ax.set_title("ACTG 175: validation AUC per round")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _time_plot(results: dict[str, Any], path: Path) -> None:
    rounds = results["per_round"]
    keys = ("training_s", "encryption_s", "upload_s", "aggregation_s", "decryption_s")
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = [0.0] * len(rounds)
    xs = [r["round"] for r in rounds]
    for key in keys:
        ys = [r[key] for r in rounds]
        ax.bar(xs, ys, bottom=bottom, label=key.removesuffix("_s"))
        bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
    ax.set_xlabel("round")
    ax.set_ylabel("seconds (per-site phases: mean over sites)")
    ax.set_title("Time split per round")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bytes_plot(results: dict[str, Any], path: Path) -> None:
    w = results["wire_bytes_per_round"]
    labels = ["plaintext float32", "CKKS upload", "model download (float64)"]
    values = [
        w["plaintext_float32_per_participant"],
        w["upload_per_participant"],
        w["model_download_per_participant"],
    ]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, [v / 1024 for v in values], color=["#999", "#c44", "#48c"])
    ax.set_ylabel("KiB per participant per round")
    ax.set_title(f"Wire bytes ({results['n_params']} parameters)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.4g}" if v != 0 and not 1e-3 <= abs(v) < 1e4 else f"{v:.4f}"
    if isinstance(v, dict):
        return html.escape(", ".join(f"{k}={_fmt(x)}" for k, x in v.items()))
    return html.escape(str(v))


def _privacy_cell(results: dict[str, Any]) -> str:
    p = results.get("privacy") or {"mechanism": "none", "dp_sgd": False}
    name = p["mechanism"] + (" + DP-SGD" if p.get("dp_sgd") else "")
    eps = p.get("epsilon_max")
    return name if eps is None else f"{name}, max ε per site {eps:,.6g}"


def _privacy_html(results: dict[str, Any]) -> str:
    """The privacy section: mechanism, settings and each site's ε from its own ledger."""
    p = results.get("privacy") or {"mechanism": "none", "dp_sgd": False}
    if p["mechanism"] == "none" and not p.get("dp_sgd"):
        return (
            "<h2>Privacy</h2><p>No privacy step: every site shares its whole (encrypted) "
            "update, so the encrypted run matches the plaintext reference.</p>"
        )
    settings = "\n".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in p["settings"].items()
    )
    sites = "\n".join(
        f"<tr><td>{html.escape(site)}</td><td>{_fmt(e['epsilon'])}</td>"
        f"<td>{_fmt(e['rounds_recorded'])}</td>"
        f"<td>{html.escape(', '.join(map(str, e['rounds_refused'])) or '-')}</td></tr>"
        for site, e in p["epsilon_per_site"].items()
    )
    eps = p["epsilon_max"]
    refused = "yes" if p["any_refused_for_budget"] else "no"
    dp_sgd = " with patient-level DP-SGD" if p["dp_sgd"] else ""
    return f"""<h2>Privacy</h2>
<p>Mechanism <b>{html.escape(p["mechanism"])}</b>{dp_sgd}.
Largest ε spent by a site: <b>{_fmt(eps)}</b> at δ = {_fmt(p["delta"])};
any round refused for budget: {refused}.</p>
<p>{html.escape(p["guarantee"])}.</p>
<p>{html.escape(p["reference_note"])}.</p>
<table><tr><th>setting</th><th>value</th></tr>{settings}</table>
<h3>ε per site (read from each site's privacy ledger)</h3>
<table><tr><th>site</th><th>ε</th><th>rounds recorded</th><th>rounds refused</th></tr>
{sites}</table>
"""


def write_report(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _auc_plot(results, out / "auc.png")
    _time_plot(results, out / "time_split.png")
    _bytes_plot(results, out / "wire_bytes.png")
    split = results["time_split_per_round_s"]
    wire = results["wire_bytes_per_round"]
    rows = [
        ("encrypted AUC", results["encrypted"]["auc"]),
        ("plaintext FedAvg AUC", results["plaintext"]["auc"]),
        ("centralized AUC", results["centralized"]["auc"]),
        ("max |W_enc - W_plain|", results["encrypted"]["max_abs_diff_vs_plaintext"]),
        ("participants", results["participants"]),
        ("rounds", results["rounds"]),
        ("privacy", _privacy_cell(results)),
        ("wall seconds", results["wall_seconds"]),
        *[(f"mean {k}", v) for k, v in split.items()],
        ("upload bytes / participant / round", wire["upload_per_participant"]),
        ("plaintext float32 bytes", wire["plaintext_float32_per_participant"]),
    ]
    table = "\n".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>CipherFed demo</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}
td{{padding:2px 12px;border-bottom:1px solid #ddd}}</style></head>
<body><h1>CipherFed demo: encrypted federation on ACTG 175</h1>
<p>{html.escape(results.get("note", ""))}</p>
<table>{table}</table>
{_privacy_html(results)}
<h2>Validation AUC</h2><img src="auc.png" alt="AUC per round">
<h2>Time split</h2><img src="time_split.png" alt="time split per round">
<h2>Wire bytes</h2><img src="wire_bytes.png" alt="wire bytes">
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    logger.info("report written to %s", path)
    return path
