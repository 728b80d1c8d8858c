"""Every bad input: untrusted bytes -> InvalidUpdate with a clear message; caller mistakes ->
TypeError/ValueError."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from crypto import (
    DEFAULT_PRESET,
    PRESETS,
    ChunkLayout,
    EncryptedAggregate,
    EncryptedUpdate,
    InvalidUpdate,
    PublicContext,
    _rns,
    apply_aggregate,
    encrypt_update,
    load_chunk,
    weighted_sum,
)
from crypto.ciphertext import ChunkKind, encode_chunk
from crypto.secret import SecretContext

PARAMS = PRESETS[DEFAULT_PRESET]
CHUNK = PARAMS.values_per_ciphertext


@pytest.fixture(scope="module")
def secret() -> SecretContext:
    return SecretContext.generate(PARAMS)


@pytest.fixture(scope="module")
def public(secret: SecretContext) -> PublicContext:
    return secret.public()


@pytest.fixture(scope="module")
def layout() -> ChunkLayout:
    return ChunkLayout.from_shapes([("w", (2, CHUNK)), ("b", (10,))], CHUNK)


@pytest.fixture(scope="module")
def update(public: PublicContext, layout: ChunkLayout) -> EncryptedUpdate:
    return encrypt_update(public, layout, np.full(layout.total, 0.5))


def _patch(blob: bytes, offset: int, new: bytes) -> bytes:
    return blob[:offset] + new + blob[offset + len(new) :]


# ------------------------------------------------------------------------- chunk blobs
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"", "truncated"),
        (lambda b: b"\x00" * 50, "truncated"),
        (lambda b: b"garbage!" * 100, "bad magic"),
        (lambda b: b[:-1], "truncated or padded"),
        (lambda b: b[: len(b) // 2], "truncated or padded"),
        (lambda b: b + b"\x00", "truncated or padded"),
        (lambda b: _patch(b, 4, b"\x02"), "version 2"),
        (lambda b: _patch(b, 5, b"\x09"), "kind 9"),
        (lambda b: _patch(b, 6, b"\xff" * 4), "CKKS parameters"),
        (lambda b: _patch(b, 38, b"\xff" * 4), "another public key"),
        (lambda b: _patch(b, 106, struct.pack("<I", 0)), "holds 0 values"),
        (lambda b: _patch(b, 106, struct.pack("<I", CHUNK + 1)), "holds"),
        (lambda b: _patch(b, 110, b"\xff" * 15), "not reduced"),
    ],
)
def test_load_chunk_rejects_bad_blobs(
    public: PublicContext, update: EncryptedUpdate, mutate: object, message: str
) -> None:
    blob = update.chunks[0]
    assert callable(mutate)
    with pytest.raises(InvalidUpdate, match=message):
        load_chunk(public, mutate(blob))


def test_load_chunk_rejects_non_bytes(public: PublicContext) -> None:
    with pytest.raises(InvalidUpdate, match="must be bytes"):
        load_chunk(public, "text")  # type: ignore[arg-type]


def test_chunk_from_other_parameters_is_refused(layout: ChunkLayout) -> None:
    other = SecretContext.generate(PRESETS["n8192"]).public()
    big = ChunkLayout.from_shapes(layout.shapes, other.params.values_per_ciphertext)
    upd = encrypt_update(other, big, np.ones(big.total))
    mine = SecretContext.generate(PARAMS).public()
    with pytest.raises(InvalidUpdate, match="CKKS parameters"):
        load_chunk(mine, upd.chunks[0])
    with pytest.raises(InvalidUpdate, match="update 0, chunk 0: ciphertext made for CKKS"):
        weighted_sum(mine, [upd], [1])


def test_chunk_from_another_key_is_refused(
    public: PublicContext, layout: ChunkLayout, update: EncryptedUpdate
) -> None:
    other = SecretContext.generate(PARAMS)
    foreign = encrypt_update(other.public(), layout, np.ones(layout.total))
    with pytest.raises(InvalidUpdate, match="another public key"):
        weighted_sum(public, [update, foreign], [1, 1])
    agg = weighted_sum(public, [update], [1])
    with pytest.raises(InvalidUpdate, match="another public key"):
        other.decrypt_aggregate(agg, np.random.default_rng(0))


# ------------------------------------------------------------------------- weighted sum
def test_weighted_sum_rejects_mixed_layouts(public: PublicContext, update: EncryptedUpdate) -> None:
    other_layout = ChunkLayout.from_shapes([("z", (CHUNK + 1,))], CHUNK)
    other = encrypt_update(public, other_layout, np.ones(other_layout.total))
    with pytest.raises(InvalidUpdate, match="another chunk layout"):
        weighted_sum(public, [update, other], [1, 1])


def test_weighted_sum_rejects_relabelled_and_aggregate_chunks(
    public: PublicContext, update: EncryptedUpdate
) -> None:
    moved = EncryptedUpdate({5: update.chunks[0]})
    with pytest.raises(InvalidUpdate, match="chunk 5 carries chunk id 0"):
        weighted_sum(public, [moved], [1])
    agg = weighted_sum(public, [update], [1])
    as_update = EncryptedUpdate(dict(agg.chunks))
    with pytest.raises(InvalidUpdate, match="not a participant chunk"):
        weighted_sum(public, [as_update], [1])


def test_weighted_sum_rejects_disagreeing_chunk_lengths(
    public: PublicContext, update: EncryptedUpdate, layout: ChunkLayout
) -> None:
    coeffs = load_chunk(public, update.chunks[2]).coeffs
    forged = encode_chunk(
        PARAMS, public.key_id, ChunkKind.UPDATE, 2, 11, layout.fingerprint, coeffs
    )
    with pytest.raises(InvalidUpdate, match="disagree on its length"):
        weighted_sum(public, [update, EncryptedUpdate({2: forged})], [1, 1])


@pytest.mark.parametrize(
    ("weights", "exc", "message"),
    [
        ([1, 2], ValueError, "2 weights for 1 updates"),
        ([0], ValueError, "positive"),
        ([-3], ValueError, "positive"),
        ([True], TypeError, "int"),
        ([1.5], TypeError, "int"),
        ([PARAMS.max_weight_sum + 1], ValueError, "max_weight_sum"),
    ],
)
def test_weighted_sum_rejects_bad_weights(
    public: PublicContext,
    update: EncryptedUpdate,
    weights: list[object],
    exc: type[Exception],
    message: str,
) -> None:
    with pytest.raises(exc, match=message):
        weighted_sum(public, [update], weights)  # type: ignore[arg-type]


def test_weighted_sum_caller_mistakes(public: PublicContext, update: EncryptedUpdate) -> None:
    with pytest.raises(ValueError, match="at least one update"):
        weighted_sum(public, [], [])
    with pytest.raises(ValueError, match="no update carries any chunk"):
        weighted_sum(public, [EncryptedUpdate({})], [1])
    with pytest.raises(TypeError, match="EncryptedUpdate"):
        weighted_sum(public, [b"x"], [1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="PublicContext"):
        weighted_sum(object(), [update], [1])  # type: ignore[arg-type]


# ------------------------------------------------------------------------- encryption input
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_at_encryption(
    public: PublicContext, layout: ChunkLayout, bad: float
) -> None:
    v = np.zeros(layout.total)
    v[7] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        encrypt_update(public, layout, v)


def test_encryption_input_checks(public: PublicContext, layout: ChunkLayout) -> None:
    v = np.zeros(layout.total)
    with pytest.raises(ValueError, match="length"):
        encrypt_update(public, layout, v[:-1])
    with pytest.raises(ValueError, match="value_bound"):
        encrypt_update(public, layout, np.full(layout.total, PARAMS.value_bound * 1.01))
    with pytest.raises(TypeError, match="numpy array"):
        encrypt_update(public, layout, [0.0] * layout.total)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="real-valued"):
        encrypt_update(public, layout, v.astype(np.complex128))
    with pytest.raises(ValueError, match="outside"):
        encrypt_update(public, layout, v, chunk_ids=[layout.n_chunks])
    with pytest.raises(ValueError, match="repeats"):
        encrypt_update(public, layout, v, chunk_ids=[0, 0])
    with pytest.raises(ValueError, match="chunk_size"):
        encrypt_update(public, ChunkLayout.from_shapes([("w", (10,))], 100), np.zeros(10))
    with pytest.raises(TypeError, match="PublicContext"):
        encrypt_update(object(), layout, v)  # type: ignore[arg-type]
    assert encrypt_update(public, layout, v).chunks == {}


# ------------------------------------------------------------------------- containers
@pytest.mark.parametrize("cls", [EncryptedUpdate, EncryptedAggregate])
def test_containers_reject_garbage_and_truncation(
    cls: type[EncryptedUpdate] | type[EncryptedAggregate],
    public: PublicContext,
    update: EncryptedUpdate,
) -> None:
    blob = (
        update.to_bytes()
        if cls is EncryptedUpdate
        else weighted_sum(public, [update], [2]).to_bytes()
    )
    assert cls.from_bytes(blob).chunks.keys() == update.chunks.keys()
    for bad, message in [
        (b"", "truncated"),
        (b"x" * 200, "bad magic"),
        (blob[:-1], "truncated"),
        (blob[:100], "truncated"),
        (blob + b"\x00", "trailing"),
        (_patch(blob, 4, b"\x07"), "version 7"),
    ]:
        with pytest.raises(InvalidUpdate, match=message):
            cls.from_bytes(bad)


def test_aggregate_checked_at_decryption(
    secret: SecretContext, public: PublicContext, update: EncryptedUpdate
) -> None:
    agg = weighted_sum(public, [update], [3])
    rng = np.random.default_rng(0)
    zero_norm = EncryptedAggregate(
        agg.chunks, dict.fromkeys(agg.chunks, 0), agg.params_fingerprint, agg.layout_fingerprint
    )
    with pytest.raises(InvalidUpdate, match="normalizer 0"):
        secret.decrypt_aggregate(zero_norm, rng)
    huge = EncryptedAggregate(
        agg.chunks, dict.fromkeys(agg.chunks, 10**9), agg.params_fingerprint, agg.layout_fingerprint
    )
    with pytest.raises(InvalidUpdate, match="normalizer"):
        secret.decrypt_aggregate(huge, rng)
    wrong_fp = EncryptedAggregate(agg.chunks, agg.normalizers, "ab" * 32, agg.layout_fingerprint)
    with pytest.raises(InvalidUpdate, match="CKKS parameters"):
        secret.decrypt_aggregate(wrong_fp, rng)
    raw_update = EncryptedAggregate(
        update.chunks,
        dict.fromkeys(update.chunks, 1),
        agg.params_fingerprint,
        agg.layout_fingerprint,
    )
    with pytest.raises(InvalidUpdate, match="not an aggregate"):
        secret.decrypt_aggregate(raw_update, rng)
    relabelled = EncryptedAggregate(
        {1: agg.chunks[0]}, {1: 3}, agg.params_fingerprint, agg.layout_fingerprint
    )
    with pytest.raises(InvalidUpdate, match="chunk id or layout"):
        secret.decrypt_aggregate(relabelled, rng)
    with pytest.raises(TypeError, match="Generator"):
        secret.decrypt_aggregate(agg, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same chunk ids"):
        EncryptedAggregate(agg.chunks, {}, agg.params_fingerprint, agg.layout_fingerprint)


def test_apply_aggregate_checks(layout: ChunkLayout) -> None:
    g = np.zeros(layout.total)
    ok = {2: np.ones(10)}
    assert apply_aggregate(g, layout, ok, {2: 4})[-1] == 0.25
    with pytest.raises(ValueError, match="shape"):
        apply_aggregate(g, layout, {2: np.ones(9)}, {2: 4})
    with pytest.raises(ValueError, match="normalizer"):
        apply_aggregate(g, layout, ok, {})
    with pytest.raises(ValueError, match="positive"):
        apply_aggregate(g, layout, ok, {2: 0})
    with pytest.raises(ValueError, match="NaN"):
        apply_aggregate(g, layout, {2: np.full(10, np.nan)}, {2: 1})
    with pytest.raises(ValueError, match="length"):
        apply_aggregate(g[:-1], layout, ok, {2: 1})
    with pytest.raises(ValueError, match="outside"):
        apply_aggregate(g, layout, {3: np.ones(1)}, {3: 1})


def test_unpack_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="does not hold"):
        _rns.unpack60(b"\x00" * 14, 2)


def test_weighted_sum_names_the_update_with_an_unreduced_coefficient(
    public: PublicContext, update: EncryptedUpdate
) -> None:
    bad = _patch(update.chunks[1], 110, b"\xff" * 15)
    with pytest.raises(InvalidUpdate, match=r"update 1, chunk 1: .*not reduced"):
        weighted_sum(public, [update, EncryptedUpdate({1: bad})], [1, 1])
