"""Persistent privacy ledger of one site (SQLite, one file per site).

Tables: ``meta`` (format marker, version, site id), ``budget`` (δ and the ε budget),
``events`` (round, mechanism, one validated JSON-encoded ``DpEvent`` per row). Reopening
the file restores the state, so the budget survives restarts; a file that is not a
ledger (or a corrupted one) raises :class:`LedgerError`.

Rounds that shared an update *without* DP (``NonPrivateDpEvent``, e.g. plain partial
sharing) are recorded but spend no ε: :meth:`PrivacyLedger.epsilon` composes the DP events
only and :meth:`PrivacyLedger.non_private_rounds` lists the others for audits.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import dp_accounting

from participant.privacy.accounting import (
    EventEncodingError,
    compose_epsilon,
    event_from_json,
    event_to_json,
)
from participant.privacy.config import check_delta, check_positive

logger = logging.getLogger(__name__)

_MAGIC = "cipherfed-privacy-ledger"
_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS budget (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    delta REAL NOT NULL,
    budget_epsilon REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    mechanism TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_json TEXT NOT NULL,
    non_private INTEGER NOT NULL,
    UNIQUE (round, mechanism, seq)
);
"""


class LedgerError(Exception):
    """The ledger file is not a CipherFed privacy ledger, or it is corrupted."""


class BudgetExceeded(Exception):
    """Spending these events would take the site past its ε budget."""


def _is_non_private(event: dp_accounting.DpEvent) -> bool:
    return isinstance(event, dp_accounting.NonPrivateDpEvent)


class PrivacyLedger:
    """ε budget of one site, composed over rounds with a PLD accountant.

    ``PrivacyLedger(path, delta, budget_epsilon, site_id)`` creates the file or reopens it;
    on reopen δ and the site id must match the stored ones (``LedgerError`` otherwise) and
    the stored budget is kept unless :meth:`set_budget` is called.
    """

    def __init__(
        self,
        sqlite_path: str | Path,
        delta: float,
        budget_epsilon: float,
        site_id: str = "site",
    ) -> None:
        check_delta("PrivacyLedger", "delta", delta)
        check_positive("PrivacyLedger", "budget_epsilon", budget_epsilon)
        self.path = Path(sqlite_path)
        self.site_id = str(site_id)
        existed = self.path.exists()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path}: not a readable privacy ledger ({exc})") from exc
        try:
            self._open(float(delta), float(budget_epsilon), existed)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise LedgerError(f"{self.path}: not a readable privacy ledger ({exc})") from exc
        except LedgerError:
            self._db.close()
            raise
        self._cache: dict[str | None, float] = {}

    # --- file handling -----------------------------------------------------------------------

    def _open(self, delta: float, budget: float, existed: bool) -> None:
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables and existed:
            # an emptied (truncated) ledger must not silently restart the budget at ε = 0
            raise LedgerError(
                f"{self.path}: the file exists but holds no ledger (empty or truncated); "
                "refusing to start a fresh budget over it"
            )
        if not tables:
            with db:
                db.execute("BEGIN")
                for stmt in _SCHEMA.strip().split(";\n"):
                    if stmt.strip():
                        db.execute(stmt)
                db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("format", _MAGIC), ("version", _VERSION), ("site_id", self.site_id)],
                )
                db.execute(
                    "INSERT INTO budget(id, delta, budget_epsilon) VALUES (1, ?, ?)",
                    (delta, budget),
                )
            logger.info("created privacy ledger %s for site %s", self.path, self.site_id)
            return
        if not {"meta", "budget", "events"} <= tables:
            raise LedgerError(
                f"{self.path}: not a CipherFed privacy ledger (tables {sorted(tables)})"
            )
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != _MAGIC:
            raise LedgerError(
                f"{self.path}: not a CipherFed privacy ledger (format marker missing)"
            )
        if meta.get("version") != _VERSION:
            raise LedgerError(f"{self.path}: unsupported ledger version {meta.get('version')!r}")
        if meta.get("site_id") != self.site_id:
            raise LedgerError(
                f"{self.path}: ledger belongs to site {meta.get('site_id')!r}, not {self.site_id!r}"
            )
        row = db.execute("SELECT delta, budget_epsilon FROM budget WHERE id = 1").fetchone()
        if row is None:
            raise LedgerError(f"{self.path}: budget row missing")
        stored_delta, stored_budget = float(row[0]), float(row[1])
        if not (0 < stored_delta < 1 and stored_budget > 0):
            raise LedgerError(f"{self.path}: corrupted budget row {row!r}")
        if not math.isclose(stored_delta, delta, rel_tol=1e-12):
            raise LedgerError(
                f"{self.path}: ledger was created with delta={stored_delta!r}, opened with "
                f"delta={delta!r}; δ cannot change over a ledger's life"
            )
        if not math.isclose(stored_budget, budget, rel_tol=1e-12):
            logger.warning(
                "ledger %s keeps its stored budget %.6g (asked %.6g); use set_budget()",
                self.path,
                stored_budget,
                budget,
            )
        self.events()  # validate every stored event now, not at the first query

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- configuration -----------------------------------------------------------------------

    @property
    def delta(self) -> float:
        return float(self._db.execute("SELECT delta FROM budget WHERE id = 1").fetchone()[0])

    @property
    def budget_epsilon(self) -> float:
        row = self._db.execute("SELECT budget_epsilon FROM budget WHERE id = 1").fetchone()
        return float(row[0])

    def set_budget(self, budget_epsilon: float) -> None:
        check_positive("PrivacyLedger", "budget_epsilon", budget_epsilon)
        with self._db:
            self._db.execute(
                "UPDATE budget SET budget_epsilon = ? WHERE id = 1", (float(budget_epsilon),)
            )
        logger.info("ledger %s: budget set to %.6g", self.path, budget_epsilon)

    # --- reading -----------------------------------------------------------------------------

    def _rows(self, mechanism: str | None) -> list[tuple[int, str, str]]:
        sql = "SELECT round, mechanism, event_json FROM events"
        args: tuple[str, ...] = ()
        if mechanism is not None:
            sql += " WHERE mechanism = ?"
            args = (mechanism,)
        try:
            return [
                (int(r), str(m), str(j)) for r, m, j in self._db.execute(sql + " ORDER BY id", args)
            ]
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path}: cannot read events ({exc})") from exc

    def events(self, mechanism: str | None = None) -> list[dp_accounting.DpEvent]:
        """Every recorded event (validated), optionally of one mechanism."""
        out = []
        for rnd, mech, text in self._rows(mechanism):
            try:
                out.append(event_from_json(text))
            except EventEncodingError as exc:
                raise LedgerError(
                    f"{self.path}: corrupted event in round {rnd} ({mech}): {exc}"
                ) from exc
        return out

    def mechanisms(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT mechanism FROM events ORDER BY 1")]

    def rounds(self) -> list[int]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT round FROM events ORDER BY 1")]

    def non_private_rounds(self) -> list[tuple[int, str]]:
        """``(round, mechanism)`` of every round that shared something without DP."""
        rows = self._db.execute(
            "SELECT DISTINCT round, mechanism FROM events WHERE non_private = 1 ORDER BY 1, 2"
        )
        return [(int(r), str(m)) for r, m in rows]

    def epsilon(self, mechanism: str | None = None, *, delta: float | None = None) -> float:
        """ε of all DP events (or one mechanism's), composed with PLD.

        At the ledger's δ unless ``delta`` is given.
        """
        if delta is not None:
            check_delta("PrivacyLedger.epsilon", "delta", delta)
            dp = [e for e in self.events(mechanism) if not _is_non_private(e)]
            return compose_epsilon(dp, delta) if dp else 0.0
        if mechanism not in self._cache:
            dp = [e for e in self.events(mechanism) if not _is_non_private(e)]
            self._cache[mechanism] = compose_epsilon(dp, self.delta) if dp else 0.0
        return self._cache[mechanism]

    def report(self) -> dict[str, object]:
        """ε per mechanism and in total, the budget, δ and the non-private rounds."""
        return {
            "site_id": self.site_id,
            "delta": self.delta,
            "budget_epsilon": self.budget_epsilon,
            "epsilon_total": self.epsilon(),
            "epsilon_by_mechanism": {m: self.epsilon(m) for m in self.mechanisms()},
            "rounds": len(self.rounds()),
            "non_private_rounds": [list(x) for x in self.non_private_rounds()],
        }

    # --- spending ----------------------------------------------------------------------------

    def epsilon_after(self, events: Sequence[dp_accounting.DpEvent]) -> float:
        dp_now = [e for e in self.events() if not _is_non_private(e)]
        dp_new = [e for e in events if not _is_non_private(e)]
        if not dp_new:
            return self.epsilon()
        return compose_epsilon(dp_now + dp_new, self.delta)

    def check_can_spend(
        self, events: Sequence[dp_accounting.DpEvent], mechanism: str = "unspecified"
    ) -> float:
        """Return ε after spending ``events``; raise :class:`BudgetExceeded` if over budget."""
        now = self.epsilon()
        after = self.epsilon_after(events)
        budget = self.budget_epsilon
        if after > budget:
            raise BudgetExceeded(
                f"site {self.site_id!r}: mechanism {mechanism!r} would take the privacy loss "
                f"from ε={now:.6g} to ε={after:.6g} (δ={self.delta:g}), over the budget "
                f"ε={budget:.6g}; the round is refused and nothing is shared"
            )
        return after

    def record(self, round: int, mechanism: str, events: Sequence[dp_accounting.DpEvent]) -> None:
        """Record the events of ``round``; refuses (``BudgetExceeded``) past the budget.

        Recording the same round and mechanism again with the same events is a no-op
        (idempotent resume); with different events it is an error.
        """
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ValueError(f"round must be a non-negative int, got {round!r}")
        if not mechanism or not isinstance(mechanism, str):
            raise ValueError(f"mechanism must be a non-empty string, got {mechanism!r}")
        encoded = [event_to_json(e) for e in events]
        with self._db:  # one IMMEDIATE transaction: check and insert cannot interleave
            self._db.execute("BEGIN IMMEDIATE")
            existing = [
                str(r[0])
                for r in self._db.execute(
                    "SELECT event_json FROM events WHERE round = ? AND mechanism = ? ORDER BY seq",
                    (round, mechanism),
                )
            ]
            if existing == encoded:
                logger.info("ledger: round %d (%s) already recorded", round, mechanism)
                return
            if existing:
                raise LedgerError(
                    f"{self.path}: round {round} ({mechanism}) already recorded with other events"
                )
            after = self.check_can_spend(events, mechanism)
            self._db.executemany(
                "INSERT INTO events(round, mechanism, seq, event_json, non_private) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (round, mechanism, i, text, int(_is_non_private(e)))
                    for i, (text, e) in enumerate(zip(encoded, events, strict=True))
                ],
            )
        self._cache = {None: after}
        logger.info("ledger: round %d (%s) recorded, ε now %.6g", round, mechanism, after)
