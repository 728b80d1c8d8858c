"""The daemon's privacy step against a real SQLite ledger: budget refusal and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crypto import ChunkLayout
from participant.daemon import RoundRefused
from participant.privacy.config import SVTConfig
from participant.privacy.ledger import PrivacyLedger
from participant.site_privacy import LedgerPrivacy


class _Result:
    def __init__(self, delta: np.ndarray, n_iters: int) -> None:
        self.delta = delta
        self.n_iters = n_iters
        self.loss = 0.0
        self.dp_events: list[object] = []


def _step(tmp_path: Path, budget: float) -> LedgerPrivacy:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", 1e-5, budget, site_id="site-a")
    layout = ChunkLayout.from_shapes([("w", (64,))], 4096)
    cfg = SVTConfig(fraction=0.25, gamma=1e-2, epsilon=10.0)
    return LedgerPrivacy(ledger, layout, np.random.default_rng(0), cfg)


def test_resumed_round_is_not_counted_twice_and_next_round_is_refused(tmp_path: Path) -> None:
    step = _step(tmp_path, budget=15.0)  # room for one round of ε = 10, not two
    delta = np.random.default_rng(1).normal(0, 0.01, 64)
    step.check(1)
    step.apply(1, _Result(delta, 5))
    assert step.ledger.rounds() == [1]
    spent = step.ledger.epsilon()
    step.check(1)  # resume after a restart: must not be refused for its own, recorded cost
    assert step.ledger.epsilon() == pytest.approx(spent)
    with pytest.raises(RoundRefused, match="budget"):
        step.check(2)
