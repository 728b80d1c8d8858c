"""Local training: the N_k rule, Adam state reset vs kept, determinism, the DP-SGD hook."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from participant.model import build_mlp, flatten_params
from participant.schema import SiteDataset
from participant.training import LocalTrainer, TrainConfig, evaluate, roc_auc


def toy_dataset(n: int = 96, d: int = 4, seed: int = 0) -> SiteDataset:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, size=(n, d)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=n) > 0.5).astype(np.float32)
    return SiteDataset(X=X, y=y, feature_names=tuple(f"x{i}" for i in range(d)))


def factory() -> torch.nn.Module:
    return build_mlp(4, (8,))


def initial_flat(seed: int = 0) -> np.ndarray:
    torch.manual_seed(seed)
    return flatten_params(factory())


def adam_state(trainer: LocalTrainer) -> list[dict[str, Any]]:
    return [trainer.optimizer.state[p] for p in trainer.model.parameters()]


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="local_epochs/local_iters"):
        TrainConfig(local_epochs=None, local_iters=None)
    for kwargs, name in [
        ({"local_epochs": 0.0}, "local_epochs"),
        ({"local_epochs": None, "local_iters": 0}, "local_iters"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"pos_weight": 0.0}, "pos_weight"),
    ]:
        with pytest.raises(ValueError, match=name):
            TrainConfig(**kwargs)


def test_iteration_rule() -> None:
    by_epochs = TrainConfig(local_epochs=2.0, batch_size=32)
    assert by_epochs.iterations_for(100) == 7  # ceil(2 * 100 / 32)
    assert by_epochs.iterations_for(1) == 1
    assert TrainConfig(local_epochs=None, local_iters=5).iterations_for(1000) == 5
    assert TrainConfig(local_iters=5).iterations_for(1000) == 5  # local_iters wins
    assert TrainConfig(5, 16, 0.01).batch_size == 16  # positional order of interfaces.md


def test_momentum_restart_resets_adam_state() -> None:
    cfg = TrainConfig(local_epochs=None, local_iters=3, batch_size=16, momentum_restart=True)
    trainer = LocalTrainer(factory, toy_dataset(), cfg, device="cpu")
    w0 = initial_flat()
    res1 = trainer.run_round(w0)
    assert res1.n_iters == 3
    opt1 = trainer.optimizer
    state1 = [{k: v.clone() for k, v in s.items()} for s in adam_state(trainer)]
    assert all(float(s["step"]) == 3 for s in state1)
    trainer.run_round(w0 + res1.delta)
    state2 = adam_state(trainer)
    assert trainer.optimizer is not opt1
    assert all(float(s["step"]) == 3 for s in state2)  # counted from zero again
    # the new optimizer tracks the live parameter tensors
    params = list(trainer.model.parameters())
    assert all(
        a is b for a, b in zip(trainer.optimizer.param_groups[0]["params"], params, strict=True)
    )


def test_momentum_kept_without_restart() -> None:
    cfg = TrainConfig(local_epochs=None, local_iters=3, batch_size=16, momentum_restart=False)
    trainer = LocalTrainer(factory, toy_dataset(), cfg, device="cpu")
    params = list(trainer.model.parameters())
    w0 = initial_flat()
    res1 = trainer.run_round(w0)
    opt1 = trainer.optimizer
    exp_avg1 = [s["exp_avg"].clone() for s in adam_state(trainer)]
    res2 = trainer.run_round(w0 + res1.delta)
    assert trainer.optimizer is opt1
    assert all(float(s["step"]) == 6 for s in adam_state(trainer))
    # the optimizer still tracks the very same tensors the weights were loaded into
    assert all(
        a is b for a, b in zip(trainer.optimizer.param_groups[0]["params"], params, strict=True)
    )
    assert list(trainer.model.parameters()) == params
    # kept momentum changes round 2 relative to a restart from the same state
    cfg_restart = TrainConfig(local_epochs=None, local_iters=3, batch_size=16)
    other = LocalTrainer(factory, toy_dataset(), cfg_restart, device="cpu")
    r1 = other.run_round(w0)
    np.testing.assert_allclose(r1.delta, res1.delta, atol=1e-7)  # round 1 identical
    r2 = other.run_round(w0 + r1.delta)
    assert np.abs(r2.delta - res2.delta).max() > 1e-5  # round 2 differs: state was kept
    assert all(float(torch.abs(e).sum()) > 0 for e in exp_avg1)


def test_delta_is_local_minus_global_and_deterministic() -> None:
    cfg = TrainConfig(local_epochs=2.0, batch_size=16, lr=1e-2)
    w0 = initial_flat()
    a = LocalTrainer(factory, toy_dataset(), cfg, device="cpu", seed=5)
    res = a.run_round(w0)
    assert res.n_iters == 12  # ceil(2 * 96 / 16)
    np.testing.assert_allclose(flatten_params(a.model), w0 + res.delta, atol=1e-7)
    b = LocalTrainer(factory, toy_dataset(), cfg, device="cpu", seed=5)
    np.testing.assert_array_equal(b.run_round(w0).delta, res.delta)
    c = LocalTrainer(factory, toy_dataset(), cfg, device="cpu", seed=6)
    assert np.abs(c.run_round(w0).delta - res.delta).max() > 0
    assert res.dp_events == [] and np.isfinite(res.loss)


def test_training_learns() -> None:
    data = toy_dataset(n=256)
    cfg = TrainConfig(local_epochs=10.0, batch_size=32, lr=2e-2)
    trainer = LocalTrainer(factory, data, cfg, device="cpu")
    w0 = initial_flat()
    before = evaluate(factory_with(w0), data)
    trainer.run_round(w0)
    after = evaluate(trainer.model, data)
    assert after.loss < before.loss
    assert after.auc is not None and after.auc > 0.8


def factory_with(flat: np.ndarray) -> torch.nn.Module:
    from participant.model import load_flat

    m = factory()
    load_flat(m, flat)
    return m


def test_roc_auc_known_answers() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # ties count one half
    assert roc_auc(np.array([1, 0, 1]), np.array([3.0, 1.0, 2.0])) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.array([1, 1]), np.array([0.1, 0.2]))


@dataclass
class _Attachment:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: Any
    calls: list[int] = field(default_factory=list)

    def events(self) -> list[str]:
        return [f"event-for-{self.calls[0]}-steps"]


def test_dp_sgd_hook_uses_the_attachment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer trains through whatever attach_dp_sgd returns and surfaces its events.

    participant/privacy/dpsgd.py belongs to the privacy work; this pins the seam with a
    stand-in module that records the call and swaps in an SGD optimizer with lr 0.
    """
    seen: dict[str, Any] = {}

    def attach_dp_sgd(model, optimizer, loader, cfg, *, steps, generator):  # type: ignore[no-untyped-def]
        seen.update(model=model, optimizer=optimizer, cfg=cfg, steps=steps, generator=generator)
        frozen = torch.optim.SGD(model.parameters(), lr=0.0)
        return _Attachment(model=model, optimizer=frozen, loader=loader, calls=[steps])

    module = types.ModuleType("participant.privacy.dpsgd")
    module.attach_dp_sgd = attach_dp_sgd  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "participant.privacy.dpsgd", module)
    if "participant.privacy" not in sys.modules:
        monkeypatch.setitem(
            sys.modules, "participant.privacy", types.ModuleType("participant.privacy")
        )
    sentinel = object()
    cfg = TrainConfig(local_epochs=None, local_iters=4, batch_size=16, dp_sgd=sentinel)  # type: ignore[arg-type]
    trainer = LocalTrainer(factory, toy_dataset(), cfg, device="cpu")
    res = trainer.run_round(initial_flat())
    assert seen["cfg"] is sentinel and seen["steps"] == 4
    assert seen["model"] is trainer.model and isinstance(seen["generator"], torch.Generator)
    np.testing.assert_array_equal(res.delta, np.zeros_like(res.delta))  # lr-0 optimizer used
    assert res.dp_events == ["event-for-4-steps"]
