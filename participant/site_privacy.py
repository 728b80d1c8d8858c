"""The daemon's privacy step: the configured mechanism plus the site's persistent ledger.

Before training, the ledger is asked whether the round's planned DP events fit the budget
(the sharing mechanism's cost is data-independent); after training,
:func:`participant.privacy.step.run_privacy_step` checks again with the local training's
DP-SGD events, runs the mechanism and records what was spent. A refusal at either point
makes the site sit the round out: nothing is encrypted or sent.
"""

from __future__ import annotations

import logging

import dp_accounting
import numpy as np

from crypto import ChunkLayout
from participant.daemon import RoundRefused, TrainResult
from participant.privacy.ledger import BudgetExceeded, PrivacyLedger
from participant.privacy.step import SharingConfig, planned_events, run_privacy_step

logger = logging.getLogger(__name__)


class LedgerPrivacy:
    """``sharing=None``: the whole update is shared (only DP-SGD events, if any, are spent)."""

    def __init__(
        self,
        ledger: PrivacyLedger,
        layout: ChunkLayout,
        rng: np.random.Generator,
        sharing: SharingConfig | None = None,
    ) -> None:
        self.ledger = ledger
        self.layout = layout
        self.rng = rng
        self.sharing = sharing

    def _bounds(self) -> list[tuple[int, int]] | None:
        if self.sharing is not None and self.sharing.granularity == "block":
            return self.layout.chunk_bounds()
        return None

    def check(self, round_no: int) -> None:
        if self.sharing is None:
            return
        if round_no in self.ledger.rounds():
            # a resumed round: its cost is already in the ledger, and recording it again
            # is a no-op, so checking it again would count it twice
            return
        events = planned_events(self.sharing, self.layout.total, self._bounds())
        try:
            self.ledger.check_can_spend(events)
        except BudgetExceeded as exc:
            raise RoundRefused(str(exc)) from exc

    def apply(self, round_no: int, result: TrainResult) -> np.ndarray:
        delta = np.asarray(result.delta, dtype=np.float64)
        training: list[dp_accounting.DpEvent] = list(result.dp_events)
        try:
            if self.sharing is None:
                if training:
                    self.ledger.record(round_no, "dpsgd", training)
                return delta
            shared = run_privacy_step(
                delta,
                result.n_iters,
                self.sharing,
                self.ledger,
                round_no,
                self.rng,
                self._bounds(),
                training_events=training,
            )
        except BudgetExceeded as exc:
            raise RoundRefused(str(exc)) from exc
        return np.asarray(shared.sparse, dtype=np.float64)
