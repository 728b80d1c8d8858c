"""scripts/audit_canary.py: the one-run ε lower bound (known answers) and a real small run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from scripts.audit_canary import (
    best_bound,
    epsilon_lower_bound,
    guesses,
    main,
    p_value,
    run_audit,
)


def test_all_correct_known_answer() -> None:
    # δ = 0, v = r: P[Bin(r, q) >= r] = q^r = β  =>  ε = logit(β^(1/r))
    r, beta = 20, 0.05
    q = beta ** (1 / r)
    expected = math.log(q / (1 - q))
    assert epsilon_lower_bound(100, r, r, beta) == pytest.approx(expected, abs=1e-5)


def test_chance_level_gives_zero() -> None:
    assert epsilon_lower_bound(200, 100, 50, 0.05) == 0.0
    assert epsilon_lower_bound(200, 100, 58, 0.05) == 0.0  # within binomial noise
    assert epsilon_lower_bound(200, 0, 0, 0.05) == 0.0


def test_p_value_is_the_binomial_tail_and_delta_only_loosens_it() -> None:
    m, r, v, eps = 500, 100, 80, 1.0
    q = math.exp(eps) / (1 + math.exp(eps))
    assert p_value(m, r, v, eps) == pytest.approx(float(stats.binom.sf(v - 1, r, q)))
    assert p_value(m, r, v, eps, delta=1e-4) > p_value(m, r, v, eps)
    assert epsilon_lower_bound(m, r, v, 0.05, 1e-4) < epsilon_lower_bound(m, r, v, 0.05)
    tails = [p_value(m, r, v, e) for e in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert tails == sorted(tails)  # more ε, more correct guesses allowed


def test_bad_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="v <= r <= m"):
        p_value(10, 20, 5, 1.0)
    with pytest.raises(ValueError, match="beta"):
        epsilon_lower_bound(10, 4, 4, 1.5)


def test_guesses_count_top_in_and_bottom_out() -> None:
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    included = np.array([True, False, True, False, True, False])
    r, v = guesses(scores, included, 2)  # in: idx 0 (T), 1 (F); out: idx 4 (T), 5 (F)
    assert (r, v) == (4, 2)
    with pytest.raises(ValueError, match="2k guesses"):
        guesses(scores, included, 4)


def test_perfect_separation_beats_noise_with_bonferroni() -> None:
    rng = np.random.default_rng(0)
    included = rng.random(400) < 0.5
    perfect = np.where(included, 1.0, 0.0) + rng.normal(0, 0.01, 400)
    noise = rng.normal(0, 1, 400)
    good = best_bound(perfect, included, [10, 50, 100], 0.05, 0.0)
    bad = best_bound(noise, included, [10, 50, 100], 0.05, 0.0)
    assert good["epsilon_lower_bound"] > 2.0
    assert bad["epsilon_lower_bound"] < 0.5
    assert good["bonferroni_level"] == pytest.approx(0.05 / 3)


def test_non_private_run_leaks_and_is_consistent(tmp_path: Path) -> None:
    # out-of-distribution canaries in a small site, trained hard: membership shows
    res = run_audit(
        mechanism="none",
        m=60,
        rounds=6,
        local_epochs=5.0,
        site_rows=120,
        canary_scale=3.0,
        seed=1,
        out=tmp_path,
    )
    assert res["mean_loss_included_canaries"] < res["mean_loss_excluded_canaries"]
    assert res["epsilon_lower_bound"] > 0.0
    assert res["ledger_epsilon"] is None and res["passed"] is True
    assert (tmp_path / "canary_ledger.sqlite").is_file()


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--m", "2", "--out", str(tmp_path)]) == 2
    assert "m: 2 canaries" in capsys.readouterr().err
    assert main(["--canary-scale", "-1", "--out", str(tmp_path)]) == 2
    capsys.readouterr()
    assert main(["--beta", "2", "--out", str(tmp_path)]) == 2  # refused before training
    assert "beta: 2.0" in capsys.readouterr().err


@pytest.mark.slow
def test_dpsgd_run_records_epsilon_and_passes(tmp_path: Path) -> None:
    code = main(
        [
            "--mechanism",
            "dpsgd",
            "--epsilon",
            "2",
            "--m",
            "40",
            "--rounds",
            "2",
            "--site-rows",
            "100",
            "--canary-scale",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    res = json.loads((tmp_path / "canary_audit.json").read_text())
    assert 0 < res["ledger_epsilon"] <= 2.0 + 1e-6
    assert res["epsilon_lower_bound"] <= res["ledger_epsilon"]
    assert code == 0 and res["passed"] is True
