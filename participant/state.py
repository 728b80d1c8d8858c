"""The participant daemon's own durable state (SQLite, WAL).

For each round the daemon records, before anything leaves the site, the exact signed update
it is about to send ("prepared"); after the coordinator's receipt, "submitted"; when the
privacy ledger refuses the round, "skipped". After a restart it re-sends the prepared update
byte for byte (never a second, different update), and never trains again for a round it has
prepared, submitted or skipped.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class RoundStatus(enum.Enum):
    PREPARED = "prepared"
    SUBMITTED = "submitted"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class PreparedUpdate:
    """A signed update ready to upload."""

    round: int
    envelope: bytes
    signature: bytes
    chunks: Mapping[int, bytes]
    timings: Mapping[str, float]

    @property
    def n_bytes(self) -> int:
        return sum(len(b) for b in self.chunks.values())


@dataclass(frozen=True)
class RoundRecord:
    round: int
    status: RoundStatus
    reason: str
    timings: Mapping[str, float]
    n_bytes: int
    receipt: bytes


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    envelope BLOB,
    signature BLOB,
    timings TEXT NOT NULL DEFAULT '{}',
    n_bytes INTEGER NOT NULL DEFAULT 0,
    receipt BLOB NOT NULL DEFAULT x'',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    round INTEGER NOT NULL,
    chunk_id INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (round, chunk_id)
);
"""


class DaemonState:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:  # a corrupt file or not ours: refuse, leave it
            self._db.close()
            raise ValueError(f"{self.path}: not a usable participant state ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def bind(self, federation_id: str, site_id: str) -> None:
        """Tie this state to one site of one federation (``ValueError`` on a mismatch)."""
        with self._lock:
            for key, value in (("federation_id", federation_id), ("site_id", site_id)):
                row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
                elif row[0] != value:
                    raise ValueError(
                        f"{self.path} holds the state of {key} {row[0]!r}, not {value!r}"
                    )

    def record(self, round_no: int) -> RoundRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT status, reason, timings, n_bytes, receipt FROM rounds WHERE round = ?",
                (round_no,),
            ).fetchone()
        if row is None:
            return None
        return RoundRecord(
            round=round_no,
            status=RoundStatus(row[0]),
            reason=str(row[1]),
            timings=json.loads(row[2]),
            n_bytes=int(row[3]),
            receipt=bytes(row[4]),
        )

    def records(self) -> list[RoundRecord]:
        with self._lock:
            rounds = [
                int(r[0]) for r in self._db.execute("SELECT round FROM rounds ORDER BY round")
            ]
        return [r for r in map(self.record, rounds) if r is not None]

    def save_prepared(self, update: PreparedUpdate) -> None:
        """Persist a signed update; refuses (``ValueError``) if the round already has a record."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute(
                    "SELECT 1 FROM rounds WHERE round = ?", (update.round,)
                ).fetchone():
                    raise ValueError(f"round {update.round} already has a recorded update")
                self._db.execute(
                    "INSERT INTO rounds (round, status, envelope, signature, timings, n_bytes, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        update.round,
                        RoundStatus.PREPARED.value,
                        update.envelope,
                        update.signature,
                        json.dumps(dict(update.timings)),
                        update.n_bytes,
                        time.time(),
                    ),
                )
                self._db.executemany(
                    "INSERT INTO chunks (round, chunk_id, data) VALUES (?, ?, ?)",
                    [(update.round, cid, data) for cid, data in sorted(update.chunks.items())],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def prepared(self, round_no: int) -> PreparedUpdate | None:
        with self._lock:
            row = self._db.execute(
                "SELECT envelope, signature, timings FROM rounds WHERE round = ? AND status = ?",
                (round_no, RoundStatus.PREPARED.value),
            ).fetchone()
            if row is None:
                return None
            chunks = {
                int(c): bytes(d)
                for c, d in self._db.execute(
                    "SELECT chunk_id, data FROM chunks WHERE round = ? ORDER BY chunk_id",
                    (round_no,),
                )
            }
        return PreparedUpdate(round_no, bytes(row[0]), bytes(row[1]), chunks, json.loads(row[2]))

    def mark_submitted(
        self, round_no: int, receipt: bytes, extra_timings: Mapping[str, float], reason: str = ""
    ) -> None:
        """Record the receipt; the stored ciphertexts are dropped (they have been delivered)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT timings FROM rounds WHERE round = ?", (round_no,)
                ).fetchone()
                timings = {**(json.loads(row[0]) if row else {}), **dict(extra_timings)}
                self._db.execute(
                    "UPDATE rounds SET status = ?, receipt = ?, timings = ?, reason = ?, "
                    "updated_at = ? WHERE round = ?",
                    (
                        RoundStatus.SUBMITTED.value,
                        receipt,
                        json.dumps(timings),
                        reason,
                        time.time(),
                        round_no,
                    ),
                )
                self._db.execute("DELETE FROM chunks WHERE round = ?", (round_no,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def mark_skipped(self, round_no: int, reason: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO rounds (round, status, reason, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(round) DO UPDATE SET status = excluded.status, "
                "reason = excluded.reason, updated_at = excluded.updated_at",
                (round_no, RoundStatus.SKIPPED.value, reason, time.time()),
            )
