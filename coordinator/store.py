"""The coordinator's durable state in SQLite (WAL): rounds, accepted updates with their
receipts, global-model checkpoints, key-holder results and enrolments.

Large payloads (ciphertexts, model vectors, decrypted sums) live in the content-addressed
:class:`~coordinator.blobs.BlobStore`; rows name them by digest. Every write is one
transaction, and blobs are written (and fsynced) before the row that names them, so after
a crash every row's blobs exist.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from coordinator.rounds import Accepted, Phase, RoundState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    attempt INTEGER NOT NULL,
    phase TEXT NOT NULL,
    opened_at REAL NOT NULL,
    deadline REAL NOT NULL,
    model_digest TEXT NOT NULL,
    closed_at REAL,
    n_accepted INTEGER,
    outcome TEXT,
    stats TEXT
);
CREATE TABLE IF NOT EXISTS submissions (
    round INTEGER NOT NULL,
    site_id TEXT NOT NULL,
    envelope BLOB NOT NULL,
    signature BLOB NOT NULL,
    envelope_digest TEXT NOT NULL,
    weight INTEGER NOT NULL,
    chunks TEXT NOT NULL,
    n_bytes INTEGER NOT NULL,
    received_at REAL NOT NULL,
    receipt_signature BLOB NOT NULL,
    timings TEXT NOT NULL,
    PRIMARY KEY (round, site_id)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    round INTEGER PRIMARY KEY,
    model_digest TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS keyholder_results (
    round INTEGER PRIMARY KEY,
    sums_digest TEXT NOT NULL,
    flooding TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS enrolments (
    site_id TEXT PRIMARY KEY,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class StoredSubmission:
    """An accepted update as persisted: enough to rebuild it and to re-send its receipt."""

    site_id: str
    round: int
    envelope: bytes
    signature: bytes
    envelope_digest: str
    weight: int
    chunk_blobs: Mapping[int, str]
    n_bytes: int
    received_at: float
    receipt_signature: bytes
    timings: Mapping[str, float]

    def accepted(self) -> Accepted:
        return Accepted(
            site_id=self.site_id,
            round=self.round,
            weight=self.weight,
            chunk_ids=tuple(sorted(self.chunk_blobs)),
            envelope_digest=self.envelope_digest,
            received_at=self.received_at,
        )


class CoordinatorStore:
    """Thread-safe access to the coordinator database (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:  # a corrupt file or not ours: refuse, leave it
            self._db.close()
            raise ValueError(f"{self.path}: not a usable coordinator database ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    # -- meta -------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- enrolment --------------------------------------------------------------------
    def enrol(self, site_id: str, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO enrolments (site_id, first_at, last_at) VALUES (?, ?, ?) "
                "ON CONFLICT(site_id) DO UPDATE SET last_at = excluded.last_at",
                (site_id, now, now),
            )

    def enrolled(self) -> set[str]:
        return {str(r[0]) for r in self._query("SELECT site_id FROM enrolments")}

    # -- rounds -----------------------------------------------------------------------
    def save_round(self, state: RoundState) -> None:
        """Insert or update the round row (phase, attempt, deadline)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO rounds (round, attempt, phase, opened_at, deadline, model_digest) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(round) DO UPDATE SET "
                "attempt = excluded.attempt, phase = excluded.phase, "
                "deadline = excluded.deadline",
                (
                    state.round,
                    state.attempt,
                    state.phase.value,
                    state.opened_at,
                    state.deadline,
                    state.model_digest,
                ),
            )

    def complete_round(
        self,
        round_no: int,
        new_model_digest: str,
        now: float,
        n_accepted: int,
        outcome: str,
        stats: Mapping[str, float],
    ) -> None:
        """Mark the round done and checkpoint ``W(t)``, in one transaction."""
        with self._tx() as db:
            db.execute(
                "UPDATE rounds SET phase = ?, closed_at = ?, n_accepted = ?, outcome = ?, "
                "stats = ? WHERE round = ?",
                (Phase.DONE.value, now, n_accepted, outcome, json.dumps(dict(stats)), round_no),
            )
            db.execute(
                "INSERT OR REPLACE INTO checkpoints (round, model_digest, created_at) "
                "VALUES (?, ?, ?)",
                (round_no, new_model_digest, now),
            )

    def load_latest_round(self) -> RoundState | None:
        """The newest round with every update accepted in it."""
        rows = self._query(
            "SELECT round, attempt, phase, opened_at, deadline, model_digest FROM rounds "
            "ORDER BY round DESC LIMIT 1"
        )
        if not rows:
            return None
        r = rows[0]
        return RoundState(
            round=int(r[0]),
            attempt=int(r[1]),
            phase=Phase(r[2]),
            opened_at=float(r[3]),
            deadline=float(r[4]),
            model_digest=str(r[5]),
            accepted=MappingProxyType(
                {s.site_id: s.accepted() for s in self.submissions(int(r[0]))}
            ),
        )

    def round_stats(self) -> list[dict[str, Any]]:
        """Every finished round: number, participants, outcome and its timing stats."""
        out: list[dict[str, Any]] = []
        for r in self._query(
            "SELECT round, n_accepted, outcome, stats, opened_at, closed_at FROM rounds "
            "WHERE phase = ? ORDER BY round",
            (Phase.DONE.value,),
        ):
            out.append(
                {
                    "round": int(r[0]),
                    "participants": int(r[1]),
                    "outcome": str(r[2]),
                    "stats": json.loads(r[3]) if r[3] else {},
                    "opened_at": float(r[4]),
                    "closed_at": float(r[5]),
                }
            )
        return out

    # -- checkpoints ------------------------------------------------------------------
    def save_checkpoint(self, round_no: int, model_digest: str, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO checkpoints (round, model_digest, created_at) "
                "VALUES (?, ?, ?)",
                (round_no, model_digest, now),
            )

    def checkpoint(self, round_no: int) -> str | None:
        rows = self._query("SELECT model_digest FROM checkpoints WHERE round = ?", (round_no,))
        return str(rows[0][0]) if rows else None

    def checkpoints(self) -> list[tuple[int, str]]:
        return [
            (int(r[0]), str(r[1]))
            for r in self._query("SELECT round, model_digest FROM checkpoints ORDER BY round")
        ]

    # -- submissions ------------------------------------------------------------------
    def add_submission(self, sub: StoredSubmission) -> None:
        """Persist an accepted update; ``sqlite3.IntegrityError`` if the site already has one."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO submissions (round, site_id, envelope, signature, envelope_digest, "
                "weight, chunks, n_bytes, received_at, receipt_signature, timings) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sub.round,
                    sub.site_id,
                    sub.envelope,
                    sub.signature,
                    sub.envelope_digest,
                    sub.weight,
                    json.dumps({str(k): v for k, v in sorted(sub.chunk_blobs.items())}),
                    sub.n_bytes,
                    sub.received_at,
                    sub.receipt_signature,
                    json.dumps(dict(sub.timings)),
                ),
            )

    def submissions(self, round_no: int) -> list[StoredSubmission]:
        rows = self._query(
            "SELECT site_id, round, envelope, signature, envelope_digest, weight, chunks, "
            "n_bytes, received_at, receipt_signature, timings FROM submissions "
            "WHERE round = ? ORDER BY site_id",
            (round_no,),
        )
        return [
            StoredSubmission(
                site_id=str(r[0]),
                round=int(r[1]),
                envelope=bytes(r[2]),
                signature=bytes(r[3]),
                envelope_digest=str(r[4]),
                weight=int(r[5]),
                chunk_blobs={int(k): str(v) for k, v in json.loads(r[6]).items()},
                n_bytes=int(r[7]),
                received_at=float(r[8]),
                receipt_signature=bytes(r[9]),
                timings={str(k): float(v) for k, v in json.loads(r[10]).items()},
            )
            for r in rows
        ]

    # -- key-holder results -----------------------------------------------------------
    def save_keyholder_result(
        self, round_no: int, sums_digest: str, flooding: Mapping[int, float], now: float
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO keyholder_results (round, sums_digest, flooding, "
                "received_at) VALUES (?, ?, ?, ?)",
                (round_no, sums_digest, json.dumps({str(k): v for k, v in flooding.items()}), now),
            )

    def keyholder_result(self, round_no: int) -> tuple[str, dict[int, float]] | None:
        rows = self._query(
            "SELECT sums_digest, flooding FROM keyholder_results WHERE round = ?", (round_no,)
        )
        if not rows:
            return None
        return str(rows[0][0]), {int(k): float(v) for k, v in json.loads(rows[0][1]).items()}
