"""Clipping of model updates: per coordinate (the paper's ±γ) and in L2 norm."""

from __future__ import annotations

import logging

import numpy as np

from participant.privacy.config import ClipConfig

logger = logging.getLogger(__name__)


def as_update(vector: np.ndarray, name: str = "update") -> np.ndarray:
    """Return ``vector`` as a 1-D float64 array; reject other shapes and NaN/inf."""
    arr = np.asarray(vector, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def clip_values(vector: np.ndarray, gamma: float) -> np.ndarray:
    """Clip every coordinate to ``[-gamma, gamma]`` (a new array)."""
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    clipped: np.ndarray = np.clip(as_update(vector), -gamma, gamma)
    return clipped


def clip_l2(vector: np.ndarray, max_norm: float) -> np.ndarray:
    """Scale ``vector`` down so that its L2 norm is at most ``max_norm`` (a new array)."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    arr = as_update(vector)
    norm = float(np.linalg.norm(arr))
    if norm <= max_norm:
        return arr.copy()
    return arr * (max_norm / norm)


def clip_update(vector: np.ndarray, cfg: ClipConfig) -> np.ndarray:
    """Apply the configured L2 clip (if any), then the per-coordinate clip."""
    arr = as_update(vector)
    if cfg.l2_max_norm is not None:
        arr = clip_l2(arr, cfg.l2_max_norm)
    return clip_values(arr, cfg.gamma)


def normalized_clipped(delta: np.ndarray, n_iters: int, gamma: float) -> np.ndarray:
    """``u = clip(ΔW / N_k, -γ, γ)``: the per-iteration update, clipped first."""
    if isinstance(n_iters, bool) or not isinstance(n_iters, int | np.integer) or n_iters < 1:
        raise ValueError(f"n_iters must be a positive int, got {n_iters!r}")
    return clip_values(as_update(delta, "delta") / float(n_iters), gamma)
