"""Keys as capabilities: public context has no secret key; encrypted secret key at rest."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import numpy as np
import pytest

import crypto
from crypto import (
    DEFAULT_PRESET,
    PRESETS,
    ChunkLayout,
    InvalidUpdate,
    PublicContext,
    _seal,
    encrypt_update,
    weighted_sum,
)
from crypto.secret import SecretContext

PARAMS = PRESETS[DEFAULT_PRESET]
ROOT = Path(__file__).resolve().parents[1]
SCRYPT_FAST = 10  # 2**10: keeps tests fast; production default is 2**15


@pytest.fixture(scope="module")
def secret() -> SecretContext:
    return SecretContext.generate(PARAMS)


def _secret_windows(secret: SecretContext) -> list[bytes]:
    raw = _seal.secret_key_polynomial_bytes(secret._secret_key_blob, PARAMS.poly_modulus_degree)
    assert len(raw) > 2 * 8 * PARAMS.poly_modulus_degree  # two RNS components
    tail = raw[-2 * 8 * PARAMS.poly_modulus_degree :]
    return [tail[i : i + 32] for i in range(0, len(tail), len(tail) // 16)] + [
        secret._secret_key_blob[-64:]
    ]


def test_no_public_serialization_contains_the_secret_key(secret: SecretContext) -> None:
    pub_bytes = secret.public().to_bytes()
    layout = ChunkLayout.from_shapes([("w", (5000,))], PARAMS.values_per_ciphertext)
    upd = encrypt_update(secret.public(), layout, np.linspace(-1, 1, 5000))
    agg = weighted_sum(secret.public(), [upd], [2])
    pk_raw = _seal.seal_payload(secret.public()._public_key_blob, 1 << 22)
    for blob in (pub_bytes, pk_raw, upd.to_bytes(), agg.to_bytes()):
        for window in _secret_windows(secret):
            assert window not in blob


def test_public_context_round_trip_cannot_decrypt(secret: SecretContext) -> None:
    pub = PublicContext.from_bytes(secret.public().to_bytes())
    assert pub.is_private() is False and secret.is_private() is True
    assert pub.fingerprint == secret.fingerprint and pub.key_id == secret.public().key_id
    assert not any(hasattr(pub, n) for n in ("decrypt", "decrypt_aggregate", "_decryptor"))
    assert not any("secret" in n.lower() for n in vars(pub))


def test_public_context_rejects_bad_bytes(secret: SecretContext) -> None:
    blob = secret.public().to_bytes()
    cases = [
        (b"", "truncated"),
        (b"nope" + blob[4:], "bad magic"),
        (blob[:4] + b"\x05" + blob[5:], "version 5"),
        (blob[:-10], "truncated or padded"),
        (blob[:60], "truncated"),
        (blob[:5] + b"\x00" * 32 + blob[37:], "fingerprint"),
    ]
    for bad, message in cases:
        with pytest.raises(InvalidUpdate, match=message):
            PublicContext.from_bytes(bad)
    # parameters JSON tampered (and fingerprint kept): rejected
    plen = struct.unpack_from("<I", blob, 37)[0]
    pj = blob[41 : 41 + plen].replace(b'"scale_bits":46', b'"scale_bits":45')
    with pytest.raises(InvalidUpdate, match="fingerprint"):
        PublicContext.from_bytes(blob[:41] + pj + blob[41 + plen :])
    # a public key of other parameters: SEAL refuses it
    other = SecretContext.generate(PRESETS["n8192"]).public()
    with pytest.raises(InvalidUpdate, match="public key"):
        PublicContext(PARAMS, other._public_key_blob)


def test_secret_key_export_import_round_trip(secret: SecretContext) -> None:
    blob = secret.export_secret_key_encrypted(b"correct horse", scrypt_log2_n=SCRYPT_FAST)
    assert blob[:4] == b"CFsk"
    for window in _secret_windows(secret):
        assert window not in blob
    back = SecretContext.import_secret_key_encrypted(blob, b"correct horse")
    assert back.public().key_id == secret.public().key_id
    layout = ChunkLayout.from_shapes([("w", (100,))], PARAMS.values_per_ciphertext)
    v = np.linspace(-1, 1, 100)
    agg = weighted_sum(secret.public(), [encrypt_update(secret.public(), layout, v)], [1])
    assert np.abs(back._decrypt_exact(agg)[0] - v).max() < 1e-6


def test_secret_key_blob_header_holds_kdf_parameters(secret: SecretContext) -> None:
    blob = secret.export_secret_key_encrypted(b"pw", scrypt_log2_n=11)
    plen = struct.unpack_from("<I", blob, 37)[0]
    kdf, log2_n, r, p = struct.unpack_from("<BBBB", blob, 41 + plen)
    assert (kdf, log2_n, r, p) == (1, 11, 8, 1)


def test_secret_key_import_failures(secret: SecretContext) -> None:
    blob = secret.export_secret_key_encrypted(b"pw", scrypt_log2_n=SCRYPT_FAST)
    with pytest.raises(InvalidUpdate, match="wrong passphrase or tampered"):
        SecretContext.import_secret_key_encrypted(blob, b"wrong")
    tampered = blob[:-20] + bytes([blob[-20] ^ 1]) + blob[-19:]
    with pytest.raises(InvalidUpdate, match="wrong passphrase or tampered"):
        SecretContext.import_secret_key_encrypted(tampered, b"pw")
    plen = struct.unpack_from("<I", blob, 37)[0]
    kdf_off = 41 + plen
    salt_flipped = blob[: kdf_off + 4] + bytes([blob[kdf_off + 4] ^ 1]) + blob[kdf_off + 5 :]
    with pytest.raises(InvalidUpdate, match="wrong passphrase or tampered"):
        SecretContext.import_secret_key_encrypted(salt_flipped, b"pw")
    huge_n = blob[: kdf_off + 1] + bytes([30]) + blob[kdf_off + 2 :]
    with pytest.raises(InvalidUpdate, match="KDF"):
        SecretContext.import_secret_key_encrypted(huge_n, b"pw")
    for bad, message in [
        (b"", "truncated"),
        (blob[:50], "truncated"),
        (b"XXXX" + blob[4:], "bad magic"),
        (blob[:4] + b"\x09" + blob[5:], "version 9"),
    ]:
        with pytest.raises(InvalidUpdate, match=message):
            SecretContext.import_secret_key_encrypted(bad, b"pw")
    with pytest.raises(ValueError, match="passphrase"):
        secret.export_secret_key_encrypted(b"")
    with pytest.raises(ValueError, match="scrypt_log2_n"):
        secret.export_secret_key_encrypted(b"pw", scrypt_log2_n=40)


def test_secret_context_is_not_reexported_and_coordinator_cannot_name_it() -> None:
    assert not hasattr(crypto, "SecretContext")
    assert "SecretContext" not in crypto.__all__
    for path in sorted((ROOT / "coordinator").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "crypto.secret", f"{path} imports crypto.secret"
                assert all(a.name != "SecretContext" for a in node.names), path
                if node.module == "crypto":
                    assert all(a.name != "secret" for a in node.names), path
            elif isinstance(node, ast.Import):
                assert all(a.name != "crypto.secret" for a in node.names), path
            elif isinstance(node, ast.Name | ast.Attribute):
                name = node.id if isinstance(node, ast.Name) else node.attr
                assert name != "SecretContext", f"{path} names SecretContext"


def test_repr_does_not_leak(secret: SecretContext) -> None:
    assert repr(secret) == "SecretContext(params='n4096')"


def test_secret_key_temporary_files_are_zeroed_before_removal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    removed: list[bytes] = []
    real_unlink = _seal.os.unlink

    def unlink(path: str) -> None:
        removed.append(Path(path).read_bytes())
        real_unlink(path)

    monkeypatch.setattr(_seal.os, "unlink", unlink)
    secret = SecretContext.generate(PARAMS)
    sk_len = len(secret._secret_key_blob)
    # generate: saved secret key, saved public key; decryptor: loaded secret key
    wiped = [b for b in removed if len(b) == sk_len]
    assert len(wiped) >= 2 and all(b == bytes(sk_len) for b in wiped)
    assert any(b and b != bytes(len(b)) for b in removed)  # the public key is not wiped
