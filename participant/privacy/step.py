"""One site's privacy step for one round, with the budget checked before anything is shared.

``planned_events`` gives what a round will spend (the events are data-independent), so the
participant can refuse a round *before training*; ``run_privacy_step`` checks again, runs
the mechanism and records its events (and the round's DP-SGD events, if any) in the ledger.
On ``BudgetExceeded`` nothing is computed, returned or recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dp_accounting
import numpy as np

from participant.privacy.config import PartialShareConfig, SVTConfig
from participant.privacy.ledger import PrivacyLedger
from participant.privacy.partial import partial_share
from participant.privacy.result import PrivacyResult
from participant.privacy.svt import svt_events, svt_select

logger = logging.getLogger(__name__)

SharingConfig = SVTConfig | PartialShareConfig


def planned_events(
    cfg: SharingConfig, d: int, chunk_bounds: Sequence[tuple[int, int]] | None = None
) -> list[dp_accounting.DpEvent]:
    """The events one round of ``cfg`` on a ``d``-value update will spend."""
    if isinstance(cfg, SVTConfig):
        return svt_events(cfg, d, chunk_bounds)
    return [dp_accounting.NonPrivateDpEvent()]


def run_privacy_step(
    delta: np.ndarray,
    n_iters: int,
    cfg: SharingConfig,
    ledger: PrivacyLedger,
    round: int,
    rng: np.random.Generator | None,
    chunk_bounds: Sequence[tuple[int, int]] | None = None,
    training_events: Sequence[dp_accounting.DpEvent] = (),
) -> PrivacyResult:
    """Check the budget, select and noise the update, record the spent events.

    ``rng`` may be ``None`` only for partial sharing (it draws no noise).
    ``training_events`` are the round's DP-SGD events (recorded as mechanism ``"dpsgd"``).
    Raises ``BudgetExceeded`` (nothing shared, nothing recorded) when the round would take
    the site past its budget.
    """
    d = int(np.asarray(delta).size)
    mech = "svt" if isinstance(cfg, SVTConfig) else "partial"
    events = planned_events(cfg, d, chunk_bounds)
    ledger.check_can_spend([*training_events, *events], mech)
    if isinstance(cfg, SVTConfig):
        if rng is None:
            raise TypeError("SVT needs an injected numpy.random.Generator (rng)")
        result = svt_select(delta, n_iters, cfg, rng, chunk_bounds)
    else:
        result = partial_share(delta, n_iters, cfg, chunk_bounds)
    if training_events:
        ledger.record(round, "dpsgd", list(training_events))
    ledger.record(round, mech, result.events)
    return result
