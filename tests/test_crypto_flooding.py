"""Decryption-error bound (measured) and noise flooding (measured, KS test, fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from crypto import (
    DEFAULT_PRESET,
    PRESETS,
    ChunkLayout,
    EncryptedAggregate,
    apply_aggregate,
    encrypt_update,
    flooding,
    weighted_sum,
)
from crypto.secret import SecretContext

PARAMS = PRESETS[DEFAULT_PRESET]
CHUNK = PARAMS.values_per_ciphertext
N_CHUNKS = 4


@pytest.fixture(scope="module")
def secret() -> SecretContext:
    return SecretContext.generate(PARAMS)


@pytest.fixture(scope="module")
def layout() -> ChunkLayout:
    return ChunkLayout.from_shapes([("w", (N_CHUNKS * CHUNK,))], CHUNK)


def _aggregate(
    secret: SecretContext, layout: ChunkLayout, weights: list[int], seed: int
) -> tuple[EncryptedAggregate, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    vs = [rng.uniform(-1, 1, layout.total) for _ in weights]
    ups = [encrypt_update(secret.public(), layout, v) for v in vs]
    agg = weighted_sum(secret.public(), ups, weights)
    exact_sum = np.sum([w * v for w, v in zip(weights, vs, strict=True)], axis=0)
    return agg, exact_sum, vs


def _flat(d: dict[int, np.ndarray]) -> np.ndarray:
    return np.concatenate([d[c] for c in sorted(d)])


@pytest.mark.parametrize("weights", [[1], [1, 37, 90, 5, 60]])
def test_measured_decryption_error_std_is_below_the_bound(
    secret: SecretContext, layout: ChunkLayout, weights: list[int]
) -> None:
    agg, exact_sum, _ = _aggregate(secret, layout, weights, seed=len(weights))
    err = _flat(secret._decrypt_exact(agg)) - exact_sum
    measured = float(np.std(err))
    bound = secret.decryption_error_std_bound(sum(weights))
    derived = flooding.fresh_error_std(PARAMS) * float(np.sqrt(sum(w * w for w in weights)))
    assert measured < bound
    # the error model is right, not just loose: measured std within 10 % of the derivation
    assert abs(measured / derived - 1) < 0.10, (measured, derived)
    assert abs(float(np.mean(err))) < 5 * measured / np.sqrt(err.size)
    # flooding is at least 2**20 x the measured decryption-error std
    assert secret.flood_std(sum(weights)) >= 2**20 * measured


def test_flooding_noise_is_gaussian_with_the_stated_std(
    secret: SecretContext, layout: ChunkLayout
) -> None:
    weights = [20, 45, 80]
    agg, _, _ = _aggregate(secret, layout, weights, seed=7)
    exact = _flat(secret._decrypt_exact(agg))
    released = _flat(secret.decrypt_aggregate(agg, np.random.default_rng(11)))
    std = secret.flood_std(sum(weights))
    z = (released - exact) / std
    assert abs(float(np.std(z)) - 1.0) < 0.03  # n = 16384: std error ~0.6 %
    assert abs(float(np.mean(z))) < 0.05
    assert stats.kstest(z, "norm").pvalue > 1e-3
    step = flooding.grid_step(std)
    assert np.array_equal(released / step, np.round(released / step))
    # same seed, same release (randomness is injected)
    again = _flat(secret.decrypt_aggregate(agg, np.random.default_rng(11)))
    assert np.array_equal(again, released)


def test_flooded_fedavg_error_is_below_1e_4(secret: SecretContext, layout: ChunkLayout) -> None:
    weights = [int(w) for w in np.random.default_rng(3).integers(20, 101, 13)]
    agg, exact_sum, _ = _aggregate(secret, layout, weights, seed=3)
    released = secret.decrypt_aggregate(agg, np.random.default_rng(5))
    mean = apply_aggregate(np.zeros(layout.total), layout, released, agg.normalizers)
    err = np.abs(mean - exact_sum / sum(weights))
    assert err.max() <= 1e-4
    # the analysis in docs/crypto.md: mean error std = 2**20 * 1.2 * fresh std
    expected = 2**20 * flooding.MARGIN * flooding.fresh_error_std(PARAMS)
    assert abs(float(np.std(mean - exact_sum / sum(weights))) / expected - 1) < 0.05


def test_flood_factor_below_2_pow_20_is_refused() -> None:
    with pytest.raises(ValueError, match="flood_factor"):
        SecretContext.generate(PARAMS, flood_factor=2.0**19)
    with pytest.raises(ValueError, match="flood_factor"):
        flooding.flood_std(PARAMS, 1, 1000.0)
    with pytest.raises(ValueError, match="weight_sum"):
        flooding.decryption_error_std_bound(PARAMS, 0)


def test_bound_grows_with_the_weight_sum() -> None:
    one = flooding.decryption_error_std_bound(PARAMS, 1)
    assert flooding.decryption_error_std_bound(PARAMS, 100) == pytest.approx(100 * one)
    assert one == pytest.approx(flooding.MARGIN * flooding.fresh_error_std(PARAMS))
