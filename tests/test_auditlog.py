"""Hash-chained audit log: appends verify; any edit, deletion or reorder is caught by line."""

from __future__ import annotations

import itertools
import json
import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto.auditlog import GENESIS_HASH, AuditLogError, HashChainLog, read_log, verify_log

SEED = bytes(range(32))


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SEED)


class _PemKey:
    """Duck-typed key like crypto.signing.SigningKey / VerifyKey."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key

    def to_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def to_bytes(self) -> bytes:
        return self.key.public_key().public_bytes_raw()


def _write(path: Path, n: int = 5) -> HashChainLog:
    clock = iter(f"2026-12-03T16:00:{i:02d}.000000Z" for i in range(100))
    log = HashChainLog(path, _key(), clock=lambda: next(clock))
    for i in range(n):
        log.append("event", {"i": i, "text": f"entry {i}", "nested": {"x": [1, 2.5]}})
    return log


def test_append_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _write(path)
    assert verify_log(path, _key().public_key()) == 5
    entries = read_log(path)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert log.head() == (5, entries[-1].hash)
    assert os.stat(path).st_mode & 0o777 == 0o600
    # The same key through the duck-typed wrappers (PEM signer, raw verifier).
    pem = _PemKey(_key())
    assert verify_log(path, pem) == 5
    assert verify_log(path, pem.to_bytes()) == 5


def test_reopen_continues_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    log = HashChainLog(path, _PemKey(_key()))
    entry = log.append("restart", {"ok": True})
    assert entry.seq == 4
    assert verify_log(path, _key().public_key()) == 4


def test_every_changed_byte_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    original = path.read_bytes()
    public = _key().public_key()
    newline_positions = {i for i, b in enumerate(original) if b == ord("\n")}
    for pos in range(0, len(original), 7):
        if pos in newline_positions:
            continue
        data = bytearray(original)
        data[pos] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(AuditLogError) as info:
            verify_log(path, public)
        expected_line = original[:pos].count(b"\n") + 1
        assert info.value.line == expected_line, (pos, str(info.value))
    path.write_bytes(original)
    assert verify_log(path, public) == 3


def test_edited_payload_with_recomputed_hash_fails_signature(tmp_path: Path) -> None:
    from crypto.auditlog import entry_hash

    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    lines = path.read_bytes().splitlines()
    obj = json.loads(lines[2])
    obj["payload"]["i"] = 99
    obj["hash"] = entry_hash(obj["seq"], obj["time"], obj["kind"], obj["payload"], obj["prev_hash"])
    lines[2] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(AuditLogError, match="line 3: signature does not verify"):
        verify_log(path, _key().public_key())


def test_deleted_reordered_and_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 4)
    lines = path.read_bytes().splitlines(keepends=True)
    public = _key().public_key()

    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    with pytest.raises(AuditLogError, match="line 2: seq 3 != expected 2"):
        verify_log(path, public)

    path.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    with pytest.raises(AuditLogError, match="line 1"):
        verify_log(path, public)

    path.write_bytes(b"".join(lines) + b'{"seq": 5')
    with pytest.raises(AuditLogError, match="line 5: torn final line"):
        verify_log(path, public)

    path.write_bytes(b"".join(lines[:2]) + b"not json\n")
    with pytest.raises(AuditLogError, match="line 3: not a JSON object"):
        verify_log(path, public)

    path.write_bytes(b"".join(lines[:1]) + lines[1].replace(b'"i":1', b'"i":NaN'))
    with pytest.raises(AuditLogError, match="line 2: payload is not canonical JSON"):
        verify_log(path, public)


def test_wrong_key_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    other = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    with pytest.raises(AuditLogError, match="line 1: signature does not verify"):
        verify_log(path, other)
    with pytest.raises(AuditLogError, match="does not exist"):
        verify_log(tmp_path / "nope.jsonl", other)
    with pytest.raises(TypeError):
        verify_log(path, b"short")


def test_bad_payload_rejected(tmp_path: Path) -> None:
    log = HashChainLog(tmp_path / "a.jsonl", _key())
    with pytest.raises(ValueError):
        log.append("x", {"v": float("nan")})
    with pytest.raises(ValueError):
        log.append("", {})
    assert log.head()[0] == 0


def test_concurrent_appends_keep_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = HashChainLog(path, _key())

    def worker(t: int) -> None:
        for i in range(20):
            log.append("w", {"t": t, "i": i})

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert verify_log(path, _key().public_key()) == 80
