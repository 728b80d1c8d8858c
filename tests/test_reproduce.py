"""scripts/reproduce.py: the smoke mode on the real simulation, reuse, and the claim rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.reproduce import _better, _close, claims, main, variants


def test_quick_mode_writes_table_json_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "res"
    code = main(["--quick", "--only", "momentum", "encrypted", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data["rounds"] == 2 and data["seeds"] == [0]
    keys = [s["key"] for s in data["summaries"]]
    assert keys == ["fedavg", "no_restart", "restart_lr0.01", "no_restart_lr0.01", "encrypted"]
    for s in data["summaries"]:
        assert s["runs_ok"] == 1, s["runs_failed"]
    fed = next(r for r in data["runs"] if r["variant"] == "fedavg")
    assert len(fed["auc"]) == 2 and len(fed["central_auc"]) == 2
    assert len(fed["site_sizes"]) == 13
    enc = next(s for s in data["summaries"] if s["key"] == "encrypted")["encryption"]
    assert 0 < enc["max_abs_deviation_from_plaintext"] < 1e-3  # flooding noise, not an error
    verdicts = {c["claim"]: c["verdict"] for c in data["claims"]}
    assert any(v == "not run" for v in verdicts.values())
    md = (out / "results.md").read_text()
    assert "| momentum | FedAvg, momentum kept |" in md
    assert "Regenerate: `nice python scripts/reproduce.py" in md
    for png in ("momentum_auc.png", "momentum_loss.png", "encrypted.png", "fl_vs_central.png"):
        assert (out / png).stat().st_size > 1000

    # a second call reuses every run of the first
    again = tmp_path / "again"
    arg = ["--quick", "--only", "momentum", "--reuse", str(out / "results.json")]
    assert main([*arg, "--out", str(again)]) == 0
    data2 = json.loads((again / "results.json").read_text())
    assert data2["reused_runs"] == 4
    assert data2["runs"][0]["auc"] == fed["auc"]


def test_bad_reuse_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    args = ["--quick", "--only", "momentum", "--reuse", str(bad), "--out", str(tmp_path)]
    assert main(args) == 2
    assert "not a results.json" in capsys.readouterr().err


def test_claim_rules() -> None:
    assert _better([0.02, 0.03, 0.01], 0.005) == "held"
    assert _better([0.02, -0.01, 0.01], 0.005).startswith("inconclusive")
    assert _better([-0.02, -0.03, -0.01], 0.005).startswith("did not hold (the opposite")
    assert _better([0.001, -0.002, 0.0], 0.005).startswith("did not hold (no difference")
    assert _better([], 0.005) == "not run"
    assert _close([0.01, -0.01], 0.02) == "held"
    assert _close([0.05, 0.04], 0.02) == "did not hold"


def _run(
    key: str, seed: int, auc: list[float], central: list[float] | None = None
) -> dict[str, Any]:
    return {
        "variant": key,
        "seed": seed,
        "auc": auc,
        "loss": [0.6] * len(auc),
        "central_auc": central or [],
    }


def test_claims_on_known_runs() -> None:
    runs = {
        "fedavg": [_run("fedavg", s, [0.6, 0.70], [0.6, 0.71]) for s in range(3)],
        "no_restart": [_run("no_restart", s, [0.5, 0.60]) for s in range(3)],
        "unbal0.3_weighted": [_run("w", s, [0.6, 0.60 - 0.02 * s]) for s in range(3)],
        "unbal0.3_uniform": [_run("u", s, [0.6, 0.59]) for s in range(3)],
    }
    got = {c["claim"]: c for c in claims(runs)}
    assert got["FL reaches performance close to centralized training"]["verdict"] == "held"
    assert (
        got["Restarting momentum every round speeds convergence (Adam lr=1e-3)"]["verdict"]
        == "held"
    )
    weighted = next(c for k, c in got.items() if k.endswith("(Dirichlet α=0.3)"))
    assert weighted["per_seed_differences"] == pytest.approx([0.01, -0.01, -0.03])
    assert weighted["verdict"].startswith("inconclusive")


def test_variants_cover_the_issue() -> None:
    vs = variants()
    groups = {v.group for v in vs}
    assert groups == {"fl_vs_central", "momentum", "weighting", "partial", "svt", "encrypted"}
    assert sorted(v.fraction for v in vs if v.mechanism == "partial") == [0.1, 0.4, 1.0]
    assert len({v.epsilon for v in vs if v.mechanism == "svt"}) >= 3
    assert len({v.key for v in vs}) == len(vs)


@pytest.mark.parametrize("bad", [["--rounds", "0"], ["--encrypted-rounds", "0"], ["--jobs", "0"]])
def test_cli_rejects_non_positive_counts(tmp_path: Path, bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*bad, "--out", str(tmp_path / "res")])
    assert exc.value.code == 2
    assert not (tmp_path / "res").exists()
