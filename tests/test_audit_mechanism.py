"""The black-box audit passes the corrected SVT and catches the legacy variant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.audit_mechanism import eps_lower_bound, run_audit

ROOT = Path(__file__).resolve().parents[1]


def test_corrected_svt_passes_and_legacy_fails() -> None:
    good = run_audit("svt", 1500, seed=1)
    bad = run_audit("svt-legacy", 1500, seed=1)
    assert good["passed"] is True
    assert good["empirical_epsilon_lower_bound"] <= 1.0  # type: ignore[operator]
    assert bad["passed"] is False
    assert bad["empirical_epsilon_lower_bound"] > 2.0  # type: ignore[operator]
    assert good["claimed_epsilon"] == bad["claimed_epsilon"] == 1.0


def test_lower_bound_formula() -> None:
    # no errors at all on 1000 + 1000 trials: bounded by the Clopper–Pearson width
    lb = eps_lower_bound(0, 0, 1000, 1000, 0.0, 0.05)
    assert 5.0 < lb < 6.5
    # a coin flip distinguishes nothing
    assert eps_lower_bound(500, 500, 1000, 1000, 0.0, 0.05) == 0.0
    # δ lowers the bound
    assert eps_lower_bound(10, 10, 1000, 1000, 0.1, 0.05) < eps_lower_bound(
        10, 10, 1000, 1000, 0.0, 0.05
    )


@pytest.mark.parametrize(("mechanism", "code"), [("svt-legacy", 1)])
def test_cli_writes_json(tmp_path: Path, mechanism: str, code: int) -> None:
    out = tmp_path / "audit.json"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/audit_mechanism.py",
            "--mechanism",
            mechanism,
            "--trials",
            "600",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env={"OMP_NUM_THREADS": "1"},  # as documented: no PYTHONPATH needed
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == code, proc.stderr
    data = json.loads(out.read_text())
    for key in (
        "mechanism",
        "claimed_epsilon",
        "empirical_epsilon_lower_bound",
        "trials",
        "passed",
    ):
        assert key in data
    assert data["mechanism"] == mechanism and data["trials"] == 600 and data["passed"] is False


def test_cli_rejects_bad_trials(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trials"):
        run_audit("svt", 5)
