"""Ed25519 envelopes and domain-separated messages: known answers, tampering, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import (
    InvalidUpdate,
    SigningKey,
    UpdateEnvelope,
    VerifyKey,
    sign_envelope,
    sign_message,
    verify_envelope,
    verify_envelope_bytes,
    verify_message,
)
from crypto.signing import envelope_digests_match

VECTORS = Path(__file__).parent / "vectors" / "crypto"
KAT = json.loads((VECTORS / "envelope_kat.json").read_text())
SEED = bytes.fromhex(KAT["seed"])


def kat_envelope() -> UpdateEnvelope:
    e = KAT["envelope"]
    return UpdateEnvelope(
        federation_id=e["federation_id"],
        round=e["round"],
        site_id=e["site_id"],
        chunk_ids=tuple(e["chunk_ids"]),
        digests={int(k): v for k, v in e["digests"].items()},
        weight=e["weight"],
        layout_fingerprint=e["layout_fingerprint"],
        params_fingerprint=e["params_fingerprint"],
    )


def test_known_answer_envelope_bytes_and_signature() -> None:
    key = SigningKey.from_seed(SEED)
    env = kat_envelope()
    assert key.verify_key().to_bytes().hex() == KAT["verify_key"]
    assert env.canonical_bytes().hex() == KAT["canonical_bytes"]
    assert sign_envelope(key, env).hex() == KAT["signature"]
    assert (
        sign_message(key, KAT["message"]["domain"], bytes.fromhex(KAT["message"]["payload"])).hex()
        == (KAT["message"]["signature"])
    )


def test_verify_returns_the_envelope() -> None:
    key = SigningKey.from_seed(SEED)
    env = kat_envelope()
    sig = bytes.fromhex(KAT["signature"])
    assert verify_envelope(key.verify_key(), env, sig) is env
    parsed = verify_envelope_bytes(key.verify_key(), env.canonical_bytes(), sig)
    assert parsed == env and parsed.chunk_ids == (0, 3, 17)
    assert envelope_digests_match(
        parsed, {17: env.digests[17], 0: env.digests[0], 3: env.digests[3]}
    )


def test_chunk_ids_are_canonically_sorted() -> None:
    env = kat_envelope()
    shuffled = UpdateEnvelope(
        env.federation_id,
        env.round,
        env.site_id,
        (17, 0, 3),
        dict(env.digests),
        env.weight,
        env.layout_fingerprint,
        env.params_fingerprint,
    )
    assert shuffled.canonical_bytes() == env.canonical_bytes()


@pytest.mark.parametrize(
    "field",
    [
        "federation_id",
        "round",
        "site_id",
        "weight",
        "layout_fingerprint",
        "params_fingerprint",
        "digest",
    ],
)
def test_any_changed_field_breaks_the_signature(field: str) -> None:
    key = SigningKey.from_seed(SEED)
    env = kat_envelope()
    sig = sign_envelope(key, env)
    kw = {
        "federation_id": env.federation_id,
        "round": env.round,
        "site_id": env.site_id,
        "chunk_ids": env.chunk_ids,
        "digests": dict(env.digests),
        "weight": env.weight,
        "layout_fingerprint": env.layout_fingerprint,
        "params_fingerprint": env.params_fingerprint,
    }
    if field == "digest":
        kw["digests"] = {**env.digests, 3: "f" * 64}
    elif field in ("round", "weight"):
        kw[field] = kw[field] + 1  # type: ignore[operator]
    elif field.endswith("fingerprint"):
        kw[field] = "e" * 64
    else:
        kw[field] = str(kw[field]) + "x"
    with pytest.raises(InvalidUpdate, match="bad signature"):
        verify_envelope(key.verify_key(), UpdateEnvelope(**kw), sig)  # type: ignore[arg-type]


def test_wrong_key_and_bad_signatures_are_refused() -> None:
    key = SigningKey.from_seed(SEED)
    other = SigningKey.generate()
    env = kat_envelope()
    sig = sign_envelope(key, env)
    with pytest.raises(InvalidUpdate, match="bad signature"):
        verify_envelope(other.verify_key(), env, sig)
    with pytest.raises(InvalidUpdate, match="bad signature"):
        verify_envelope(key.verify_key(), env, bytes([sig[0] ^ 1]) + sig[1:])
    with pytest.raises(InvalidUpdate, match="64 bytes"):
        verify_envelope(key.verify_key(), env, sig[:-1])
    with pytest.raises(InvalidUpdate, match="64 bytes"):
        verify_envelope(key.verify_key(), env, "00" * 64)  # type: ignore[arg-type]


def test_domain_separation() -> None:
    key = SigningKey.from_seed(SEED)
    vk = key.verify_key()
    sig = sign_message(key, "cipherfed/decrypt-request/v1", b"payload")
    assert verify_message(vk, "cipherfed/decrypt-request/v1", b"payload", sig) == b"payload"
    with pytest.raises(InvalidUpdate):
        verify_message(vk, "cipherfed/receipt/v1", b"payload", sig)
    with pytest.raises(InvalidUpdate):
        verify_message(vk, "cipherfed/decrypt-request/v1", b"payloaD", sig)
    env = kat_envelope()
    env_sig = sign_envelope(key, env)
    with pytest.raises(InvalidUpdate):  # an envelope signature is not a receipt signature
        verify_message(vk, "cipherfed/receipt/v1", env.canonical_bytes(), env_sig)
    for bad in ("", "has space", "x" * 201, "é"):
        with pytest.raises(ValueError, match="domain"):
            sign_message(key, bad, b"")
    with pytest.raises(TypeError):
        sign_message(key, "d", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sign_message(vk, "d", b"")  # type: ignore[arg-type]


def test_keys_serialize() -> None:
    key = SigningKey.from_seed(SEED)
    back = SigningKey.from_pem(key.to_pem())
    assert back.verify_key() == key.verify_key()
    assert SigningKey.from_pem(key.to_pem().decode()).verify_key() == key.verify_key()
    assert VerifyKey.from_bytes(key.verify_key().to_bytes()) == key.verify_key()
    assert hash(VerifyKey.from_bytes(key.verify_key().to_bytes())) == hash(key.verify_key())
    with pytest.raises(InvalidUpdate, match="32 bytes"):
        VerifyKey.from_bytes(b"\x01" * 31)
    with pytest.raises(ValueError, match="PEM"):
        SigningKey.from_pem(b"-----BEGIN NOTHING-----")
    with pytest.raises(ValueError, match="seed"):
        SigningKey.from_seed(b"short")
    assert "SigningKey" in repr(key) and KAT["verify_key"][:16] in repr(key)


def test_canonical_bytes_parser_rejects_bad_input() -> None:
    good = kat_envelope().canonical_bytes()
    for bad, message in [
        (b"", "truncated"),
        (b"XXXXXX" + good[6:], "bad magic"),
        (good[:-1], "truncated"),
        (good + b"\x00", "trailing"),
        (good[:6] + b"\xff\xff\xff\xff" + good[10:], "too long"),
    ]:
        with pytest.raises(InvalidUpdate, match=message):
            UpdateEnvelope.from_canonical_bytes(bad)
    with pytest.raises(InvalidUpdate, match="must be bytes"):
        UpdateEnvelope.from_canonical_bytes("x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"federation_id": ""}, "federation_id"),
        ({"round": -1}, "round"),
        ({"round": True}, "round"),
        ({"weight": 0}, "weight"),
        ({"chunk_ids": (0, 0, 3)}, "distinct"),
        ({"chunk_ids": (0, 3)}, "digests must name"),
        ({"digests": {0: "zz" * 32, 3: "a" * 64, 17: "b" * 64}}, "digest of chunk 0"),
        ({"layout_fingerprint": "ABC"}, "layout_fingerprint"),
    ],
)
def test_envelope_validation(change: dict[str, object], message: str) -> None:
    env = kat_envelope()
    kw: dict[str, object] = {
        "federation_id": env.federation_id,
        "round": env.round,
        "site_id": env.site_id,
        "chunk_ids": env.chunk_ids,
        "digests": dict(env.digests),
        "weight": env.weight,
        "layout_fingerprint": env.layout_fingerprint,
        "params_fingerprint": env.params_fingerprint,
    }
    kw.update(change)
    with pytest.raises(ValueError, match=message):
        UpdateEnvelope(**kw)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    fed=st.text(min_size=1, max_size=20),
    site=st.text(min_size=1, max_size=20),
    rnd=st.integers(0, 2**63 - 1),
    weight=st.integers(1, 2**63 - 1),
    ids=st.sets(st.integers(0, 2**32 - 1), max_size=6),
    data=st.data(),
)
def test_canonical_bytes_round_trip(
    fed: str, site: str, rnd: int, weight: int, ids: set[int], data: st.DataObject
) -> None:
    hexes = st.binary(min_size=32, max_size=32).map(bytes.hex)
    digests = {c: data.draw(hexes) for c in ids}
    env = UpdateEnvelope(
        fed, rnd, site, tuple(ids), digests, weight, data.draw(hexes), data.draw(hexes)
    )
    assert UpdateEnvelope.from_canonical_bytes(env.canonical_bytes()) == env
