"""Known-answer round trips: encrypt -> weighted sum -> decrypt equals plaintext FedAvg."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import tenseal.sealapi as sealapi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto import (
    DEFAULT_PRESET,
    PRESETS,
    ChunkKind,
    ChunkLayout,
    EncryptedAggregate,
    EncryptedUpdate,
    PublicContext,
    _rns,
    _seal,
    apply_aggregate,
    encrypt_update,
    load_chunk,
    weighted_sum,
)
from crypto.secret import SecretContext

PARAMS = PRESETS[DEFAULT_PRESET]
CHUNK = PARAMS.values_per_ciphertext


@pytest.fixture(scope="module")
def secret() -> SecretContext:
    return SecretContext.generate(PARAMS)


@pytest.fixture(scope="module")
def public(secret: SecretContext) -> PublicContext:
    # what participants and the coordinator really hold: the deserialized public context
    return PublicContext.from_bytes(secret.public().to_bytes())


def fedavg_reference(
    layout: ChunkLayout,
    vectors: Sequence[np.ndarray],
    weights: Sequence[int],
    sent: Sequence[set[int]],
) -> np.ndarray:
    """Plaintext FedAvg per chunk over the participants that sent it (float64 numpy)."""
    out = np.zeros(layout.total)
    for cid, (a, b) in enumerate(layout.chunk_bounds()):
        who = [k for k in range(len(vectors)) if cid in sent[k]]
        if who:
            num = sum(weights[k] * vectors[k][a:b] for k in who)
            out[a:b] = num / sum(weights[k] for k in who)
    return out


def _sparse_vector(rng: np.random.Generator, total: int, density: float) -> np.ndarray:
    v = rng.uniform(-PARAMS.value_bound, PARAMS.value_bound, total)
    v[rng.random(total) >= density] = 0.0
    return v


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 70), st.integers(1, 90)), min_size=1, max_size=3),
    extra=st.sampled_from([1, CHUNK - 1, CHUNK + 1, 2 * CHUNK + 7]),
    n_sites=st.integers(1, 4),
    density=st.sampled_from([0.0, 0.001, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_encrypted_fedavg_equals_plaintext_fedavg(
    secret: SecretContext,
    public: PublicContext,
    shapes: list[tuple[int, int]],
    extra: int,
    n_sites: int,
    density: float,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    layout = ChunkLayout.from_shapes(
        [(f"p{i}", s) for i, s in enumerate(shapes)] + [("extra", (extra,)), ("bias", (3,))],
        CHUNK,
    )
    vectors = [_sparse_vector(rng, layout.total, density) for _ in range(n_sites)]
    vectors[0][-1] = 0.5  # at least one chunk is sent
    weights = [int(w) for w in rng.integers(1, 101, n_sites)]
    updates = [encrypt_update(public, layout, v) for v in vectors]
    sent = [set(u.chunks) for u in updates]
    for v, s in zip(vectors, sent, strict=True):  # block sparsity: all-zero chunks not sent
        assert s == {c for c, (a, b) in enumerate(layout.chunk_bounds()) if np.any(v[a:b])}

    agg = weighted_sum(public, updates, weights)
    agg = EncryptedAggregate.from_bytes(agg.to_bytes())
    assert set(agg.chunks) == set().union(*sent)
    for cid, norm in agg.normalizers.items():
        assert norm == sum(w for w, s in zip(weights, sent, strict=True) if cid in s)

    exact = secret._decrypt_exact(agg)
    for cid, arr in exact.items():
        assert arr.shape == (len(range(*layout.chunk_slice(cid).indices(layout.total))),)
    base = rng.normal(size=layout.total)
    new = apply_aggregate(base, layout, exact, agg.normalizers)
    ref = base + fedavg_reference(layout, vectors, weights, sent)
    assert np.abs(new - ref).max() <= 1e-6

    released = secret.decrypt_aggregate(agg, np.random.default_rng(seed))
    flooded = apply_aggregate(base, layout, released, agg.normalizers)
    assert np.abs(flooded - ref).max() <= 1e-4


def test_explicit_chunk_ids_and_unsent_chunks_stay_unchanged(
    secret: SecretContext, public: PublicContext
) -> None:
    layout = ChunkLayout.from_shapes([("w", (3, CHUNK))], CHUNK)
    rng = np.random.default_rng(1)
    v = rng.uniform(-1, 1, layout.total)
    upd = encrypt_update(public, layout, v, chunk_ids=[2, 0])
    assert upd.chunk_ids == (0, 2)
    assert set(upd.digests()) == {0, 2} and all(len(d) == 64 for d in upd.digests().values())
    agg = weighted_sum(public, [upd], [7])
    sums = secret._decrypt_exact(agg)
    base = np.full(layout.total, 3.0)
    new = apply_aggregate(base, layout, sums, agg.normalizers)
    assert np.abs(new[:CHUNK] - (3.0 + v[:CHUNK])).max() < 1e-6
    assert np.array_equal(new[CHUNK : 2 * CHUNK], base[CHUNK : 2 * CHUNK])
    # an all-zero chunk can still be sent explicitly (hides which blocks are empty)
    z = encrypt_update(public, layout, np.zeros(layout.total), chunk_ids=[1])
    assert np.abs(secret._decrypt_exact(weighted_sum(public, [z], [1]))[1]).max() < 1e-6


def test_update_container_round_trip(public: PublicContext) -> None:
    layout = ChunkLayout.from_shapes([("w", (CHUNK + 5,))], CHUNK)
    upd = encrypt_update(public, layout, np.linspace(-1, 1, layout.total))
    back = EncryptedUpdate.from_bytes(upd.to_bytes())
    assert dict(back.chunks) == dict(upd.chunks)
    assert back.digests() == upd.digests()
    assert (back.params_fingerprint, back.layout_fingerprint) == (
        public.fingerprint,
        layout.fingerprint,
    )
    wrapped = EncryptedUpdate.from_chunks(dict(upd.chunks))
    assert wrapped.layout_fingerprint == layout.fingerprint
    assert wrapped.params_fingerprint == public.fingerprint
    handle = load_chunk(public, upd.chunks[1])
    assert handle.kind is ChunkKind.UPDATE and handle.chunk_id == 1 and handle.n_values == 5
    assert handle.key_id == public.key_id


def test_wire_size_is_at_most_16_bytes_per_parameter(public: PublicContext) -> None:
    layout = ChunkLayout.from_shapes([("w", (10 * CHUNK,))], CHUNK)
    upd = encrypt_update(public, layout, np.full(layout.total, 0.25))
    assert upd.wire_bytes() / layout.total <= 15.05


def test_numpy_weighted_sum_equals_seal_multiply_plain_and_add_many(
    public: PublicContext,
) -> None:
    """The coordinator's exact integer weighting is SEAL's own operation, bit for bit."""
    sctx = public._seal_ctx
    enc = public._encryptor_()
    rng = np.random.default_rng(2)
    coeffs = [enc.encrypt(rng.uniform(-1, 1, CHUNK)) for _ in range(3)]
    weights = [1, 37, 1000]
    ours = _rns.weighted_sum_mod(coeffs, weights, sctx.q)

    evaluator = sealapi.Evaluator(sctx.context)
    products = []
    for c, w in zip(coeffs, weights, strict=True):
        ct = sctx.coeffs_to_ciphertext(c, PARAMS.scale)
        plain = sealapi.Plaintext()
        sctx.encoder.encode(w, sctx.last_parms_id, 1.0, plain)  # integer constant, scale 1
        assert plain.scale == 1.0 and plain.is_ntt_form()
        out = sealapi.Ciphertext()
        evaluator.multiply_plain(ct, plain, out)
        assert out.scale == PARAMS.scale and out.coeff_modulus_size() == 1
        products.append(out)
    total = sealapi.Ciphertext()
    evaluator.add_many(products, total)
    assert np.array_equal(sctx.ciphertext_to_coeffs(total), ours)


def test_direct_ciphertext_read_matches_seal_save(public: PublicContext) -> None:
    sctx = public._seal_ctx
    pt = sctx.encode(np.linspace(-1, 1, CHUNK))
    ct = sealapi.Ciphertext()
    sealapi.Encryptor(sctx.context, _load_pk(public)).encrypt(pt, ct)
    via_save = sctx._coeffs_via_save(ct)
    direct = _seal._fast_coeffs(ct, CHUNK, PARAMS.scale)
    if _seal._FAST_ENABLED:
        assert direct is not None and np.array_equal(direct, via_save)
    assert np.array_equal(sctx.ciphertext_to_coeffs(ct), via_save)


def _load_pk(public: PublicContext) -> object:
    pk = sealapi.PublicKey()
    _seal._load(pk, public._seal_ctx.context, public._public_key_blob)
    return pk


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.lists(st.integers(0, 2**60 - 1), min_size=0, max_size=40).filter(lambda x: len(x) % 2 == 0)
)
def test_pack60_round_trip(values: list[int]) -> None:
    arr = np.array(values, dtype=np.uint64)
    packed = _rns.pack60(arr)
    assert len(packed) == len(values) // 2 * 15
    assert np.array_equal(_rns.unpack60(packed, len(values)), arr)


def test_weighted_sum_mod_matches_python_integers() -> None:
    q = 1152921504606830593
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, q, size=64, dtype=np.uint64) for _ in range(4)]
    weights = [1, 2**10, 999_999 - 2**10 - 3, 2]
    got = _rns.weighted_sum_mod(arrays, weights, q)
    for i in range(64):
        want = sum(w * int(a[i]) for w, a in zip(weights, arrays, strict=True)) % q
        assert int(got[i]) == want


def test_n8192_preset_round_trip() -> None:
    params = PRESETS["n8192"]
    sec = SecretContext.generate(params)
    pub = PublicContext.from_bytes(sec.public().to_bytes())
    layout = ChunkLayout.from_shapes(
        [("w", (params.values_per_ciphertext + 10,))], params.values_per_ciphertext
    )
    rng = np.random.default_rng(4)
    vs = [rng.uniform(-1, 1, layout.total) for _ in range(2)]
    agg = weighted_sum(pub, [encrypt_update(pub, layout, v) for v in vs], [3, 5])
    new = apply_aggregate(np.zeros(layout.total), layout, sec._decrypt_exact(agg), agg.normalizers)
    assert np.abs(new - (3 * vs[0] + 5 * vs[1]) / 8).max() < 1e-6


def test_save_path_is_used_when_direct_read_is_disabled(
    monkeypatch: pytest.MonkeyPatch, secret: SecretContext
) -> None:
    monkeypatch.setattr(_seal, "_FAST_ENABLED", False)
    pub = PublicContext(PARAMS, secret.public()._public_key_blob)  # fresh SEAL context
    layout = ChunkLayout.from_shapes([("w", (100,))], CHUNK)
    v = np.linspace(-1, 1, 100)
    agg = weighted_sum(pub, [encrypt_update(pub, layout, v)] * 2, [1, 2])
    assert pub._seal_ctx._fast_ok is False
    assert np.abs(secret._decrypt_exact(agg)[0] - 3 * v).max() < 1e-6
