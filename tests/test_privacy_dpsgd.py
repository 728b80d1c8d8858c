"""Patient-level DP-SGD with Opacus: calibration, determinism, events in the ledger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from participant.privacy import DPSGDConfig, PrivacyLedger, compose_epsilon
from participant.privacy.dpsgd import DPSGDAttachment, attach_dp_sgd, derive_noise_multiplier


def _setup(
    seed: int,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, DataLoader[tuple[torch.Tensor, ...]]]:
    torch.manual_seed(seed)
    x = torch.randn(140, 20)
    y = (x[:, 0] > 0).float()
    model = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, DataLoader(TensorDataset(x, y), batch_size=32)


def _train(att: DPSGDAttachment, steps: int) -> None:
    loss_fn = torch.nn.BCEWithLogitsLoss()
    done = 0
    while done < steps:
        for xb, yb in att.loader:
            att.optimizer.zero_grad()
            if len(xb) > 0:
                loss_fn(att.model(xb).squeeze(-1), yb).backward()
            att.optimizer.step()
            done += 1
            if done >= steps:
                return


def _params(model: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).numpy().copy()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dp_sgd_calibrated_deterministic_and_accounted(tmp_path: Path) -> None:
    cfg = DPSGDConfig(target_epsilon=2.0, target_delta=1e-5, max_grad_norm=1.0, planned_rounds=4)
    runs = []
    for _ in range(2):
        model, opt, loader = _setup(0)
        att = attach_dp_sgd(model, opt, loader, cfg, steps=5, generator=np.random.default_rng(42))
        assert att.events() == []
        _train(att, 5)
        runs.append((att, _params(model)))
    (att, p1), (_, p2) = runs
    assert np.array_equal(p1, p2)  # sampling and noise come from the injected generator
    assert att.sample_rate == pytest.approx(1 / 5)  # 140 records, batch 32: 5 batches
    assert att.steps_taken == 5
    assert att.events() == att.planned_events()
    eps = compose_epsilon(att.events() * cfg.planned_rounds, cfg.target_delta)
    assert 0.95 * cfg.target_epsilon <= eps <= cfg.target_epsilon + 1e-6
    # an other seed gives other noise
    model, opt, loader = _setup(0)
    other = attach_dp_sgd(model, opt, loader, cfg, steps=5, generator=np.random.default_rng(43))
    _train(other, 5)
    assert not np.array_equal(_params(model), p1)
    # the ledger takes the events; the planned rounds fit a budget equal to the target
    led = PrivacyLedger(tmp_path / "s.db", cfg.target_delta, cfg.target_epsilon)
    for r in range(cfg.planned_rounds):
        led.record(r, "dpsgd", att.events())
    assert led.epsilon("dpsgd") == pytest.approx(eps)


def test_noise_multiplier_grows_with_rounds_and_explicit_override() -> None:
    small = derive_noise_multiplier(DPSGDConfig(planned_rounds=2), 0.2, 5)
    large = derive_noise_multiplier(DPSGDConfig(planned_rounds=20), 0.2, 5)
    assert large > small > 0
    assert derive_noise_multiplier(DPSGDConfig(noise_multiplier=3.0), 0.2, 5) == 3.0
    with pytest.raises(ValueError, match="steps"):
        derive_noise_multiplier(DPSGDConfig(), 0.2, 0)


def test_attach_rejects_bad_arguments() -> None:
    model, opt, loader = _setup(0)
    with pytest.raises(ValueError, match="steps"):
        attach_dp_sgd(
            model, opt, loader, DPSGDConfig(), steps=0, generator=np.random.default_rng(0)
        )
    bn = torch.nn.Sequential(torch.nn.Linear(20, 4), torch.nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="not compatible"):
        attach_dp_sgd(
            bn,
            torch.optim.SGD(bn.parameters(), lr=0.1),
            loader,
            DPSGDConfig(),
            steps=1,
            generator=np.random.default_rng(0),
        )
