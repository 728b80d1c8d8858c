"""The key holder's SQLite state (WAL): which rounds were decrypted, and their released values.

A round is recorded in the same transaction as the values it released, so a restart never
forgets a decryption, and an identical retry of a granted request (a coordinator that
crashed before persisting the answer) gets the same released values back instead of a
second decryption with fresh noise. The released values are what the coordinator already
received (noise-flooded); nothing secret is stored here.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from proto.wire import DecryptResult

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decryptions (
    round INTEGER PRIMARY KEY,
    request_digest TEXT NOT NULL,
    granted_unix REAL NOT NULL,
    sites TEXT NOT NULL,
    released TEXT NOT NULL,
    withheld TEXT NOT NULL,
    signature BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS released_sums (
    round INTEGER NOT NULL REFERENCES decryptions(round),
    chunk_id INTEGER NOT NULL,
    flooding_std REAL NOT NULL,
    vals BLOB NOT NULL,
    PRIMARY KEY (round, chunk_id)
);
"""


class StoreError(Exception):
    """The state database is foreign, damaged, or a round is recorded twice."""


class DecryptionStore:
    """Thread-safe access to ``keyholder.sqlite``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        federation_id: str,
        params_fingerprint: str,
        *,
        keep_released_rounds: int = 2,
    ) -> None:
        if keep_released_rounds < 1:
            raise ValueError("keep_released_rounds must be >= 1")
        self.path = Path(path)
        self.keep_released_rounds = keep_released_rounds
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._check_meta(federation_id, params_fingerprint)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable key-holder database: {exc}") from exc
        os.chmod(self.path, 0o600)

    def _check_meta(self, federation_id: str, params_fingerprint: str) -> None:
        want = {
            "schema_version": str(SCHEMA_VERSION),
            "federation_id": federation_id,
            "params_fingerprint": params_fingerprint,
        }
        have = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not have:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", sorted(want.items()))
            self._db.execute("COMMIT")
            return
        for key, value in want.items():
            if have.get(key) != value:
                raise StoreError(
                    f"{self.path}: {key} is {have.get(key)!r}, expected {value!r} "
                    "(state folder of another federation or key?)"
                )

    def decrypted_rounds(self) -> dict[int, str]:
        """Round -> hex digest of the request that was granted."""
        with self._lock:
            rows = self._db.execute("SELECT round, request_digest FROM decryptions").fetchall()
        return {int(r): str(d) for r, d in rows}

    def record(
        self,
        request_digest: str,
        sites: tuple[str, ...],
        withheld: tuple[int, ...],
        result: DecryptResult,
    ) -> None:
        """Persist a granted decryption and its released values in one transaction."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO decryptions VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        result.round,
                        request_digest,
                        time.time(),
                        json.dumps(list(sites)),
                        json.dumps(sorted(result.sums)),
                        json.dumps(list(withheld)),
                        result.keyholder_signature,
                    ),
                )
                self._db.executemany(
                    "INSERT INTO released_sums VALUES (?, ?, ?, ?)",
                    [
                        (result.round, cid, float(result.flooding_std[cid]), result.packed(cid))
                        for cid in sorted(result.sums)
                    ],
                )
                # Released values are kept only for recent rounds (identical retries come
                # right after a crash); the decision record itself is kept forever.
                self._db.execute(
                    "DELETE FROM released_sums WHERE round <= "
                    "(SELECT MAX(round) FROM decryptions) - ?",
                    (self.keep_released_rounds,),
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"round {result.round} is already recorded") from exc
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def load_result(self, federation_id: str, round_: int) -> DecryptResult:
        """The values released for ``round_`` (for an identical retry)."""
        with self._lock:
            head = self._db.execute(
                "SELECT signature FROM decryptions WHERE round = ?", (round_,)
            ).fetchone()
            rows = self._db.execute(
                "SELECT chunk_id, flooding_std, vals FROM released_sums WHERE round = ? "
                "ORDER BY chunk_id",
                (round_,),
            ).fetchall()
        if head is None:
            raise StoreError(f"round {round_} was never decrypted")
        if not rows:
            raise StoreError(f"the values released for round {round_} are no longer kept")
        sums = {int(c): np.frombuffer(v, dtype="<f8").astype(np.float64) for c, _, v in rows}
        stds = {int(c): float(s) for c, s, _ in rows}
        return DecryptResult(federation_id, round_, sums, stds, bytes(head[0]))

    def close(self) -> None:
        with self._lock:
            self._db.close()
