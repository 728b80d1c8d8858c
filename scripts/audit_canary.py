"""Canary membership-inference audit in one training run (Steinke, Nasr, Jagielski 2023).

1. ``m`` synthetic canary patients (features uniform in the encoded range [0, 1], a random
   label) are each included with probability ½ into the training data of one site (the
   ACTG 175 training split by default, i.e. the pooled data; ``--site-rows`` takes a
   random subset to mimic one site).
2. One training run: ``--rounds`` local rounds of the real :class:`LocalTrainer`, with the
   configured mechanism (``none`` or patient-level ``dpsgd`` via the privacy package). The
   DP-SGD events are recorded in a real :class:`PrivacyLedger` (SQLite under ``--out``).
3. Score every canary by its negative loss under the trained model, guess "included" for
   the ``k`` best-scored and "excluded" for the ``k`` worst-scored, abstain on the rest.
4. With ``r = 2k`` guesses of which ``v`` are right, the one-run ε lower bound at
   confidence ``1 − β`` is the largest ε for which ε-DP (or (ε, δ)-DP) makes ``≥ v``
   correct guesses less likely than β. Under (ε, δ)-DP (their Theorem 3.3 / Algorithm 2):

       P[W ≥ v] ≤ P[Bin(r, q_ε) ≥ v] + 2mδ · max_{1≤i≤v} P[v > Bin(r, q_ε) ≥ v − i] / i,

   with ``q_ε = e^ε / (1 + e^ε)``. Several ``k`` are tried; β is split over them
   (Bonferroni), so the reported bound keeps its confidence.
5. The bound is compared with the ledger's ε: a lower bound above the accounted ε is a
   privacy bug (``passed: false``, exit status 1).

Usage: ``python scripts/audit_canary.py --mechanism dpsgd --epsilon 3 --out DIR``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from scipy import stats

logger = logging.getLogger(__name__)

MECHANISMS = ("none", "dpsgd")


# --------------------------------------------------------------------------- the bound


def p_value(m: int, r: int, v: int, eps: float, delta: float = 0.0) -> float:
    """Upper bound on P[≥ v of r guesses correct] for an (ε, δ)-DP training run."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if not (eps >= 0 and 0 <= delta <= 1):
        raise ValueError(f"need eps >= 0 and delta in [0, 1], got {eps}, {delta}")
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0.0 or v == 0:
        return min(1.0, tail)
    pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # v-1, v-2, ..., 0
    ratio = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(1.0, tail + 2.0 * m * delta * ratio)


def epsilon_lower_bound(m: int, r: int, v: int, beta: float, delta: float = 0.0) -> float:
    """Largest ε (bisection, 1e-6) with ``p_value(ε) < β``; 0 when even ε = 0 fits."""
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    if r == 0 or p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < beta:
        lo, hi = hi, 2.0 * hi
        if hi > 1e4:
            return math.inf
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        if p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def guesses(scores: np.ndarray, included: np.ndarray, k: int) -> tuple[int, int]:
    """(r, v): guess the ``k`` highest scores in, the ``k`` lowest out; count the right ones."""
    if 2 * k > scores.size:
        raise ValueError(f"k={k}: 2k guesses need at least {2 * k} canaries, have {scores.size}")
    order = np.argsort(-scores, kind="stable")
    top, bottom = order[:k], order[scores.size - k :]
    v = int(included[top].sum()) + int((~included[bottom]).sum())
    return 2 * k, v


def best_bound(
    scores: np.ndarray, included: np.ndarray, ks: Sequence[int], beta: float, delta: float
) -> dict[str, Any]:
    """The largest bound over ``ks`` at level ``β/len(ks)`` each (Bonferroni)."""
    m = int(scores.size)
    level = beta / len(ks)
    best: dict[str, Any] = {"epsilon_lower_bound": 0.0, "k": None, "r": 0, "v": 0}
    per_k = []
    for k in ks:
        r, v = guesses(scores, included, k)
        eps = epsilon_lower_bound(m, r, v, level, delta)
        per_k.append({"k": k, "r": r, "v": v, "epsilon_lower_bound": eps})
        if eps > best["epsilon_lower_bound"]:
            best = {"epsilon_lower_bound": eps, "k": k, "r": r, "v": v}
    best["per_k"] = per_k
    best["confidence"] = 1.0 - beta
    best["bonferroni_level"] = level
    return best


# --------------------------------------------------------------------------- the training run


def make_canaries(
    m: int, d: int, rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic patients: features uniform on [0, scale]^d (float32), labels fair coins.

    ``scale = 1`` stays in the encoded range of real patients; ``scale > 1`` makes
    out-of-distribution canaries, which a model memorizes more easily (a stronger audit).
    """
    x = rng.uniform(0.0, scale, size=(m, d)).astype(np.float32)
    y = rng.integers(0, 2, size=m).astype(np.float32)
    return x, y


def run_audit(
    *,
    mechanism: str = "none",
    m: int = 200,
    rounds: int = 20,
    local_epochs: float = 1.0,
    epsilon: float = 3.0,
    delta: float = 1e-5,
    site_rows: int | None = None,
    canary_scale: float = 1.0,
    beta: float = 0.05,
    seed: int = 0,
    out: Path,
) -> dict[str, Any]:
    """Insert canaries, train once, score, bound ε and compare with the ledger."""
    import torch

    from cipherfed.simulation import DEFAULT_TRAIN
    from participant.data import load_actg175
    from participant.model import build_mlp, flatten_params, load_flat
    from participant.partition import holdout_split
    from participant.privacy import DPSGDConfig, PrivacyLedger
    from participant.schema import SiteDataset
    from participant.training import LocalTrainer

    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism: {mechanism!r} is not one of {MECHANISMS}")
    if m < 4:
        raise ValueError(f"m: {m} canaries are too few (need >= 4)")
    if not (math.isfinite(canary_scale) and canary_scale > 0):
        raise ValueError(f"canary_scale: {canary_scale} must be > 0")
    if rounds < 1:
        raise ValueError(f"rounds: {rounds} must be >= 1")
    if not 0 < beta < 1:
        raise ValueError(f"beta: {beta} must be in (0, 1)")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    data = load_actg175()
    train_idx, _ = holdout_split(data.y, data.extra.get("strat"), 0.15, 0)
    if site_rows is not None:
        if not 10 <= site_rows <= train_idx.size:
            raise ValueError(f"site_rows: {site_rows} must be in [10, {train_idx.size}]")
        train_idx = np.sort(rng.choice(train_idx, size=site_rows, replace=False))
    cx, cy = make_canaries(m, data.X.shape[1], rng, canary_scale)
    included = rng.random(m) < 0.5
    x = np.concatenate([data.X[train_idx], cx[included]])
    y = np.concatenate([data.y[train_idx], cy[included]])
    site = SiteDataset(X=x, y=y, feature_names=data.feature_names, source="canary-site")
    dp = None
    if mechanism == "dpsgd":
        dp = DPSGDConfig(target_epsilon=epsilon, target_delta=delta, planned_rounds=rounds)
    cfg = replace(DEFAULT_TRAIN, local_epochs=local_epochs, dp_sgd=dp)

    def factory() -> torch.nn.Module:
        return build_mlp(data.X.shape[1])

    out.mkdir(parents=True, exist_ok=True)
    ledger_path = out / "canary_ledger.sqlite"
    if ledger_path.exists():
        ledger_path.unlink()
    ledger = PrivacyLedger(ledger_path, delta=delta, budget_epsilon=1e12, site_id="canary-site")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        flat = flatten_params(factory())
    trainer = LocalTrainer(factory, site, cfg, seed=seed)
    for t in range(1, rounds + 1):
        res = trainer.run_round(flat)
        flat = flat + res.delta
        if res.dp_events:
            ledger.record(t, "dpsgd", res.dp_events)
    # score: negative per-canary loss under the final model (higher: more likely a member)
    model = factory()
    load_flat(model, flat)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(cx)).reshape(-1)
        losses = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.from_numpy(cy), reduction="none"
        )
    scores = -losses.numpy().astype(np.float64)
    ks = sorted({max(1, round(m * f)) for f in (0.02, 0.05, 0.1, 0.25)})
    bound = best_bound(scores, included, ks, beta, delta)
    ledger_eps = ledger.epsilon() if mechanism != "none" else math.inf
    passed = bool(bound["epsilon_lower_bound"] <= ledger_eps)
    ledger.close()
    in_loss = float(losses.numpy()[included].mean()) if included.any() else float("nan")
    out_loss = float(losses.numpy()[~included].mean()) if (~included).any() else float("nan")
    result: dict[str, Any] = {
        "method": "Steinke, Nasr, Jagielski 2023: one-run audit with m canaries",
        "mechanism": mechanism,
        "m": m,
        "included": int(included.sum()),
        "rounds": rounds,
        "local_epochs": local_epochs,
        "canary_scale": canary_scale,
        "training_rows": int(train_idx.size),
        "local_iters_per_round": trainer.n_iters,
        "delta": delta,
        "seed": seed,
        "ledger_path": str(ledger_path),
        "ledger_epsilon": ledger_eps if math.isfinite(ledger_eps) else None,
        "ledger_note": None
        if mechanism != "none"
        else "no DP mechanism: the accounted ε is infinite, any bound is consistent",
        "target_epsilon": epsilon if mechanism == "dpsgd" else None,
        "mean_loss_included_canaries": in_loss,
        "mean_loss_excluded_canaries": out_loss,
        "audit": bound,
        "epsilon_lower_bound": bound["epsilon_lower_bound"],
        "passed": passed,
        "wall_seconds": time.perf_counter() - started,
    }
    logger.info(
        "canary audit (%s): eps_LB=%.3f vs ledger eps=%s",
        mechanism,
        bound["epsilon_lower_bound"],
        result["ledger_epsilon"],
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mechanism", choices=MECHANISMS, default="none")
    parser.add_argument("--m", type=int, default=200, help="number of canaries")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=float, default=1.0)
    parser.add_argument("--epsilon", type=float, default=3.0, help="DP-SGD target ε")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--site-rows", type=int, default=None)
    parser.add_argument("--canary-scale", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.05, help="1 - confidence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        import torch

        torch.set_num_threads(1)
        result = run_audit(
            mechanism=args.mechanism,
            m=args.m,
            rounds=args.rounds,
            local_epochs=args.local_epochs,
            epsilon=args.epsilon,
            delta=args.delta,
            site_rows=args.site_rows,
            canary_scale=args.canary_scale,
            beta=args.beta,
            seed=args.seed,
            out=args.out,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = args.out / "canary_audit.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("mechanism", "epsilon_lower_bound", "ledger_epsilon", "passed")}
        )
    )
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
