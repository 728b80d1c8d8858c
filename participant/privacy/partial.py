"""Partial sharing WITHOUT differential privacy (the paper's "share 40%").

Keeps the top fraction Q of ``u = clip(ΔW / N_k, ±γ)`` by magnitude (coordinates) or by
L2 norm (blocks), zeros elsewhere, multiplied back by ``N_k``. It is compression, not
privacy: it spends no ε, and its result carries a ``NonPrivateDpEvent`` so the ledger
records that the round shared something without DP (audits flag it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dp_accounting
import numpy as np

from participant.privacy.clipping import as_update, normalized_clipped
from participant.privacy.config import PartialShareConfig
from participant.privacy.result import PrivacyResult, block_norms, ceil_fraction, validate_bounds

logger = logging.getLogger(__name__)


def partial_share(
    delta: np.ndarray,
    n_iters: int,
    cfg: PartialShareConfig,
    chunk_bounds: Sequence[tuple[int, int]] | None = None,
) -> PrivacyResult:
    """Deterministic top-Q selection (ties broken by lower index)."""
    vec = as_update(delta, "delta")
    u = normalized_clipped(vec, n_iters, cfg.gamma)
    out = np.zeros_like(u)
    if cfg.granularity == "block":
        if chunk_bounds is None:
            raise ValueError("PartialShareConfig.granularity='block' needs chunk_bounds")
        bounds = validate_bounds(chunk_bounds, vec.size)
        scores = block_norms(u, bounds)
        k = ceil_fraction(cfg.fraction, len(bounds))
        selected = np.sort(np.argsort(-scores, kind="stable")[:k])
        for j in selected:
            a, b = bounds[j]
            out[a:b] = u[a:b]
    else:
        k = ceil_fraction(cfg.fraction, u.size)
        selected = np.sort(np.argsort(-np.abs(u), kind="stable")[:k])
        out[selected] = u[selected]
    out *= float(n_iters)
    logger.info("partial sharing WITHOUT DP: %d %ss kept", selected.size, cfg.granularity)
    return PrivacyResult(
        sparse=out,
        events=[dp_accounting.NonPrivateDpEvent()],
        selected=selected.astype(np.int64),
        granularity=cfg.granularity,
        mechanism="partial",
        non_private=True,
    )
