"""Plaintext federated averaging: the reference the encrypted aggregation must match.

``W(t) = W(t-1) + Σ_k w_k ΔW_k / Σ_k w_k`` with ``w_k = N_k`` (weighting by local
iterations, the paper's choice) or ``w_k = 1`` (uniform: the plain mean of the deltas).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["Weighting", "fedavg", "fedavg_weights"]

Weighting = Literal["iterations", "uniform"]


def fedavg_weights(n_iters: Sequence[int], weighting: Weighting = "iterations") -> np.ndarray:
    """The per-site weights ``w_k`` (not normalised)."""
    counts = np.asarray([int(n) for n in n_iters], dtype=np.float64)
    if counts.size == 0:
        raise ValueError("n_iters: at least one update is required")
    if weighting == "iterations":
        if np.any(counts < 1):
            raise ValueError(f"n_iters: every N_k must be >= 1, got {list(n_iters)}")
        return counts
    if weighting == "uniform":
        return np.ones_like(counts)
    raise ValueError(f"weighting: {weighting!r} is not 'iterations' or 'uniform'")


def fedavg(
    global_flat: np.ndarray,
    deltas: Sequence[np.ndarray],
    n_iters: Sequence[int],
    weighting: Weighting = "iterations",
) -> np.ndarray:
    """The new global vector (float64); the inputs are not modified."""
    base = np.asarray(global_flat, dtype=np.float64)
    if base.ndim != 1:
        raise ValueError(f"global_flat: expected a 1-D vector, got shape {base.shape}")
    if len(deltas) != len(n_iters):
        raise ValueError(f"deltas/n_iters: {len(deltas)} deltas but {len(n_iters)} counts")
    weights = fedavg_weights(n_iters, weighting)
    total = np.zeros_like(base)
    for k, (delta, w) in enumerate(zip(deltas, weights, strict=True)):
        d = np.asarray(delta, dtype=np.float64)
        if d.shape != base.shape:
            raise ValueError(f"deltas[{k}]: shape {d.shape} differs from global {base.shape}")
        if not np.all(np.isfinite(d)):
            raise ValueError(f"deltas[{k}]: contains NaN or infinite values")
        total += w * d
    result: np.ndarray = base + total / float(weights.sum())
    return result
