"""Short plaintext simulations: better than the majority class, plug-ins, the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from cipherfed.cli import main
from cipherfed.simulation import SimulationConfig, run_simulation
from coordinator.fedavg import fedavg
from participant.training import TrainConfig

SMALL = SimulationConfig(
    rounds=4,
    n_sites=3,
    seed=0,
    hidden=(32,),
    train=TrainConfig(local_epochs=1.0, batch_size=64, lr=1e-2),
)


def test_short_simulation_beats_majority_class() -> None:
    result = run_simulation(SMALL)
    fed, maj = result.federated, result.majority
    assert len(result.rounds) == 4 and result.validation_size == 321
    assert sum(result.site_sizes) == 2139 - 321
    assert result.site_iters == [int(np.ceil(n / 64)) for n in result.site_sizes]
    assert fed.auc is not None and fed.auc > 0.58  # majority class: AUC 0.5
    assert fed.loss < maj.loss  # calibrated (no pos_weight): beats the constant predictor
    assert result.centralized is not None and result.centralized.auc is not None
    assert result.centralized.auc > 0.58
    doc = result.to_json_dict()
    json.dumps(doc)  # serialisable
    assert set(doc["federated"]) >= {"auc", "accuracy", "loss"}
    assert doc["rounds"][0]["round"] == 1


def test_plug_ins_are_called_and_used() -> None:
    calls: list[tuple[int, int]] = []

    def privacy_step(
        site: int, delta: np.ndarray, n_iters: int, rng: np.random.Generator
    ) -> np.ndarray:
        calls.append((site, n_iters))
        assert isinstance(rng, np.random.Generator)
        return np.zeros_like(delta)  # share nothing

    seen: list[list[int]] = []

    def aggregate(g: np.ndarray, deltas: Sequence[np.ndarray], n: Sequence[int]) -> np.ndarray:
        seen.append(list(n))
        return fedavg(g, deltas, n)

    cfg = SimulationConfig(
        rounds=2,
        n_sites=3,
        hidden=(4,),
        centralized=False,
        train=TrainConfig(local_epochs=None, local_iters=2),
    )
    result = run_simulation(cfg, privacy_step=privacy_step, aggregate=aggregate)
    assert calls == [(0, 2), (1, 2), (2, 2)] * 2
    assert seen == [[2, 2, 2], [2, 2, 2]]
    # nothing was shared, so the global model never moved
    assert result.rounds[0].federated == result.rounds[1].federated
    assert result.centralized is None


def test_weighting_option_changes_the_result() -> None:
    base = SimulationConfig(rounds=1, n_sites=3, hidden=(4,), centralized=False, alpha=0.3)
    a = run_simulation(base)
    b = run_simulation(SimulationConfig(**{**base.__dict__, "weighting": "uniform"}))
    assert len(set(a.site_iters)) > 1  # unbalanced sites, different N_k
    assert np.abs(a.final_flat - b.final_flat).max() > 1e-6


def test_cli_requires_plaintext(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--rounds", "1", "--out", str(tmp_path / "x.json")]) == 2
    assert "cipherfed demo" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.json"
    rc = main(
        [
            "simulate",
            "--plaintext",
            "--rounds",
            "2",
            "--sites",
            "3",
            "--hidden",
            "8",
            "--out",
            str(out),
            "--no-progress",
            "--no-momentum-restart",
            "--pos-weight",
            "none",
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert len(doc["rounds"]) == 2
    assert 0.0 <= doc["federated"]["auc"] <= 1.0 and 0.0 <= doc["centralized"]["auc"] <= 1.0
    assert doc["config"]["train"]["momentum_restart"] is False
    assert doc["config"]["hidden"] == [8]
    assert doc["config"]["train"]["pos_weight"] is None
    assert "federated AUC" in capsys.readouterr().out


def test_cli_rejects_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["simulate", "--plaintext", "--rounds", "0", "--out", str(tmp_path / "x.json")])
    assert rc == 2
    assert "rounds" in capsys.readouterr().err
