"""``cipherfed demo --privacy svt`` end to end at a tiny scale (3 sites, 2 rounds).

The real demo path (CLI, provisioning, key holder, coordinator and site daemons as
processes, plaintext reference with the same mechanism, report): the results' privacy block
must agree with what each site's own ledger records.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cipherfed.cli import main
from cipherfed.commands.demo import privacy_summary
from cipherfed.demo import DemoOptions, demo_privacy
from participant.privacy.config import SVTConfig
from participant.privacy.ledger import PrivacyLedger
from participant.privacy.svt import svt_budget


@pytest.mark.slow
def test_demo_with_svt_records_each_sites_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--rounds", "2", "--sites", "3", "--min-participants", "3"]
    argv += ["--out", str(out), "--privacy", "svt", "--share", "0.2", "--epsilon", "50"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())

    p = results["privacy"]
    assert p["mechanism"] == "svt" and p["dp_sgd"] is False
    assert p["settings"]["epsilon_per_round"] == 50.0
    assert p["settings"]["sharing_fraction"] == 0.2
    assert p["any_refused_for_budget"] is False and p["refused_rounds"] == {}
    assert "independent" in p["reference_note"]
    sites = p["epsilon_per_site"]
    assert sorted(sites) == ["site-00", "site-01", "site-02"]
    for site_id, entry in sites.items():
        path = out / "federation" / "state" / site_id / "privacy_ledger.sqlite"
        with PrivacyLedger(path, p["delta"], 1e300, site_id) as ledger:
            assert ledger.rounds() == [1, 2]
            assert ledger.mechanisms() == ["svt"]
            assert entry["epsilon"] == pytest.approx(ledger.epsilon())
        assert entry["rounds_recorded"] == 2 and entry["rounds_refused"] == []
        # two rounds of pure ε = 50 compose to at most 100 and clearly more than one round
        assert 50.0 < entry["epsilon"] <= 100.0 + 1e-6
    assert p["epsilon_max"] == pytest.approx(max(e["epsilon"] for e in sites.values()))

    assert privacy_summary(p) in printed
    assert "max ε spent per site" in printed
    assert results["encrypted"]["auc"] is not None and results["plaintext"]["auc"] is not None
    html = (out / "report.html").read_text()
    assert "<h2>Privacy</h2>" in html and "site-02" in html


def test_demo_privacy_settings() -> None:
    d = 3457
    none = demo_privacy(DemoOptions(out=Path("x")), d)
    assert none.mechanism == "none" and none.dp_sgd is None
    # SVT without --epsilon: utility-calibrated, the (large) ε written down exactly
    svt = demo_privacy(DemoOptions(out=Path("x"), privacy="svt"), d)
    calibrated = svt_budget(SVTConfig(fraction=0.1, gamma=1e-3, tau=1e-4), d).epsilon
    assert svt.epsilon == pytest.approx(calibrated) and svt.epsilon > 1000
    assert svt.sharing_fraction == 0.1
    part = demo_privacy(DemoOptions(out=Path("x"), privacy="partial", dp_sgd=8.0), d)
    assert part.mechanism == "partial" and part.sharing_fraction == 0.4
    assert part.dp_sgd is not None and part.dp_sgd.target_epsilon == 8.0
    with pytest.raises(ValueError, match="privacy"):
        DemoOptions(out=Path("x"), privacy="dp")
    with pytest.raises(ValueError, match="share"):
        DemoOptions(out=Path("x"), privacy="svt", share=0.0)


def test_cli_rejects_epsilon_without_svt(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--privacy", "partial", "--epsilon", "1"]) == 2
    assert "--epsilon" in capsys.readouterr().err


def test_cli_rejects_an_out_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a NotADirectoryError traceback after the demo had started; the file stays."""
    out = tmp_path / "results"
    out.write_text("kept")
    assert main(["demo", "--rounds", "1", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --out {out} exists and is not a folder\n"
    assert out.read_text() == "kept"
