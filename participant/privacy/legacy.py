"""NOT FOR USE. The paper's reference SVT, kept only as a fixture for the privacy audit.

This reproduces the flaws DESIGN.md section 4 names, on purpose, so that
``scripts/audit_mechanism.py --mechanism svt-legacy`` can show that the audit catches them:

- noise is added to the *unclipped* values (selection on ``|ΔW/N_k|``, release clipped only
  after the noise), so the sensitivity is unbounded;
- the selection loop does not stop after ``c`` selections (every coordinate above the
  noisy threshold is shared);
- release noise is calibrated per value (``Lap(Δ/ε3)``) instead of to the L1 sensitivity
  of the ``c`` released values.

It claims ``ε1 + ε2 + ε3`` like the corrected mechanism; the claim is false. Nothing in
the participant imports this module; use :func:`participant.privacy.svt.svt_select`.
"""

from __future__ import annotations

import numpy as np

from participant.privacy.clipping import as_update
from participant.privacy.config import SVTConfig
from participant.privacy.svt import svt_budget


def legacy_svt_select_UNSAFE(
    delta: np.ndarray, n_iters: int, cfg: SVTConfig, rng: np.random.Generator
) -> np.ndarray:
    """The flawed reference variant (coordinate mode). Audit fixture only."""
    u = as_update(delta, "delta") / float(n_iters)  # flaw: no clipping before noise
    budget = svt_budget(cfg, u.size)
    threshold = cfg.tau + rng.laplace(0.0, budget.threshold_scale)
    noisy = np.abs(u) + rng.laplace(0.0, budget.query_scale, size=u.size)
    selected = np.flatnonzero(noisy >= threshold)  # flaw: no stop after c selections
    out = np.zeros_like(u)
    per_value_scale = budget.sensitivity / budget.epsilon3  # flaw: per-value calibration
    released = u[selected] + rng.laplace(0.0, per_value_scale, size=selected.size)
    out[selected] = np.clip(released, -cfg.gamma, cfg.gamma)  # flaw: clip after noise
    result: np.ndarray = out * float(n_iters)
    return result
