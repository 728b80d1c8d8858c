"""Black-box audit of the SVT mechanisms: an empirical lower bound on ε.

Runs the mechanism ``--trials`` times on each of two worst-case neighbouring updates
(``D = 0`` and ``D' = M·1`` with ``M = 10γ``: one site's update replaced, every coordinate
moved as far as the clip allows, and further for a mechanism that does not clip first),
on a small ``d``. The first half of the runs chooses the most distinguishing output event
among threshold events ``{s(y) ≥ t}`` / ``{s(y) ≤ t}`` on a few statistics ``s`` (number of
shared coordinates, sum / max / min of the released values); the second half evaluates
that single event: with Clopper–Pearson upper bounds FPR⁺, FNR⁺ (95% jointly),

    ε_LB = max( ln((1 − δ − FPR⁺) / FNR⁺), ln((1 − δ − FNR⁺) / FPR⁺) ).

``passed`` is false when ε_LB exceeds the claimed ε. ``svt`` is the corrected mechanism,
``svt-legacy`` the paper's reference variant (an audit fixture, not for use).

Usage: ``python scripts/audit_mechanism.py --mechanism svt --trials 4000 --json out.json``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from participant.privacy.config import SVTConfig
from participant.privacy.legacy import legacy_svt_select_UNSAFE
from participant.privacy.svt import svt_select

logger = logging.getLogger(__name__)

MECHANISMS = ("svt", "svt-legacy")
Mechanism = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def make_mechanism(name: str, cfg: SVTConfig) -> Mechanism:
    if name == "svt":
        return lambda x, rng: svt_select(x, 1, cfg, rng).sparse
    if name == "svt-legacy":
        return lambda x, rng: legacy_svt_select_UNSAFE(x, 1, cfg, rng)
    raise ValueError(f"unknown mechanism {name!r}; choose one of {MECHANISMS}")


def statistics(outputs: np.ndarray) -> dict[str, np.ndarray]:
    """Scalar statistics of each output row."""
    return {
        "n_shared": np.count_nonzero(outputs, axis=1).astype(np.float64),
        "sum": outputs.sum(axis=1),
        "max": outputs.max(axis=1),
        "min": outputs.min(axis=1),
    }


def cp_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper–Pearson upper bound at level ``1 - alpha``."""
    if k >= n:
        return 1.0
    return float(stats.beta.ppf(1.0 - alpha, k + 1, n - k))


def eps_lower_bound(fp: int, fn: int, n0: int, n1: int, delta: float, alpha: float) -> float:
    """ε_LB of a test with ``fp`` false positives (of n0) and ``fn`` false negatives (of n1)."""
    fpr = cp_upper(fp, n0, alpha / 2)
    fnr = cp_upper(fn, n1, alpha / 2)
    best = 0.0
    for a, b in ((fpr, fnr), (fnr, fpr)):
        num = 1.0 - delta - a
        if num > 0 and b > 0:
            best = max(best, math.log(num / b))
    return best


def _candidates(s0: np.ndarray, s1: np.ndarray, n_thresholds: int = 64) -> np.ndarray:
    pooled = np.concatenate([s0, s1])
    qs = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, n_thresholds)))
    return np.unique(np.concatenate([qs, np.unique(pooled)[:32], np.unique(pooled)[-32:]]))


def _count(s: np.ndarray, t: float, upper: bool) -> int:
    return int(np.count_nonzero(s >= t if upper else s <= t))


def choose_event(
    out0: np.ndarray, out1: np.ndarray, delta: float, alpha: float
) -> tuple[str, float, bool]:
    """The (statistic, threshold, direction) with the largest ε_LB on these outputs."""
    st0, st1 = statistics(out0), statistics(out1)
    best = (-1.0, "n_shared", 0.0, True)
    for name in st0:
        s0, s1 = st0[name], st1[name]
        for t in _candidates(s0, s1):
            for upper in (True, False):
                # event E = "says D'": false positives under D, false negatives under D'
                fp = _count(s0, t, upper)
                fn = s1.size - _count(s1, t, upper)
                eps = eps_lower_bound(fp, fn, s0.size, s1.size, delta, alpha)
                if eps > best[0]:
                    best = (eps, name, float(t), upper)
    return best[1], best[2], best[3]


def run_audit(
    mechanism: str,
    trials: int,
    *,
    seed: int = 0,
    d: int = 8,
    epsilon: float = 1.0,
    delta: float = 0.0,
    alpha: float = 0.05,
) -> dict[str, object]:
    """Run the audit and return the JSON-ready result."""
    if trials < 20:
        raise ValueError(f"trials must be >= 20, got {trials}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    gamma = 1.0
    cfg = SVTConfig(fraction=0.25, gamma=gamma, tau=0.5 * gamma, epsilon=epsilon)
    mech = make_mechanism(mechanism, cfg)
    rng = np.random.default_rng(seed)
    x0 = np.zeros(d)
    x1 = np.full(d, 10.0 * gamma)
    out0 = np.stack([mech(x0, rng) for _ in range(trials)])
    out1 = np.stack([mech(x1, rng) for _ in range(trials)])
    half = trials // 2
    stat, thr, upper = choose_event(out0[:half], out1[:half], delta, alpha)
    s0 = statistics(out0[half:])[stat]
    s1 = statistics(out1[half:])[stat]
    fp = _count(s0, thr, upper)
    fn = s1.size - _count(s1, thr, upper)
    eps_lb = eps_lower_bound(fp, fn, s0.size, s1.size, delta, alpha)
    result: dict[str, object] = {
        "mechanism": mechanism,
        "claimed_epsilon": epsilon,
        "empirical_epsilon_lower_bound": eps_lb,
        "trials": trials,
        "passed": bool(eps_lb <= epsilon),
        "delta": delta,
        "confidence": 1.0 - alpha,
        "d": d,
        "seed": seed,
        "event": {"statistic": stat, "threshold": thr, "direction": ">=" if upper else "<="},
        "false_positives": fp,
        "false_negatives": fn,
        "evaluation_trials_per_input": int(s0.size),
    }
    logger.info("audit %s: eps_LB=%.3f vs claim %.3f", mechanism, eps_lb, epsilon)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mechanism", choices=MECHANISMS, required=True)
    parser.add_argument("--trials", type=int, default=4000, help="runs per input")
    parser.add_argument("--json", type=Path, required=True, help="output JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--d", type=int, default=8, help="update length")
    parser.add_argument("--epsilon", type=float, default=1.0, help="claimed ε per run")
    parser.add_argument("--delta", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        result = run_audit(
            args.mechanism,
            args.trials,
            seed=args.seed,
            d=args.d,
            epsilon=args.epsilon,
            delta=args.delta,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, sort_keys=True))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
