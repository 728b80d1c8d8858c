"""Corrected Sparse Vector Technique for selective sharing (DESIGN.md section 4).

Lyu, Su, Li 2017, Alg. 7 / Dwork–Roth NumericSparse, applied to ``u = clip(ΔW/N_k, ±γ)``:

1. clip first; queries are ``|u_i|`` (coordinate mode, sensitivity ``Δ = γ``) or the L2
   norm of each block (block mode, ``Δ = γ·sqrt(b_max)``, see :func:`svt_budget`);
2. ``c = ceil(Q·m)`` for ``m`` queries; noisy threshold ``T̂ = τ + Lap(Δ/ε1)`` drawn once;
3. one pass in a random order, select query j when ``q_j + Lap(2cΔ/ε2) ≥ T̂``, **stop
   after c selections**;
4. release ``u_i + Lap(L1/ε3)`` for every selected value, where ``L1`` is the L1
   sensitivity of the released vector (coordinate mode: ``2cγ``, i.e. ``Lap(2cΔ/ε3)``);
   zeros elsewhere; multiply by ``N_k``.

Neighbouring relation: one site's whole update replaced by any other (update level).
Cost per round: ``ε1 + ε2`` (selection, pure DP) then ``ε3`` (Laplace release), with
``ε1 : ε2 = 1 : (2c)^(2/3)``. All randomness comes from the injected generator.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import dp_accounting
import numpy as np

from participant.privacy.accounting import PureEpsilonDpEvent
from participant.privacy.clipping import as_update, normalized_clipped
from participant.privacy.config import SVTConfig
from participant.privacy.result import PrivacyResult, block_norms, ceil_fraction, validate_bounds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SVTBudget:
    """Every number of one SVT round for a given model size and configuration."""

    n_queries: int
    c: int
    sensitivity: float  # Δ of one query
    release_l1_sensitivity: float
    epsilon1: float
    epsilon2: float
    epsilon3: float
    threshold_scale: float  # Δ/ε1
    query_scale: float  # 2cΔ/ε2
    release_scale: float  # L1/ε3

    @property
    def epsilon(self) -> float:
        return self.epsilon1 + self.epsilon2 + self.epsilon3

    def events(self) -> list[dp_accounting.DpEvent]:
        """Selection (pure ε1+ε2) and release (a Laplace mechanism with ε3)."""
        return [
            PureEpsilonDpEvent(self.epsilon1 + self.epsilon2),
            dp_accounting.LaplaceDpEvent(1.0 / self.epsilon3),
        ]


def svt_budget(
    cfg: SVTConfig, d: int, chunk_bounds: Sequence[tuple[int, int]] | None = None
) -> SVTBudget:
    """Noise scales and ε split of one round on a ``d``-value update.

    Coordinate mode: ``m = d``, ``Δ = γ`` (``|u_i| ∈ [0, γ]``), release L1 sensitivity
    ``2cγ`` (``c`` values each moving by at most ``2γ``).

    Block mode (blocks of sizes ``b_j``): the query is ``‖u_B‖₂ ∈ [0, γ·sqrt(b_j)]``, so
    replacing the update moves it by at most ``Δ = γ·sqrt(b_max)`` (both norms lie in
    that interval; the triangle-inequality bound ``2γ·sqrt(b)`` is also sound but looser).
    The released vector holds every value of at most ``c`` blocks, each moving by at most
    ``2γ``: L1 sensitivity ``2γ·(sum of the c largest block sizes)``.
    """
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    gamma = cfg.gamma
    if cfg.granularity == "block":
        if chunk_bounds is None:
            raise ValueError("SVTConfig.granularity='block' needs chunk_bounds")
        sizes = sorted((b - a for a, b in validate_bounds(chunk_bounds, d)), reverse=True)
        m = len(sizes)
        c = ceil_fraction(cfg.fraction, m)
        sens = gamma * math.sqrt(sizes[0])
        l1 = 2.0 * gamma * float(sum(sizes[:c]))
    else:
        m = d
        c = ceil_fraction(cfg.fraction, m)
        sens = gamma
        l1 = 2.0 * c * gamma
    if cfg.epsilon is None:
        eps3 = l1 / (cfg.noise_ratio * gamma)
        total = eps3 / (1.0 - cfg.selection_share)
    else:
        total = cfg.epsilon
        eps3 = total * (1.0 - cfg.selection_share)
    eps_sel = total * cfg.selection_share
    ratio = (2.0 * c) ** (2.0 / 3.0)
    eps1 = eps_sel / (1.0 + ratio)
    eps2 = eps_sel - eps1
    return SVTBudget(
        n_queries=m,
        c=c,
        sensitivity=sens,
        release_l1_sensitivity=l1,
        epsilon1=eps1,
        epsilon2=eps2,
        epsilon3=eps3,
        threshold_scale=sens / eps1,
        query_scale=2.0 * c * sens / eps2,
        release_scale=l1 / eps3,
    )


def svt_events(
    cfg: SVTConfig, d: int, chunk_bounds: Sequence[tuple[int, int]] | None = None
) -> list[dp_accounting.DpEvent]:
    """The events one round will spend (data-independent: check the budget beforehand)."""
    return svt_budget(cfg, d, chunk_bounds).events()


def svt_select(
    delta: np.ndarray,
    n_iters: int,
    cfg: SVTConfig,
    rng: np.random.Generator,
    chunk_bounds: Sequence[tuple[int, int]] | None = None,
) -> PrivacyResult:
    """Run the corrected SVT on the update ``delta`` made in ``n_iters`` local iterations."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator")
    vec = as_update(delta, "delta")
    budget = svt_budget(cfg, vec.size, chunk_bounds)
    u = normalized_clipped(vec, n_iters, cfg.gamma)  # clip BEFORE any noise
    bounds = None
    if cfg.granularity == "block":
        assert chunk_bounds is not None  # checked by svt_budget
        bounds = validate_bounds(chunk_bounds, vec.size)
        queries = block_norms(u, bounds)
    else:
        queries = np.abs(u)
    threshold = cfg.tau + rng.laplace(0.0, budget.threshold_scale)
    order = rng.permutation(budget.n_queries)
    # One pass in ``order``: a fresh Lap(2cΔ/ε2) per visited query. Drawing them in one
    # call is the same distribution; noise of queries after the c-th selection is unused.
    noise = rng.laplace(0.0, budget.query_scale, size=budget.n_queries)
    above = order[queries[order] + noise >= threshold]
    selected = np.sort(above[: budget.c])  # stop after c selections
    out = np.zeros_like(u)
    if bounds is None:
        idx = selected
    else:
        parts = [np.arange(bounds[j][0], bounds[j][1]) for j in selected]
        idx = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    out[idx] = u[idx] + rng.laplace(0.0, budget.release_scale, size=idx.size)
    out *= float(n_iters)
    logger.debug(
        "SVT selected %d of %d %ss (c=%d), eps=%.4g",
        selected.size,
        budget.n_queries,
        cfg.granularity,
        budget.c,
        budget.epsilon,
    )
    return PrivacyResult(
        sparse=out,
        events=budget.events(),
        selected=selected.astype(np.int64),
        granularity=cfg.granularity,
        mechanism="svt",
    )
