"""scripts/audit_privacy.py on small run folders written by the real writers.

Each run folder holds a federation file (the TOML users write) and per-site ledgers made
by :class:`PrivacyLedger` with the events the real mechanisms spend (``svt_events``,
``partial_share``); the AUC curve comes from a real 2-round ``run_simulation`` result.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from participant.privacy import (
    PartialShareConfig,
    PrivacyLedger,
    SVTConfig,
    partial_share,
    svt_events,
)
from scripts.audit_privacy import RunError, audit_run, epsilon_curve, main

SITES = ("s1", "s2")
D = 200


def write_config(root: Path, mechanism: str, budget: float | None, epsilon: float = 2.0) -> None:
    root.mkdir(parents=True, exist_ok=True)
    budget_line = "" if budget is None else f"budget_epsilon = {budget}\n"
    sites = "".join(f'[[sites]]\nid = "{s}"\ndata = "actg175:{i}"\n\n' for i, s in enumerate(SITES))
    (root / "federation.toml").write_text(
        '[federation]\nid = "audit-test"\nmin_participants = 2\nrounds = 3\n\n'
        + sites
        + f'[privacy]\nmechanism = "{mechanism}"\nsharing_fraction = 0.1\ngamma = 0.01\n'
        f"epsilon = {epsilon}\n{budget_line}delta = 1e-5\n"
    )


def svt_ledger(root: Path, site: str, rounds: int, epsilon: float, budget: float) -> None:
    path = root / "state" / site / "privacy_ledger.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = SVTConfig(fraction=0.1, gamma=0.01, epsilon=epsilon)
    with PrivacyLedger(path, 1e-5, budget, site) as ledger:
        for t in range(1, rounds + 1):
            ledger.record(t, "svt", svt_events(cfg, D))


def partial_ledger(root: Path, site: str, rounds: int) -> None:
    path = root / "state" / site / "privacy_ledger.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with PrivacyLedger(path, 1e-5, 1e9, site) as ledger:
        for t in range(1, rounds + 1):
            res = partial_share(rng.normal(size=D), 5, PartialShareConfig(fraction=0.1))
            ledger.record(t, "partial", res.events)


def _flags(result: dict[str, object]) -> set[tuple[str, str]]:
    return {(f["site"], f["flag"]) for f in result["flags"]}  # type: ignore[attr-defined]


def test_svt_within_budget_is_clean(tmp_path: Path) -> None:
    root = tmp_path / "run"
    write_config(root, "svt", budget=20.0)
    for s in SITES:
        svt_ledger(root, s, rounds=3, epsilon=2.0, budget=20.0)
    out = tmp_path / "report"
    result = audit_run(root, out, audit_trials=200)
    assert result["ok"], result["flags"]
    site = result["sites"][0]
    assert site["epsilon_total"] == pytest.approx(6.0, rel=0.02)  # 3 pure rounds of ε=2
    assert site["rounds_recorded"] == 3
    assert [r for r, _ in site["epsilon_curve"]] == [1, 2, 3]
    eps = [e for _, e in site["epsilon_curve"]]
    assert eps == sorted(eps)
    assert result["mechanism_audit"]["passed"] is True
    assert (out / "privacy_audit.html").read_text().count("<tr>") >= 3
    assert "epsilon_over_rounds.png" in result["plots"]
    json.loads((out / "privacy_audit.json").read_text())  # strict JSON


def test_budget_exceeded_and_missing_ledger(tmp_path: Path) -> None:
    root = tmp_path / "run"
    write_config(root, "svt", budget=5.0)
    svt_ledger(root, "s1", rounds=4, epsilon=2.0, budget=100.0)  # ledger allowed more
    result = audit_run(root, tmp_path / "r", audit_trials=0)
    assert _flags(result) == {("s1", "budget_exceeded"), ("s2", "missing_ledger")}
    assert result["mechanism_audit"] is None
    assert not result["ok"]


def test_partial_sharing_with_a_budget_is_flagged(tmp_path: Path) -> None:
    root = tmp_path / "run"
    write_config(root, "partial", budget=10.0)
    for s in SITES:
        partial_ledger(root, s, rounds=2)
    result = audit_run(root, tmp_path / "r", audit_trials=0)
    flags = _flags(result)
    assert ("s1", "dp_claimed_without_mechanism") in flags
    assert ("s1", "non_private_rounds") in flags
    assert math.isinf(result["sites"][0]["epsilon_total"])
    text = (tmp_path / "r" / "privacy_audit.json").read_text()
    assert '"epsilon_total": "inf"' in text


def test_no_claim_no_flag(tmp_path: Path) -> None:
    root = tmp_path / "run"
    write_config(root, "none", budget=None)
    result = audit_run(root, tmp_path / "r", audit_trials=0)
    assert result["ok"], result["flags"]
    assert math.isinf(result["sites"][0]["epsilon_total"])


def test_ledger_with_another_delta_is_flagged(tmp_path: Path) -> None:
    root = tmp_path / "run"
    write_config(root, "svt", budget=20.0)
    for s in SITES:
        path = root / "state" / s / "privacy_ledger.sqlite"
        path.parent.mkdir(parents=True)
        with PrivacyLedger(path, 1e-3, 20.0, s) as ledger:
            ledger.record(1, "svt", svt_events(SVTConfig(fraction=0.1, gamma=0.01, epsilon=2), D))
    result = audit_run(root, tmp_path / "r", audit_trials=0)
    assert _flags(result) == {("s1", "delta_mismatch"), ("s2", "delta_mismatch")}


def test_corrupted_ledger_is_flagged(tmp_path: Path) -> None:
    root = tmp_path / "run"
    write_config(root, "svt", budget=20.0)
    svt_ledger(root, "s1", rounds=1, epsilon=2.0, budget=20.0)
    bad = root / "state" / "s2" / "privacy_ledger.sqlite"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not sqlite" * 100)
    result = audit_run(root, tmp_path / "r", audit_trials=0)
    assert ("s2", "unreadable_ledger") in _flags(result)


@pytest.mark.parametrize("corruption", ["delta = 2", "budget_epsilon = -1", "delta = 'abc'"])
def test_corrupted_budget_row_is_flagged_not_a_traceback(tmp_path: Path, corruption: str) -> None:
    import sqlite3

    root = tmp_path / "run"
    write_config(root, "svt", budget=20.0)
    for s in SITES:
        svt_ledger(root, s, rounds=1, epsilon=2.0, budget=20.0)
    db = sqlite3.connect(root / "state" / "s2" / "privacy_ledger.sqlite")
    with db:
        db.execute(f"UPDATE budget SET {corruption}")
    db.close()
    result = audit_run(root, tmp_path / "r", audit_trials=0)
    assert _flags(result) == {("s2", "unreadable_ledger")}
    assert "privacy_ledger.sqlite" in result["flags"][0]["detail"]


def test_auc_plot_from_a_simulation_result(tmp_path: Path) -> None:
    from cipherfed.simulation import SimulationConfig, run_simulation

    root = tmp_path / "run"
    write_config(root, "svt", budget=20.0)
    for s in SITES:
        svt_ledger(root, s, rounds=2, epsilon=2.0, budget=20.0)
    sim = run_simulation(SimulationConfig(rounds=2, n_sites=3, centralized=False))
    (root / "results.json").write_text(json.dumps(sim.to_json_dict()))
    result = audit_run(root, tmp_path / "r", audit_trials=0)
    assert len(result["validation_auc"]["federated"]) == 2
    assert "auc_over_rounds.png" in result["plots"]


def test_epsilon_curve_of_an_empty_ledger(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    PrivacyLedger(path, 1e-5, 10.0, "x").close()
    assert epsilon_curve(path, 1e-5) == []


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "federation.toml" in capsys.readouterr().err
    root = tmp_path / "run"
    write_config(root, "partial", budget=1.0)
    assert main(["--run", str(root), "--out", str(tmp_path / "r"), "--audit-trials", "0"]) == 1
    with pytest.raises(RunError):
        audit_run(tmp_path / "nothing", tmp_path / "r")
    write_config(root, "svt", budget=20.0)
    listed = tmp_path / "audit.json"
    listed.write_text("[1, 2]")
    assert (
        main(["--run", str(root), "--out", str(tmp_path / "r"), "--mechanism-audit", str(listed)])
        == 2
    )
    assert "--mechanism-audit" in capsys.readouterr().err
    assert main(["--run", str(root), "--out", str(tmp_path / "r"), "--audit-trials", "5"]) == 2
    assert "--audit-trials 5" in capsys.readouterr().err
