"""Result of a privacy step, and the block helpers both selectors share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dp_accounting
import numpy as np


@dataclass(frozen=True)
class PrivacyResult:
    """A sparse update ready to encrypt, and the DP events it spent.

    ``selected`` holds the indices of the selected queries: coordinates in coordinate
    mode, block (chunk) ids in block mode (``granularity`` says which). ``sparse`` is zero
    outside them. ``non_private`` is true when the update was shared without DP.
    """

    sparse: np.ndarray
    events: list[dp_accounting.DpEvent]
    selected: np.ndarray
    granularity: str
    mechanism: str
    non_private: bool = False


def validate_bounds(chunk_bounds: Sequence[tuple[int, int]], d: int) -> list[tuple[int, int]]:
    """Check that ``chunk_bounds`` tile ``[0, d)`` contiguously, in order, without gaps."""
    bounds = [(int(a), int(b)) for a, b in chunk_bounds]
    if not bounds:
        raise ValueError("chunk_bounds must name at least one chunk")
    pos = 0
    for i, (a, b) in enumerate(bounds):
        if a != pos or b <= a:
            raise ValueError(f"chunk_bounds[{i}] = {(a, b)} does not continue a tiling of [0, {d})")
        pos = b
    if pos != d:
        raise ValueError(f"chunk_bounds cover [0, {pos}) but the update has {d} values")
    return bounds


def block_norms(u: np.ndarray, bounds: Sequence[tuple[int, int]]) -> np.ndarray:
    """L2 norm of ``u`` over each block."""
    return np.array([float(np.linalg.norm(u[a:b])) for a, b in bounds], dtype=np.float64)


def ceil_fraction(fraction: float, m: int) -> int:
    """``c = ceil(Q * m)``, at least 1 and at most ``m`` (guards float round-off)."""
    return max(1, min(m, int(np.ceil(fraction * m - 1e-12))))
