"""The per-site privacy ledger: composition, persistence, budget refusal, bad files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dp_accounting
import pytest

from participant.privacy import (
    BudgetExceeded,
    LedgerError,
    PrivacyLedger,
    PureEpsilonDpEvent,
    SVTConfig,
    compose_epsilon,
    svt_events,
)

SVT = [PureEpsilonDpEvent(0.3), dp_accounting.LaplaceDpEvent(1 / 0.2)]
DPSGD = [
    dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(2.0)), 10
    )
]


def test_records_and_composes(tmp_path: Path) -> None:
    led = PrivacyLedger(tmp_path / "site.db", 1e-5, 100.0, site_id="A")
    assert led.epsilon() == 0.0
    for r in range(2):
        led.record(r, "svt", SVT)
        led.record(r, "dpsgd", DPSGD)
    assert led.epsilon("svt") == pytest.approx(compose_epsilon(SVT * 2, 1e-5))
    assert led.epsilon("dpsgd") == pytest.approx(compose_epsilon(DPSGD * 2, 1e-5))
    assert led.epsilon() == pytest.approx(compose_epsilon((SVT + DPSGD) * 2, 1e-5))
    assert led.epsilon() < led.epsilon("svt") + led.epsilon("dpsgd")
    assert led.epsilon("svt", delta=1e-3) == pytest.approx(compose_epsilon(SVT * 2, 1e-3))
    assert led.epsilon("svt", delta=1e-3) <= led.epsilon("svt")
    rep = led.report()
    assert rep["rounds"] == 2
    by_mech = rep["epsilon_by_mechanism"]
    assert isinstance(by_mech, dict) and set(by_mech) == {"svt", "dpsgd"}
    led.close()


def test_reopen_restores_state(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    with PrivacyLedger(path, 1e-5, 50.0, site_id="A") as led:
        led.record(0, "svt", SVT)
        led.record(1, "svt", SVT)
        before = led.epsilon()
    with PrivacyLedger(path, 1e-5, 50.0, site_id="A") as again:
        assert again.rounds() == [0, 1]
        assert again.epsilon() == pytest.approx(before)
        assert again.events("svt") == SVT * 2


def test_budget_refusal_names_everything_and_records_nothing(tmp_path: Path) -> None:
    cfg = SVTConfig(fraction=0.1, gamma=1e-3)  # utility-calibrated: ε in the hundreds
    events = svt_events(cfg, 3457)
    led = PrivacyLedger(tmp_path / "s.db", 1e-5, 2000.0, site_id="hospital-7")
    led.record(0, "svt", events)
    now = led.epsilon()
    with pytest.raises(BudgetExceeded) as info:
        led.check_can_spend(events, "svt")
    msg = str(info.value)
    for part in ("hospital-7", "'svt'", f"{now:.6g}", "2000", "refused"):
        assert part in msg, (part, msg)
    with pytest.raises(BudgetExceeded):
        led.record(1, "svt", events)
    assert led.rounds() == [0]
    assert led.epsilon() == pytest.approx(now)
    led.set_budget(1e6)
    led.record(1, "svt", events)
    assert led.rounds() == [0, 1]


def test_idempotent_and_conflicting_records(tmp_path: Path) -> None:
    led = PrivacyLedger(tmp_path / "s.db", 1e-5, 100.0)
    led.record(4, "svt", SVT)
    led.record(4, "svt", SVT)  # resume after a crash: no double spending
    assert led.events() == SVT
    with pytest.raises(LedgerError, match="already recorded"):
        led.record(4, "svt", [PureEpsilonDpEvent(9.0)])
    with pytest.raises(ValueError, match="round"):
        led.record(-1, "svt", SVT)


def test_non_private_rounds_flagged_without_epsilon(tmp_path: Path) -> None:
    led = PrivacyLedger(tmp_path / "s.db", 1e-5, 1.0)
    led.record(0, "partial", [dp_accounting.NonPrivateDpEvent()])
    led.record(1, "partial", [dp_accounting.NonPrivateDpEvent()])
    assert led.epsilon() == 0.0
    assert led.non_private_rounds() == [(0, "partial"), (1, "partial")]
    assert led.report()["non_private_rounds"] == [[0, "partial"], [1, "partial"]]


@pytest.mark.parametrize(
    ("delta", "budget", "field"),
    [(0.0, 1.0, "delta"), (1.0, 1.0, "delta"), (1e-5, 0.0, "budget_epsilon")],
)
def test_ledger_validation(tmp_path: Path, delta: float, budget: float, field: str) -> None:
    with pytest.raises(ValueError, match=f"PrivacyLedger.{field}"):
        PrivacyLedger(tmp_path / "s.db", delta, budget)


def test_foreign_and_corrupted_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="not a readable privacy ledger"):
        PrivacyLedger(junk, 1e-5, 1.0)

    emptied = tmp_path / "emptied.db"
    emptied.write_bytes(b"")  # a truncated ledger must not restart the budget at zero
    with pytest.raises(LedgerError, match="empty or truncated"):
        PrivacyLedger(emptied, 1e-5, 1.0)
    assert emptied.read_bytes() == b""

    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE patients (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(LedgerError, match="not a CipherFed privacy ledger"):
        PrivacyLedger(foreign, 1e-5, 1.0)

    good = tmp_path / "good.db"
    PrivacyLedger(good, 1e-5, 10.0, site_id="A").record(0, "svt", SVT)
    with pytest.raises(LedgerError, match="site 'A'"):
        PrivacyLedger(good, 1e-5, 10.0, site_id="B")
    with pytest.raises(LedgerError, match="delta"):
        PrivacyLedger(good, 1e-6, 10.0, site_id="A")
    con = sqlite3.connect(good)
    con.execute('UPDATE events SET event_json = \'{"v": 1, "event": {"type": "pickle"}}\'')
    con.commit()
    con.close()
    with pytest.raises(LedgerError, match="corrupted event in round 0"):
        PrivacyLedger(good, 1e-5, 10.0, site_id="A")
