"""Privacy step wired to the real local trainer and demo MLP (participant.training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crypto.packing import ChunkLayout
from participant.model import build_mlp, n_params, param_shapes
from participant.privacy import (
    BudgetExceeded,
    DPSGDConfig,
    PrivacyLedger,
    SVTConfig,
    compose_epsilon,
    svt_events,
    svt_select,
)
from participant.schema import SiteDataset
from participant.training import LocalTrainer, TrainConfig


def _dataset(n: int = 140, d: int = 20, seed: int = 0) -> SiteDataset:
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)).astype(np.float32)
    y = (x[:, 0] + 0.2 * rng.standard_normal(n) > 0.5).astype(np.float32)
    return SiteDataset(X=x, y=y, feature_names=tuple(f"f{i}" for i in range(d)))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dp_sgd_through_local_trainer_two_rounds_into_ledger(tmp_path: Path) -> None:
    dp = DPSGDConfig(target_epsilon=3.0, target_delta=1e-5, planned_rounds=3)
    cfg = TrainConfig(local_epochs=None, local_iters=4, batch_size=32, lr=1e-2, dp_sgd=dp)
    trainer = LocalTrainer(lambda: build_mlp(20, (16,)), _dataset(), cfg, seed=3)
    ledger = PrivacyLedger(tmp_path / "site.db", dp.target_delta, dp.target_epsilon, "s1")
    flat = np.zeros(n_params(trainer.model))
    for rnd in range(2):  # the same model is attached again next round
        res = trainer.run_round(flat)
        assert np.all(np.isfinite(res.delta)) and np.any(res.delta != 0)
        assert len(res.dp_events) == 1
        ledger.record(rnd, "dpsgd", res.dp_events)
        flat = flat + res.delta
    eps_two = ledger.epsilon("dpsgd")
    assert 0 < eps_two < dp.target_epsilon
    three = compose_epsilon(list(ledger.events()) + res.dp_events, dp.target_delta)
    assert three <= dp.target_epsilon + 1e-6


def test_svt_on_demo_mlp_block_mode_and_budget_refusal(tmp_path: Path) -> None:
    model = build_mlp(in_features=20, hidden=(64, 32))
    shapes = param_shapes(model)
    d = n_params(model)
    assert d == 3457
    layout = ChunkLayout.from_shapes(shapes, chunk_size=512)
    cfg = SVTConfig(fraction=0.25, gamma=1e-3, tau=5e-4, granularity="block")
    rng = np.random.default_rng(0)
    delta = rng.normal(0, 2e-3, size=d) * 10
    res = svt_select(delta, 10, cfg, rng, layout.chunk_bounds())
    sent = [j for j, (a, b) in enumerate(layout.chunk_bounds()) if np.any(res.sparse[a:b] != 0)]
    assert len(sent) <= 2 == int(np.ceil(0.25 * layout.n_chunks))
    events = svt_events(cfg, d, layout.chunk_bounds())
    assert res.events == events
    one_round = compose_epsilon(events, 1e-5)
    ledger = PrivacyLedger(tmp_path / "s.db", 1e-5, 1.5 * one_round, "s1")
    ledger.record(0, "svt", res.events)
    with pytest.raises(BudgetExceeded, match="'s1'"):
        ledger.check_can_spend(events, "svt")


def test_privacy_step_refuses_before_sharing(tmp_path: Path) -> None:
    from participant.privacy import PartialShareConfig, planned_events, run_privacy_step

    cfg = SVTConfig(fraction=0.1, gamma=1e-3, epsilon=2.0)
    delta = np.random.default_rng(0).normal(0, 1e-3, size=100)
    ledger = PrivacyLedger(tmp_path / "s.db", 1e-5, 3.0, "s9")
    res = run_privacy_step(delta, 1, cfg, ledger, 0, np.random.default_rng(1))
    assert res.mechanism == "svt" and ledger.rounds() == [0]
    assert ledger.epsilon() == pytest.approx(compose_epsilon(planned_events(cfg, 100), 1e-5))
    with pytest.raises(BudgetExceeded, match="'s9'"):
        run_privacy_step(delta, 1, cfg, ledger, 1, np.random.default_rng(1))
    assert ledger.rounds() == [0]  # refused: nothing recorded
    shared = run_privacy_step(delta, 1, PartialShareConfig(fraction=0.5), ledger, 1, None)
    assert shared.non_private and ledger.non_private_rounds() == [(1, "partial")]
