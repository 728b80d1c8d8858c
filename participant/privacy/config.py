"""Validated configuration objects of the privacy step.

Every nonsensical setting is rejected at construction with a ``ValueError`` that names the
field (``SVTConfig.fraction must be in (0, 1], got 0``), so a bad flag or file fails before
any data is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Granularity = Literal["coordinate", "block"]
_GRANULARITIES = ("coordinate", "block")


def _finite(cls: str, field: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{cls}.{field} must be a finite number, got {value!r}")
    return v


def check_positive(cls: str, field: str, value: float) -> None:
    """Raise ``ValueError`` naming ``cls.field`` unless ``value`` is finite and > 0."""
    if _finite(cls, field, value) <= 0:
        raise ValueError(f"{cls}.{field} must be > 0, got {value!r}")


def check_fraction(cls: str, field: str, value: float) -> None:
    """Raise ``ValueError`` naming ``cls.field`` unless ``value`` is in (0, 1]."""
    v = _finite(cls, field, value)
    if not 0 < v <= 1:
        raise ValueError(f"{cls}.{field} must be in (0, 1], got {value!r}")


def check_delta(cls: str, field: str, value: float) -> None:
    """Raise ``ValueError`` naming ``cls.field`` unless ``value`` is in (0, 1)."""
    v = _finite(cls, field, value)
    if not 0 < v < 1:
        raise ValueError(f"{cls}.{field} must be in (0, 1), got {value!r}")


def check_granularity(cls: str, value: str) -> None:
    if value not in _GRANULARITIES:
        raise ValueError(f"{cls}.granularity must be one of {_GRANULARITIES}, got {value!r}")


@dataclass(frozen=True)
class ClipConfig:
    """Clipping of an update: per coordinate to ``±gamma`` and optionally in L2 norm.

    ``l2_max_norm=None`` leaves the L2 norm unbounded.
    """

    gamma: float = 1e-3
    l2_max_norm: float | None = None

    def __post_init__(self) -> None:
        check_positive("ClipConfig", "gamma", self.gamma)
        if self.l2_max_norm is not None:
            check_positive("ClipConfig", "l2_max_norm", self.l2_max_norm)


@dataclass(frozen=True)
class SVTConfig:
    """Corrected Sparse Vector Technique (DESIGN.md section 4).

    - ``fraction`` (Q): at most ``c = ceil(Q * m)`` of the ``m`` queries (coordinates or
      blocks) are selected.
    - ``gamma`` (γ): per-coordinate clip of ``u = ΔW / N_k``.
    - ``tau`` (τ): threshold on ``|u_i|`` (coordinate) or on the block L2 norm (block).
    - ``epsilon``: total ε per round, ``ε1 + ε2 + ε3``. ``None`` means *utility-calibrated*:
      ε3 is chosen so that the release noise has Laplace scale ``noise_ratio * gamma``
      and the whole round costs ``ε3 / (1 - selection_share)``; the ledger then records
      that (usually very large) cost. Either way the cost is computed, never hidden.
    - ``selection_share``: share of ε spent on selection (``ε1 + ε2``); the rest is the
      release ε3. Within selection ``ε1 : ε2 = 1 : (2c)^(2/3)`` (Lyu, Su, Li 2017).
    - ``granularity``: ``"coordinate"`` (the paper's) or ``"block"`` (whole chunks of the
      crypto packing, so unselected chunks are not sent).
    """

    fraction: float = 0.1
    gamma: float = 1e-3
    tau: float = 1e-4
    epsilon: float | None = None
    noise_ratio: float = 1.0
    selection_share: float = 0.5
    granularity: Granularity = "coordinate"

    def __post_init__(self) -> None:
        check_fraction("SVTConfig", "fraction", self.fraction)
        check_positive("SVTConfig", "gamma", self.gamma)
        if _finite("SVTConfig", "tau", self.tau) < 0:
            raise ValueError(f"SVTConfig.tau must be >= 0, got {self.tau!r}")
        if self.epsilon is not None:
            check_positive("SVTConfig", "epsilon", self.epsilon)
        check_positive("SVTConfig", "noise_ratio", self.noise_ratio)
        v = _finite("SVTConfig", "selection_share", self.selection_share)
        if not 0 < v < 1:
            raise ValueError(
                f"SVTConfig.selection_share must be in (0, 1), got {self.selection_share!r}"
            )
        check_granularity("SVTConfig", self.granularity)


@dataclass(frozen=True)
class PartialShareConfig:
    """Partial sharing *without* DP (the paper's "share 40%"): compression, not privacy."""

    fraction: float = 0.4
    gamma: float = 1e-3
    granularity: Granularity = "coordinate"

    def __post_init__(self) -> None:
        check_fraction("PartialShareConfig", "fraction", self.fraction)
        check_positive("PartialShareConfig", "gamma", self.gamma)
        check_granularity("PartialShareConfig", self.granularity)


@dataclass(frozen=True)
class DPSGDConfig:
    """Patient-level DP-SGD with Opacus.

    The noise multiplier is derived so that ``planned_rounds`` rounds of the local steps
    reach ``(target_epsilon, target_delta)`` under Poisson sampling (PLD accounting), unless
    ``noise_multiplier`` is given explicitly.
    """

    target_epsilon: float = 3.0
    target_delta: float = 1e-5
    max_grad_norm: float = 1.0
    planned_rounds: int = 20
    noise_multiplier: float | None = None

    def __post_init__(self) -> None:
        check_positive("DPSGDConfig", "target_epsilon", self.target_epsilon)
        check_delta("DPSGDConfig", "target_delta", self.target_delta)
        check_positive("DPSGDConfig", "max_grad_norm", self.max_grad_norm)
        if isinstance(self.planned_rounds, bool) or not isinstance(self.planned_rounds, int):
            raise ValueError(
                f"DPSGDConfig.planned_rounds must be an int, got {self.planned_rounds!r}"
            )
        if self.planned_rounds < 1:
            raise ValueError(f"DPSGDConfig.planned_rounds must be >= 1, got {self.planned_rounds}")
        if self.noise_multiplier is not None:
            check_positive("DPSGDConfig", "noise_multiplier", self.noise_multiplier)
