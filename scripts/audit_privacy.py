"""Privacy audit of a federation run: ε per site and mechanism, budgets, broken claims.

For every site of the run's federation file, this script opens the site's privacy ledger
(``state/<site>/privacy_ledger.sqlite``, read through :class:`PrivacyLedger`), composes the
recorded DP events over the rounds actually run (PLD; very large pure-ε events by basic
composition, see ``participant.privacy.accounting``) at the ledger's δ, per mechanism and
in total, and compares the result with the site's budget. It flags:

* ``dp_claimed_without_mechanism``: the federation file sets a finite ε budget (a DP
  promise) but the mechanism is ``none`` or ``partial`` (no ε at all) and no DP-SGD;
* ``non_private_rounds``: the ledger records rounds shared without DP although a budget is
  set;
* ``budget_exceeded``: composed ε above the budget;
* ``missing_ledger`` / ``unreadable_ledger``: a site that should have a ledger has none,
  or a corrupted one;
* ``delta_mismatch``: the ledger composes at another δ than the configured one;
* ``rounds_without_ledger_entry``: the coordinator stored an update of the site for a
  round its ledger never recorded (a DP mechanism is configured);
* ``mechanism_audit_failed``: the black-box SVT audit (``scripts/audit_mechanism.py``,
  run here with ``--audit-trials`` or read from ``--mechanism-audit JSON``) found an
  empirical ε above the claim.

Writes ``REPORT_DIR/privacy_audit.json`` and ``REPORT_DIR/privacy_audit.html`` with plots
(ε over rounds per site; validation AUC over rounds when the run has a ``results.json`` of
the demo or of ``cipherfed simulate``). Exit status 0 when nothing is flagged, 1 when a
claim does not hold, 2 when the run folder is unusable.

Usage: ``python scripts/audit_privacy.py --run runs/demo --out runs/demo/privacy_audit``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from cipherfed.config import ConfigError, FederationConfig, load_config
from participant.privacy import LedgerError, PrivacyLedger, compose_epsilon, event_from_json
from scripts._report import html_page, html_table

logger = logging.getLogger(__name__)

LEDGER_FILE = "privacy_ledger.sqlite"
MAX_CURVE_POINTS = 40


class RunError(Exception):
    """The folder is not a federation run (no federation.toml)."""


def find_root(run: Path) -> Path:
    """The federation root of a run or demo output folder: the folder holding
    ``federation.toml``, or ``kits/`` and ``state/`` (the file is read from the
    coordinator's kit)."""
    for cand in (run, run / "federation"):
        if (cand / "federation.toml").is_file() or (
            (cand / "kits" / "coordinator" / "federation.toml").is_file()
            and (cand / "state").is_dir()
        ):
            return cand
    raise RunError(
        f"{run}: no federation.toml (nor kits/coordinator/federation.toml with state/) "
        f"here or in {run / 'federation'}"
    )


def federation_file(root: Path) -> Path:
    own = root / "federation.toml"
    return own if own.is_file() else root / "kits" / "coordinator" / "federation.toml"


def _ledger_meta(path: Path) -> tuple[str, float, float]:
    """(site id, δ, budget) read-only, to reopen the ledger with its own δ."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        row = db.execute("SELECT delta, budget_epsilon FROM budget").fetchone()
        delta, budget = float(row[0]), float(row[1])
    except (sqlite3.DatabaseError, TypeError, ValueError) as exc:
        raise LedgerError(f"{path}: not a readable privacy ledger ({exc})") from exc
    finally:
        db.close()
    if not (0 < delta < 1 and 0 < budget < math.inf):
        raise LedgerError(f"{path}: corrupted budget row (delta={delta!r}, budget={budget!r})")
    return str(meta.get("site_id", "")), delta, budget


def _round_events(path: Path) -> dict[int, list[Any]]:
    """DP events per round (non-private markers dropped), read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT round, event_json FROM events WHERE non_private = 0 ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    out: dict[int, list[Any]] = {}
    for rnd, text in rows:
        out.setdefault(int(rnd), []).append(event_from_json(str(text)))
    return out


def epsilon_curve(path: Path, delta: float) -> list[tuple[int, float]]:
    """(round, ε after that round) for at most MAX_CURVE_POINTS rounds (last one kept)."""
    by_round = _round_events(path)
    rounds = sorted(by_round)
    if not rounds:
        return []
    step = max(1, math.ceil(len(rounds) / MAX_CURVE_POINTS))
    picks = sorted(set(rounds[step - 1 :: step]) | {rounds[-1]})
    curve = []
    for t in picks:
        events = [e for r in rounds if r <= t for e in by_round[r]]
        curve.append((t, compose_epsilon(events, delta)))
    return curve


def _submitted_rounds(root: Path, site: str) -> list[int] | None:
    db_path = root / "state" / "coordinator" / "coordinator.sqlite"
    if not db_path.is_file():
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT round FROM submissions WHERE site_id = ? ORDER BY round", (site,)
        ).fetchall()
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()
    return [int(r[0]) for r in rows]


def audit_site(root: Path, cfg: FederationConfig, site: str) -> dict[str, Any]:
    """One site's ε, budget and flags."""
    p = cfg.privacy
    dp_mechanisms = (["svt"] if p.mechanism == "svt" else []) + (["dpsgd"] if p.dp_sgd else [])
    claims_dp = math.isfinite(p.budget_epsilon)
    flags: list[dict[str, str]] = []
    out: dict[str, Any] = {
        "site": site,
        "configured_mechanism": p.mechanism,
        "dp_sgd": p.dp_sgd is not None,
        "budget_epsilon": p.budget_epsilon if claims_dp else None,
        "delta": p.delta,
        "flags": flags,
    }
    if claims_dp and not dp_mechanisms:
        flags.append(
            {
                "flag": "dp_claimed_without_mechanism",
                "detail": f"budget ε={p.budget_epsilon:g} is promised but mechanism "
                f"{p.mechanism!r} without DP-SGD gives no differential privacy (ε = ∞)",
            }
        )
    path = root / "state" / site / LEDGER_FILE
    out["ledger"] = str(path)
    if not path.is_file():
        if dp_mechanisms or claims_dp or p.mechanism != "none":
            flags.append({"flag": "missing_ledger", "detail": f"no ledger at {path}"})
        out["epsilon_total"] = None if dp_mechanisms else math.inf
        return out
    try:
        ledger_site, delta, budget = _ledger_meta(path)
        with PrivacyLedger(path, delta, budget, ledger_site) as ledger:
            report = ledger.report()
            rounds = ledger.rounds()
            non_private = ledger.non_private_rounds()
            by_mech = {m: ledger.epsilon(m) for m in ledger.mechanisms()}
            total = ledger.epsilon()
        curve = epsilon_curve(path, delta)
    except LedgerError as exc:
        flags.append({"flag": "unreadable_ledger", "detail": str(exc)})
        out["epsilon_total"] = None
        return out
    if ledger_site != site:
        flags.append(
            {"flag": "unreadable_ledger", "detail": f"ledger belongs to site {ledger_site!r}"}
        )
    if not math.isclose(delta, p.delta, rel_tol=1e-9):
        flags.append(
            {
                "flag": "delta_mismatch",
                "detail": f"ledger composes at δ={delta:g}, the configuration promises "
                f"δ={p.delta:g}",
            }
        )
    if not dp_mechanisms:
        total = math.inf  # whatever DP events exist, the shared updates carry no guarantee
    out.update(
        {
            "ledger_delta": delta,
            "ledger_budget_epsilon": budget,
            "rounds_recorded": len(rounds),
            "epsilon_total": total,
            "epsilon_by_mechanism": by_mech,
            "non_private_rounds": [list(x) for x in non_private],
            "epsilon_curve": curve,
            "ledger_report": report,
        }
    )
    if claims_dp and non_private:
        flags.append(
            {
                "flag": "non_private_rounds",
                "detail": f"{len(non_private)} round(s) shared without DP "
                f"(first: round {non_private[0][0]}, {non_private[0][1]})",
            }
        )
    limit = min(budget, p.budget_epsilon) if claims_dp else budget
    if math.isfinite(total) and total > limit * (1 + 1e-9):
        flags.append(
            {
                "flag": "budget_exceeded",
                "detail": f"ε={total:.6g} at δ={delta:g} over {len(rounds)} rounds exceeds the "
                f"budget ε={limit:.6g}",
            }
        )
    submitted = _submitted_rounds(root, site)
    if submitted is not None:
        out["rounds_submitted"] = len(submitted)
        missing = sorted(set(submitted) - set(rounds))
        if dp_mechanisms and missing:
            flags.append(
                {
                    "flag": "rounds_without_ledger_entry",
                    "detail": f"updates stored for rounds {missing[:10]} that the ledger never "
                    "recorded",
                }
            )
    return out


def mechanism_audit(
    cfg: FederationConfig, trials: int, given: Path | None, seed: int = 0
) -> dict[str, Any] | None:
    """The black-box SVT audit (from a JSON file, or run now), or None when not applicable."""
    if given is not None:
        try:
            loaded: dict[str, Any] = json.loads(given.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"--mechanism-audit {given}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise RunError(f"--mechanism-audit {given}: not an audit_mechanism.py JSON object")
        loaded["source"] = str(given)
        return loaded
    if cfg.privacy.mechanism != "svt" or trials <= 0:
        return None
    from scripts.audit_mechanism import run_audit

    try:
        res = run_audit("svt", trials, seed=seed, epsilon=cfg.privacy.epsilon)
    except ValueError as exc:
        raise RunError(f"--audit-trials {trials}: {exc}") from exc
    res["source"] = f"run now with {trials} trials per input"
    return res


def _auc_series(run: Path, root: Path) -> dict[str, list[float | None]]:
    """Validation AUC per round from the demo's or the simulation's results.json."""
    for cand in (run / "results.json", root / "results.json", root.parent / "results.json"):
        if not cand.is_file():
            continue
        try:
            doc = json.loads(cand.read_text())
        except json.JSONDecodeError:
            continue
        series: dict[str, list[float | None]] = {}
        for key in ("encrypted", "plaintext", "centralized"):
            if isinstance(doc.get(key), dict) and "auc_per_round" in doc[key]:
                series[key] = list(doc[key]["auc_per_round"])
        if isinstance(doc.get("rounds"), list):
            series["federated"] = [r["federated"]["auc"] for r in doc["rounds"]]
        if series:
            return series
    return {}


def _plot_epsilon(sites: list[dict[str, Any]], path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for s in sites:
        curve = s.get("epsilon_curve") or []
        if curve:
            ax.plot([c[0] for c in curve], [c[1] for c in curve], marker=".", label=s["site"])
            drawn = True
        if s.get("budget_epsilon"):
            ax.axhline(s["budget_epsilon"], color="tab:red", linestyle="--", linewidth=0.8)
    if drawn:
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel("ε (composed, at the ledger's δ)")
        ax.set_title("Privacy loss over rounds per site (dashed: budget)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _plot_auc(series: dict[str, list[float | None]], path: Path) -> bool:
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in series.items():
        xs = [i + 1 for i, y in enumerate(ys) if y is not None]
        ax.plot(xs, [y for y in ys if y is not None], marker=".", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("validation AUC")
    ax.set_title("Validation AUC over rounds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _jsonable(obj: Any) -> Any:
    """Non-finite floats as strings ("inf"), so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def _fmt_eps(x: float | None) -> str:
    if x is None:
        return "unknown"
    return "∞ (no DP)" if math.isinf(x) else f"{x:.6g}"


def audit_run(
    run: Path,
    out: Path,
    *,
    audit_trials: int = 400,
    mechanism_audit_json: Path | None = None,
) -> dict[str, Any]:
    """Audit the run at ``run``; write the JSON and HTML reports into ``out``."""
    root = find_root(run)
    try:
        cfg = load_config(federation_file(root))
    except ConfigError as exc:
        raise RunError(str(exc)) from exc
    sites = [audit_site(root, cfg, s) for s in cfg.site_ids]
    mech = mechanism_audit(cfg, audit_trials, mechanism_audit_json)
    flags = [dict(f, site=s["site"]) for s in sites for f in s["flags"]]
    if mech is not None and mech.get("passed") is False:
        flags.append(
            {
                "site": "*",
                "flag": "mechanism_audit_failed",
                "detail": f"empirical ε ≥ {mech.get('empirical_epsilon_lower_bound')} exceeds "
                f"the claimed ε={mech.get('claimed_epsilon')}",
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    images = []
    if _plot_epsilon(sites, out / "epsilon_over_rounds.png"):
        images.append("epsilon_over_rounds.png")
    auc = _auc_series(run, root)
    if _plot_auc(auc, out / "auc_over_rounds.png"):
        images.append("auc_over_rounds.png")
    result: dict[str, Any] = {
        "run": str(root),
        "federation_id": cfg.federation.id,
        "rounds_configured": cfg.federation.rounds,
        "privacy_config": {
            "mechanism": cfg.privacy.mechanism,
            "sharing_fraction": cfg.privacy.sharing_fraction,
            "epsilon_per_round": cfg.privacy.epsilon if cfg.privacy.mechanism == "svt" else None,
            "budget_epsilon": cfg.privacy.budget_epsilon
            if math.isfinite(cfg.privacy.budget_epsilon)
            else None,
            "delta": cfg.privacy.delta,
            "dp_sgd": cfg.privacy.dp_sgd is not None,
        },
        "sites": sites,
        "mechanism_audit": mech,
        "validation_auc": auc,
        "flags": flags,
        "ok": not flags,
        "plots": images,
    }
    (out / "privacy_audit.json").write_text(
        json.dumps(_jsonable(result), indent=2, sort_keys=True, default=str) + "\n"
    )
    rows = [
        [
            s["site"],
            s["configured_mechanism"] + (" + DP-SGD" if s["dp_sgd"] else ""),
            s.get("rounds_recorded", 0),
            _fmt_eps(s.get("epsilon_total")),
            "none" if s["budget_epsilon"] is None else f"{s['budget_epsilon']:g}",
            ", ".join(f["flag"] for f in s["flags"]) or "ok",
        ]
        for s in sites
    ]
    flag_rows = [[f["site"], f["flag"], f["detail"]] for f in flags]
    verdict = (
        "<p class='ok'>Every privacy claim of the configuration holds on the ledgers.</p>"
        if not flags
        else f"<p class='bad'>{len(flags)} claim(s) do not hold.</p>"
    )
    mech_html = (
        "<p>not applicable (no SVT)</p>"
        if mech is None
        else html_table(
            ["mechanism", "claimed ε", "empirical ε lower bound", "passed", "source"],
            [
                [
                    mech.get("mechanism"),
                    mech.get("claimed_epsilon"),
                    mech.get("empirical_epsilon_lower_bound"),
                    mech.get("passed"),
                    mech.get("source"),
                ]
            ],
        )
    )
    page = html_page(
        f"Privacy audit: {cfg.federation.id}",
        [
            ("Verdict", verdict),
            (
                f"Sites (δ = {cfg.privacy.delta:g}, composition over the rounds run)",
                html_table(["site", "mechanism", "rounds", "ε", "budget", "flags"], rows),
            ),
            ("Flags", html_table(["site", "flag", "detail"], flag_rows) if flags else "none"),
            ("Mechanism audit (black-box SVT)", mech_html),
        ],
        images,
    )
    (out / "privacy_audit.html").write_text(page)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="federation run folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--audit-trials", type=int, default=400, help="0: skip the SVT audit")
    parser.add_argument("--mechanism-audit", type=Path, default=None, help="audit JSON to use")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        result = audit_run(
            args.run,
            args.out,
            audit_trials=args.audit_trials,
            mechanism_audit_json=args.mechanism_audit,
        )
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {
        "ok": result["ok"],
        "flags": result["flags"],
        "epsilon": {s["site"]: s.get("epsilon_total") for s in result["sites"]},
        "report": str(args.out / "privacy_audit.html"),
    }
    print(json.dumps(_jsonable(summary), indent=1, default=str, ensure_ascii=False))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
