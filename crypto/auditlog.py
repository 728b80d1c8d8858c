"""Append-only, hash-chained, Ed25519-signed JSON-lines log.

Each line is one JSON object::

    {"seq": 1, "time": "2026-12-03T16:40:00.123456Z", "kind": "decrypt.granted",
     "payload": {...}, "prev_hash": "<64 hex>", "hash": "<64 hex>", "signature": "<128 hex>"}

``hash`` is the SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of
``{seq, time, kind, payload, prev_hash}``; ``prev_hash`` is the previous entry's hash (64
zeros for the first); ``signature`` is Ed25519 over ``b"cipherfed/auditlog/v1\\n" + hash``
(ASCII hex). Changing any byte of any line, deleting, inserting or reordering lines breaks
the chain; :func:`verify_log` names the first bad line. Cutting lines off the end is only
detectable against an anchor held elsewhere (the count or the head hash, see
:meth:`HashChainLog.head`).

Keys: anything with ``to_pem()`` (a private key in PEM, e.g. ``crypto.signing.SigningKey``)
or a ``cryptography`` ``Ed25519PrivateKey`` signs; anything with ``to_bytes()`` (raw
32-byte public key, e.g. ``crypto.signing.VerifyKey``), raw ``bytes`` or an
``Ed25519PublicKey`` verifies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

logger = logging.getLogger(__name__)

DOMAIN = b"cipherfed/auditlog/v1\n"
GENESIS_HASH = "0" * 64
_FIELDS = ("seq", "time", "kind", "payload", "prev_hash", "hash", "signature")


class AuditLogError(Exception):
    """The log is damaged or forged; ``line`` is the 1-based line number (0: whole file)."""

    def __init__(self, path: str | os.PathLike[str], line: int, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"line {line}" if line else "file"
        super().__init__(f"{self.path}: {where}: {reason}")


class _PemKey(Protocol):
    def to_pem(self) -> bytes | str: ...


class _RawPublicKey(Protocol):
    def to_bytes(self) -> bytes: ...


SignerLike = Ed25519PrivateKey | _PemKey
VerifierLike = Ed25519PublicKey | _RawPublicKey | bytes


def _private_key(key: SignerLike) -> Ed25519PrivateKey:
    if isinstance(key, Ed25519PrivateKey):
        return key
    pem = key.to_pem()
    loaded = serialization.load_pem_private_key(
        pem.encode() if isinstance(pem, str) else pem, password=None
    )
    if not isinstance(loaded, Ed25519PrivateKey):
        raise TypeError("the audit log signing key must be an Ed25519 private key")
    return loaded


def _public_key(key: VerifierLike) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    raw = key if isinstance(key, bytes) else key.to_bytes()
    if len(raw) != 32:
        raise TypeError(f"an Ed25519 verify key has 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8, NaN/inf refused (``ValueError``)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def entry_hash(seq: int, time: str, kind: str, payload: Mapping[str, Any], prev_hash: str) -> str:
    body = {"seq": seq, "time": time, "kind": kind, "payload": payload, "prev_hash": prev_hash}
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class LogEntry:
    seq: int
    time: str
    kind: str
    payload: Mapping[str, Any]
    prev_hash: str
    hash: str
    signature: str

    def to_json_line(self) -> bytes:
        return canonical_json({f: getattr(self, f) for f in _FIELDS}) + b"\n"


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_line(path: Path, lineno: int, raw: bytes) -> LogEntry:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditLogError(path, lineno, f"not a JSON object ({exc})") from exc
    if not isinstance(obj, dict):
        raise AuditLogError(path, lineno, "not a JSON object")
    if sorted(obj) != sorted(_FIELDS):
        raise AuditLogError(path, lineno, f"fields must be exactly {', '.join(_FIELDS)}")
    seq = obj["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise AuditLogError(path, lineno, "seq is not an integer")
    for name in ("time", "kind", "prev_hash", "hash", "signature"):
        if not isinstance(obj[name], str):
            raise AuditLogError(path, lineno, f"{name} is not a string")
    if not isinstance(obj["payload"], dict):
        raise AuditLogError(path, lineno, "payload is not a JSON object")
    return LogEntry(
        seq=seq,
        time=obj["time"],
        kind=obj["kind"],
        payload=obj["payload"],
        prev_hash=obj["prev_hash"],
        hash=obj["hash"],
        signature=obj["signature"],
    )


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                raise AuditLogError(path, lineno, "torn final line (no newline): incomplete write")
            yield lineno, raw[:-1]


def read_log(path: str | os.PathLike[str]) -> list[LogEntry]:
    """Parse every entry (structure only; use :func:`verify_log` for the chain and signatures)."""
    p = Path(path)
    return [_parse_line(p, lineno, raw) for lineno, raw in _iter_lines(p)]


def verify_log(path: str | os.PathLike[str], verify_key: VerifierLike) -> int:
    """Check the whole chain and every signature; return the number of entries.

    Raises :class:`AuditLogError` naming the first bad line.
    """
    p = Path(path)
    public = _public_key(verify_key)
    if not p.exists():
        raise AuditLogError(p, 0, "log file does not exist")
    prev = GENESIS_HASH
    count = 0
    for lineno, raw in _iter_lines(p):
        entry = _parse_line(p, lineno, raw)
        try:
            canonical = entry.to_json_line()
        except ValueError as exc:  # NaN or inf in the payload
            raise AuditLogError(p, lineno, f"payload is not canonical JSON ({exc})") from exc
        if raw + b"\n" != canonical:
            raise AuditLogError(p, lineno, "line is not in canonical form (edited?)")
        if entry.seq != lineno:
            raise AuditLogError(p, lineno, f"seq {entry.seq} != expected {lineno} (line lost?)")
        if entry.prev_hash != prev:
            raise AuditLogError(p, lineno, "prev_hash does not match the previous entry's hash")
        expected = entry_hash(entry.seq, entry.time, entry.kind, entry.payload, prev)
        if entry.hash != expected:
            raise AuditLogError(p, lineno, "hash does not match the entry's content (edited?)")
        try:
            public.verify(bytes.fromhex(entry.signature), DOMAIN + entry.hash.encode("ascii"))
        except (ValueError, InvalidSignature) as exc:
            raise AuditLogError(p, lineno, "signature does not verify") from exc
        prev = entry.hash
        count += 1
    return count


class HashChainLog:
    """Writer of one log file; thread-safe; every append is flushed and fsynced.

    Reopening an existing file continues its chain (the last entry is checked for
    structure; call :func:`verify_log` for a full audit).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        signing_key: SignerLike,
        *,
        clock: Callable[[], str] = _utc_now,
    ) -> None:
        self.path = Path(path)
        self._key = _private_key(signing_key)
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._head = GENESIS_HASH
        if self.path.exists():
            last: LogEntry | None = None
            for lineno, raw in _iter_lines(self.path):
                last = _parse_line(self.path, lineno, raw)
                if last.seq != lineno:
                    raise AuditLogError(self.path, lineno, f"seq {last.seq} != expected {lineno}")
            if last is not None:
                self._seq, self._head = last.seq, last.hash
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)

    def head(self) -> tuple[int, str]:
        """``(number of entries, hash of the last entry)`` — an anchor against truncation."""
        with self._lock:
            return self._seq, self._head

    def append(self, kind: str, payload: Mapping[str, Any]) -> LogEntry:
        """Add one entry. ``payload`` must be JSON-serializable (no NaN/inf)."""
        if not isinstance(kind, str) or not kind:
            raise ValueError("kind must be a non-empty string")
        # Normalise the payload through JSON so what is hashed is what is read back.
        body = json.loads(canonical_json(dict(payload)))
        with self._lock:
            seq = self._seq + 1
            time = self._clock()
            digest = entry_hash(seq, time, kind, body, self._head)
            signature = self._key.sign(DOMAIN + digest.encode("ascii")).hex()
            entry = LogEntry(seq, time, kind, body, self._head, digest, signature)
            with self.path.open("ab") as fh:
                fh.write(entry.to_json_line())
                fh.flush()
                os.fsync(fh.fileno())
            self._seq, self._head = seq, digest
        logger.debug("audit %s #%d %s", self.path.name, seq, kind)
        return entry
