"""Clipping, corrected SVT, partial sharing and validation (participant/privacy)."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from scipy import stats

from crypto.packing import ChunkLayout
from participant.privacy import (
    ClipConfig,
    DPSGDConfig,
    PartialShareConfig,
    PureEpsilonDpEvent,
    SVTConfig,
    clip_l2,
    clip_update,
    clip_values,
    partial_share,
    svt_budget,
    svt_events,
    svt_select,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: SVTConfig(fraction=0.0), "SVTConfig.fraction"),
        (lambda: SVTConfig(fraction=1.5), "SVTConfig.fraction"),
        (lambda: SVTConfig(fraction=-0.1), "SVTConfig.fraction"),
        (lambda: SVTConfig(fraction=math.nan), "SVTConfig.fraction"),
        (lambda: SVTConfig(epsilon=0.0), "SVTConfig.epsilon"),
        (lambda: SVTConfig(epsilon=-1.0), "SVTConfig.epsilon"),
        (lambda: SVTConfig(gamma=0.0), "SVTConfig.gamma"),
        (lambda: SVTConfig(gamma=-1e-3), "SVTConfig.gamma"),
        (lambda: SVTConfig(tau=-1.0), "SVTConfig.tau"),
        (lambda: SVTConfig(noise_ratio=0.0), "SVTConfig.noise_ratio"),
        (lambda: SVTConfig(selection_share=1.0), "SVTConfig.selection_share"),
        (lambda: SVTConfig(granularity="row"), "SVTConfig.granularity"),  # type: ignore[arg-type]
        (lambda: PartialShareConfig(fraction=0.0), "PartialShareConfig.fraction"),
        (lambda: PartialShareConfig(fraction=1.01), "PartialShareConfig.fraction"),
        (lambda: PartialShareConfig(gamma=0.0), "PartialShareConfig.gamma"),
        (lambda: ClipConfig(gamma=-1.0), "ClipConfig.gamma"),
        (lambda: ClipConfig(l2_max_norm=0.0), "ClipConfig.l2_max_norm"),
        (lambda: DPSGDConfig(target_epsilon=0.0), "DPSGDConfig.target_epsilon"),
        (lambda: DPSGDConfig(target_delta=0.0), "DPSGDConfig.target_delta"),
        (lambda: DPSGDConfig(target_delta=1.0), "DPSGDConfig.target_delta"),
        (lambda: DPSGDConfig(max_grad_norm=0.0), "DPSGDConfig.max_grad_norm"),
        (lambda: DPSGDConfig(planned_rounds=0), "DPSGDConfig.planned_rounds"),
        (lambda: DPSGDConfig(noise_multiplier=-1.0), "DPSGDConfig.noise_multiplier"),
    ],
)
def test_validation_names_the_field(factory: object, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        factory()  # type: ignore[operator]


def test_fraction_one_is_allowed() -> None:
    assert SVTConfig(fraction=1.0).fraction == 1.0


def test_bad_updates_are_rejected() -> None:
    cfg = SVTConfig(epsilon=1.0)
    with pytest.raises(ValueError, match="NaN"):
        svt_select(np.array([1.0, np.nan]), 1, cfg, _rng())
    with pytest.raises(ValueError, match="1-D"):
        svt_select(np.zeros((2, 2)), 1, cfg, _rng())
    with pytest.raises(ValueError, match="n_iters"):
        svt_select(np.zeros(4), 0, cfg, _rng())
    with pytest.raises(ValueError, match="chunk_bounds"):
        svt_select(np.zeros(4), 1, SVTConfig(granularity="block"), _rng(), [(0, 3)])
    with pytest.raises(ValueError, match="chunk_bounds"):
        partial_share(np.zeros(4), 1, PartialShareConfig(granularity="block"))


# --- clipping -------------------------------------------------------------------------------


def test_clipping() -> None:
    v = np.array([3.0, -4.0, 0.5])
    assert np.array_equal(clip_values(v, 1.0), [1.0, -1.0, 0.5])
    c = clip_l2(v, 1.0)
    assert np.linalg.norm(c) == pytest.approx(1.0)
    assert np.allclose(c / np.linalg.norm(c), v / np.linalg.norm(v))
    assert np.array_equal(clip_l2(v, 100.0), v)
    both = clip_update(v, ClipConfig(gamma=0.5, l2_max_norm=1.0))
    assert np.max(np.abs(both)) <= 0.5
    assert np.linalg.norm(both) <= 1.0 + 1e-12


# --- SVT ------------------------------------------------------------------------------------


def test_budget_split_and_scales() -> None:
    cfg = SVTConfig(fraction=0.1, gamma=0.01, epsilon=2.0, selection_share=0.4)
    b = svt_budget(cfg, 1000)
    assert b.c == 100
    assert b.epsilon == pytest.approx(2.0)
    assert b.epsilon1 + b.epsilon2 == pytest.approx(0.8)
    assert b.epsilon3 == pytest.approx(1.2)
    assert b.epsilon2 / b.epsilon1 == pytest.approx((2 * 100) ** (2 / 3))
    assert b.sensitivity == 0.01
    assert b.threshold_scale == pytest.approx(0.01 / b.epsilon1)
    assert b.query_scale == pytest.approx(2 * 100 * 0.01 / b.epsilon2)
    assert b.release_scale == pytest.approx(2 * 100 * 0.01 / 1.2)
    ev = svt_events(cfg, 1000)
    assert isinstance(ev[0], PureEpsilonDpEvent)
    assert ev[0].epsilon == pytest.approx(0.8)
    assert isinstance(ev[1], dp_accounting.LaplaceDpEvent)
    assert ev[1].noise_multiplier == pytest.approx(1 / 1.2)


def test_calibrated_default_sets_release_noise_to_gamma() -> None:
    cfg = SVTConfig(fraction=0.1, gamma=1e-3, noise_ratio=2.0)
    b = svt_budget(cfg, 3457)
    assert b.c == 346
    assert b.release_scale == pytest.approx(2.0 * 1e-3)
    assert b.epsilon3 == pytest.approx(2 * 346 / 2.0)
    assert b.epsilon == pytest.approx(b.epsilon3 / 0.5)


def test_block_budget_sensitivities() -> None:
    layout = ChunkLayout.from_shapes([("w", (10, 10)), ("b", (10,))], chunk_size=32)
    bounds = layout.chunk_bounds()  # sizes 32, 32, 32, 14
    b = svt_budget(
        SVTConfig(fraction=0.5, gamma=0.1, epsilon=1.0, granularity="block"), 110, bounds
    )
    assert b.n_queries == 4 and b.c == 2
    assert b.sensitivity == pytest.approx(0.1 * math.sqrt(32))
    assert b.release_l1_sensitivity == pytest.approx(2 * 0.1 * 64)


@pytest.mark.parametrize("seed", range(5))
def test_at_most_c_selected_and_zeros_elsewhere(seed: int) -> None:
    rng = _rng(seed)
    delta = rng.normal(0, 1.0, size=500)
    cfg = SVTConfig(fraction=0.05, gamma=0.5, tau=0.0, epsilon=1.0)  # noisy: many pass
    res = svt_select(delta, 3, cfg, rng)
    c = math.ceil(0.05 * 500)
    assert res.selected.size <= c
    assert res.selected.size == c  # tau=0 and heavy noise: the pass must hit the stop
    mask = np.zeros(500, dtype=bool)
    mask[res.selected] = True
    assert np.all(res.sparse[~mask] == 0)
    assert res.events == svt_events(cfg, 500)
    assert res.mechanism == "svt" and not res.non_private


def test_released_entries_are_clipped_values_plus_small_noise() -> None:
    rng = _rng(1)
    n_iters = 4
    delta = rng.normal(0, 0.01, size=300) * n_iters
    delta[:10] = 1e6  # far beyond the clip
    cfg = SVTConfig(fraction=0.2, gamma=0.005, tau=0.0, epsilon=1e9)
    res = svt_select(delta, n_iters, cfg, rng)
    u = np.clip(delta / n_iters, -0.005, 0.005)
    sel = res.selected
    assert sel.size == 60
    assert np.allclose(res.sparse[sel] / n_iters, u[sel], atol=1e-4)
    # noise after clipping: even the huge inputs come back at most gamma (+ tiny noise)
    assert np.max(np.abs(res.sparse / n_iters)) <= 0.005 + 1e-4


def test_release_noise_is_laplace_of_the_stated_scale_after_clipping() -> None:
    """KS test of the release residuals; inputs far above γ prove the clip came first."""
    cfg = SVTConfig(fraction=0.5, gamma=1.0, tau=0.0, epsilon=2000.0, selection_share=0.5)
    d = 400
    scale = svt_budget(cfg, d).release_scale  # 2cγ/ε3 = 400/1000
    residuals = []
    rng = _rng(7)
    for _ in range(10):
        delta = np.full(d, 50.0)  # |u| = 50 >> γ: clipped to 1 before any noise
        res = svt_select(delta, 1, cfg, rng)
        residuals.append(res.sparse[res.selected] - 1.0)
    r = np.concatenate(residuals)
    assert r.size >= 1000
    p = stats.kstest(r, stats.laplace(scale=scale).cdf).pvalue
    assert p > 0.01, p
    # a wrong scale (half or double) is rejected by the same test
    assert stats.kstest(r, stats.laplace(scale=scale / 2).cdf).pvalue < 1e-6
    assert stats.kstest(r, stats.laplace(scale=scale * 2).cdf).pvalue < 1e-6


def test_selection_prefers_large_coordinates() -> None:
    """With modest noise, the coordinates far above τ are the ones chosen."""
    rng = _rng(3)
    delta = np.zeros(1000)
    delta[:50] = 1.0
    cfg = SVTConfig(fraction=0.05, gamma=1.0, tau=0.5, epsilon=5000.0)
    res = svt_select(delta, 1, cfg, rng)
    assert np.sum(res.selected < 50) >= 45


def test_same_seed_same_output_other_seed_differs() -> None:
    delta = _rng(0).normal(size=200)
    cfg = SVTConfig(fraction=0.1, gamma=0.5, epsilon=10.0)
    a = svt_select(delta, 1, cfg, _rng(11)).sparse
    b = svt_select(delta, 1, cfg, _rng(11)).sparse
    c = svt_select(delta, 1, cfg, _rng(12)).sparse
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_rng_must_be_injected_generator() -> None:
    with pytest.raises(TypeError, match="Generator"):
        svt_select(np.zeros(4), 1, SVTConfig(), np.random.RandomState(0))  # type: ignore[arg-type]


def _nonzero_chunks(vec: np.ndarray, bounds: list[tuple[int, int]]) -> int:
    return sum(bool(np.any(vec[a:b] != 0)) for a, b in bounds)


def test_block_svt_selects_whole_chunks_and_wire_size_falls_with_q() -> None:
    layout = ChunkLayout.from_shapes([("w", (40, 50)), ("b", (50,))], chunk_size=64)
    bounds = layout.chunk_bounds()
    n = layout.n_chunks
    delta = _rng(5).normal(0, 1, size=layout.total)
    sent = []
    for q in (0.1, 0.3, 0.6, 1.0):
        cfg = SVTConfig(fraction=q, gamma=0.5, tau=0.0, epsilon=1e6, granularity="block")
        res = svt_select(delta, 1, cfg, _rng(9), bounds)
        c = math.ceil(q * n)
        assert res.selected.size <= c
        assert res.granularity == "block"
        for j in range(n):
            a, b = bounds[j]
            if j in set(res.selected.tolist()):
                assert np.all(res.sparse[a:b] != 0)
            else:
                assert np.all(res.sparse[a:b] == 0)
        sent.append(_nonzero_chunks(res.sparse, bounds))
    assert sent == sorted(sent) and sent[0] < sent[-1]
    assert sent[0] <= math.ceil(0.1 * n)


# --- partial sharing --------------------------------------------------------------------------


def test_partial_share_top_fraction_clipped_no_dp() -> None:
    delta = np.array([0.1, -5.0, 0.3, 2.0, -0.2, 0.05, 0.0, 1.0, -0.4, 0.6]) * 2
    res = partial_share(delta, 2, PartialShareConfig(fraction=0.4, gamma=0.5))
    assert res.selected.tolist() == [1, 3, 7, 9]
    u = np.clip(delta / 2, -0.5, 0.5)
    expected = np.zeros(10)
    expected[[1, 3, 7, 9]] = u[[1, 3, 7, 9]] * 2
    assert np.array_equal(res.sparse, expected)
    assert res.non_private and res.mechanism == "partial"
    assert res.events == [dp_accounting.NonPrivateDpEvent()]


def test_partial_share_blocks() -> None:
    bounds = [(0, 4), (4, 8), (8, 10)]
    delta = np.array([0, 0, 0, 0.1, 1, 1, 1, 1, 0.5, 0.5])
    res = partial_share(
        delta, 1, PartialShareConfig(fraction=0.5, gamma=10.0, granularity="block"), bounds
    )
    assert res.selected.tolist() == [1, 2]
    assert np.array_equal(res.sparse, np.where(np.arange(10) >= 4, delta, 0.0))


class _SpyGenerator(np.random.Generator):
    """A real Generator that also records the scale and size of every Laplace draw."""

    def __init__(self, seed: int) -> None:
        super().__init__(np.random.PCG64(seed))
        self.laplace_calls: list[tuple[float, int | None]] = []

    def laplace(self, loc: float = 0.0, scale: float = 1.0, size: object = None) -> object:  # type: ignore[override]
        self.laplace_calls.append((float(scale), None if size is None else int(size)))  # type: ignore[call-overload]
        return super().laplace(loc, scale, size)  # type: ignore[call-overload]


def test_noise_draws_threshold_once_queries_and_release_fresh() -> None:
    cfg = SVTConfig(fraction=0.1, gamma=0.01, tau=0.0, epsilon=3.0)
    spy = _SpyGenerator(4)
    res = svt_select(np.ones(200), 1, cfg, spy)
    b = svt_budget(cfg, 200)
    assert [s for s, _ in spy.laplace_calls] == pytest.approx(
        [b.threshold_scale, b.query_scale, b.release_scale]
    )
    assert [n for _, n in spy.laplace_calls] == [None, 200, res.selected.size]
    assert b.query_scale == pytest.approx(2 * b.c * 0.01 / b.epsilon2)
    assert b.release_scale == pytest.approx(2 * b.c * 0.01 / b.epsilon3)


def test_queries_are_visited_in_a_random_order() -> None:
    """Every query passes (τ = 0, tiny noise): which c are kept depends only on the order.

    A pass in index order would keep 0..c-1 every time. Over 50 runs of c = 10 out of 1000,
    the 500 kept indices of a uniform random order have mean 499.5 (sd ≈ 13); the
    tolerance of ±70 is more than 5 sd.
    """
    rng = _rng(21)
    cfg = SVTConfig(fraction=0.01, gamma=1.0, tau=0.0, epsilon=1e9)
    kept = np.concatenate([svt_select(np.ones(1000), 1, cfg, rng).selected for _ in range(50)])
    assert kept.size == 500
    assert abs(float(kept.mean()) - 499.5) < 70
    assert np.unique(kept).size > 300  # not the same few coordinates each time
