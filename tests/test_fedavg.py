"""Plaintext FedAvg against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.fedavg import fedavg


def test_iteration_weighting_hand_computed() -> None:
    w = np.array([1.0, -2.0, 0.5])
    d1 = np.array([1.0, 0.0, 3.0])
    d2 = np.array([-2.0, 4.0, 0.0])
    d3 = np.array([0.0, 1.0, -1.0])
    # weights 1, 2, 5 -> sum 8; numerator (1-4+0, 0+8+5, 3+0-5) = (-3, 13, -2)
    out = fedavg(w, [d1, d2, d3], [1, 2, 5])
    np.testing.assert_allclose(out, [1.0 - 3 / 8, -2.0 + 13 / 8, 0.5 - 2 / 8], rtol=0, atol=1e-15)


def test_uniform_is_plain_mean() -> None:
    w = np.zeros(2)
    out = fedavg(w, [np.array([1.0, 2.0]), np.array([3.0, -2.0])], [1, 100], weighting="uniform")
    np.testing.assert_allclose(out, [2.0, 0.0])


def test_equal_weights_agree_and_inputs_untouched() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=50)
    deltas = [rng.normal(size=50) for _ in range(4)]
    w_copy = w.copy()
    a = fedavg(w, deltas, [7, 7, 7, 7])
    b = fedavg(w, deltas, [7, 7, 7, 7], weighting="uniform")
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_array_equal(w, w_copy)


@pytest.mark.parametrize(
    ("deltas", "n_iters", "weighting", "match"),
    [
        ([np.zeros(3)], [1, 2], "iterations", "deltas/n_iters"),
        ([], [], "iterations", "at least one"),
        ([np.zeros(2)], [1], "iterations", r"deltas\[0\]: shape"),
        ([np.array([0.0, np.nan, 0.0])], [1], "iterations", "NaN"),
        ([np.zeros(3)], [0], "iterations", "N_k must be >= 1"),
        ([np.zeros(3)], [1], "median", "weighting"),
    ],
)
def test_bad_input_named(deltas, n_iters, weighting, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        fedavg(np.zeros(3), deltas, n_iters, weighting=weighting)
