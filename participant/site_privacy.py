"""The daemon's privacy step: the configured mechanism plus the site's persistent ledger.

Before training, the ledger is asked whether the round's planned DP events fit the budget
(SVT's cost is data-independent); after training, the mechanism runs and its events (and
any DP-SGD events of the local training) are recorded. A refusal at either point makes the
site sit the round out: nothing is encrypted or sent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dp_accounting
import numpy as np

from crypto import ChunkLayout
from participant.daemon import RoundRefused, TrainResult
from participant.privacy.config import PartialShareConfig, SVTConfig
from participant.privacy.ledger import BudgetExceeded, PrivacyLedger
from participant.privacy.partial import partial_share
from participant.privacy.svt import svt_events, svt_select

logger = logging.getLogger(__name__)


class LedgerPrivacy:
    def __init__(
        self,
        ledger: PrivacyLedger,
        layout: ChunkLayout,
        rng: np.random.Generator,
        *,
        svt: SVTConfig | None = None,
        partial: PartialShareConfig | None = None,
    ) -> None:
        if svt is not None and partial is not None:
            raise ValueError("choose one mechanism: svt or partial sharing")
        self.ledger = ledger
        self.layout = layout
        self.rng = rng
        self.svt = svt
        self.partial = partial
        self.mechanism = "svt" if svt else "partial" if partial else "none"

    def _bounds(self, granularity: str) -> list[tuple[int, int]] | None:
        return self.layout.chunk_bounds() if granularity == "block" else None

    def _planned(self) -> list[dp_accounting.DpEvent]:
        if self.svt is None:
            return []
        return svt_events(self.svt, self.layout.total, self._bounds(self.svt.granularity))

    def _spend_check(self, events: Sequence[dp_accounting.DpEvent]) -> None:
        try:
            self.ledger.check_can_spend(events, self.mechanism)
        except BudgetExceeded as exc:
            raise RoundRefused(str(exc)) from exc

    def check(self, round_no: int) -> None:
        self._spend_check(self._planned())

    def apply(self, round_no: int, result: TrainResult) -> np.ndarray:
        delta = np.asarray(result.delta, dtype=np.float64)
        events: list[dp_accounting.DpEvent] = list(result.dp_events)
        if self.svt is not None:
            pr = svt_select(
                delta, result.n_iters, self.svt, self.rng, self._bounds(self.svt.granularity)
            )
            vector, events = pr.sparse, events + list(pr.events)
        elif self.partial is not None:
            pr = partial_share(
                delta, result.n_iters, self.partial, self._bounds(self.partial.granularity)
            )
            vector, events = pr.sparse, events + list(pr.events)
        else:
            vector = delta
        if events:
            self._spend_check(events)
            try:
                self.ledger.record(round_no, self.mechanism, events)
            except BudgetExceeded as exc:
                raise RoundRefused(str(exc)) from exc
        return vector
