"""ε composition against known answers, and the DP event JSON encoding."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from scipy import optimize, special, stats

from participant.privacy.accounting import (
    LARGE_EPSILON,
    EventEncodingError,
    PureEpsilonDpEvent,
    basic_epsilon,
    compose_epsilon,
    event_from_json,
    event_to_json,
)


def _exact_pure_composition(eps: float, k: int, delta: float) -> float:
    """Optimal ε of k-fold composition of ε-DP (Kairouz et al. 2015), via binary RR's PLD."""
    p = math.exp(eps) / (1 + math.exp(eps))

    def delta_of(e: float) -> float:
        total = 0.0
        for j in range(k + 1):
            loss = eps * (k - 2 * j)
            if loss > e:
                prob = special.comb(k, j) * p ** (k - j) * (1 - p) ** j
                total += prob * (1 - math.exp(e - loss))
        return total - delta

    return float(optimize.brentq(delta_of, 0.0, k * eps))


def _exact_gaussian(sigma: float, delta: float) -> float:
    """ε of the Gaussian mechanism (sensitivity 1), Balle & Wang 2018."""

    def delta_of(e: float) -> float:
        return float(
            stats.norm.cdf(-e * sigma + 0.5 / sigma)
            - math.exp(e) * stats.norm.cdf(-e * sigma - 0.5 / sigma)
            - delta
        )

    return float(optimize.brentq(delta_of, 0.0, 100.0))


@pytest.mark.parametrize(("eps", "k"), [(0.5, 10), (1.0, 25), (0.1, 50)])
def test_pure_composition_matches_optimal_known_answer(eps: float, k: int) -> None:
    exact = _exact_pure_composition(eps, k, 1e-5)
    got = compose_epsilon([PureEpsilonDpEvent(eps)] * k, 1e-5)
    assert exact - 1e-9 <= got <= exact + 0.01
    assert got < k * eps  # tighter than basic composition


def test_single_laplace_and_pure_events() -> None:
    assert compose_epsilon([dp_accounting.LaplaceDpEvent(0.5)], 1e-9) == pytest.approx(
        2.0, abs=1e-3
    )
    assert compose_epsilon([PureEpsilonDpEvent(0.7)], 1e-9) == pytest.approx(0.7, abs=1e-3)


def test_gaussian_matches_analytic_known_answer() -> None:
    exact = _exact_gaussian(2.0, 1e-5)
    got = compose_epsilon([dp_accounting.GaussianDpEvent(2.0)], 1e-5)
    assert got == pytest.approx(exact, abs=5e-3)


def test_poisson_gaussian_between_pld_and_rdp() -> None:
    ev = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.5)), 20
    )
    rdp = dp_accounting.rdp.RdpAccountant()
    rdp.compose(ev)
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(ev)
    got = compose_epsilon([ev], 1e-5)
    assert got == pytest.approx(pld.get_epsilon(1e-5), rel=1e-6)
    assert got <= rdp.get_epsilon(1e-5)


def test_large_pure_events_add_up() -> None:
    big = [PureEpsilonDpEvent(700.0), dp_accounting.LaplaceDpEvent(1 / 692.0)]
    assert compose_epsilon(big * 3, 1e-5) == pytest.approx(3 * 1392.0)
    assert basic_epsilon(big * 3) == pytest.approx(3 * 1392.0)
    assert LARGE_EPSILON <= 700


def test_non_private_is_infinite_and_noop_is_free() -> None:
    assert compose_epsilon([dp_accounting.NonPrivateDpEvent()], 1e-5) == math.inf
    assert compose_epsilon([dp_accounting.NoOpDpEvent()], 1e-5) == 0.0
    assert basic_epsilon([dp_accounting.GaussianDpEvent(1.0)]) is None


def test_delta_validated() -> None:
    with pytest.raises(ValueError, match="delta"):
        compose_epsilon([PureEpsilonDpEvent(1.0)], 0.0)


EVENTS = [
    PureEpsilonDpEvent(1.5),
    dp_accounting.LaplaceDpEvent(0.25),
    dp_accounting.GaussianDpEvent(3.0),
    dp_accounting.NonPrivateDpEvent(),
    dp_accounting.NoOpDpEvent(),
    dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(1.1)), 17
    ),
    dp_accounting.ComposedDpEvent([PureEpsilonDpEvent(0.1), dp_accounting.LaplaceDpEvent(2.0)]),
]


@pytest.mark.parametrize("event", EVENTS)
def test_json_round_trip(event: dp_accounting.DpEvent) -> None:
    text = event_to_json(event)
    assert event_from_json(text) == event
    assert event_to_json(event_from_json(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"v": 2, "event": {"type": "no_op"}}',
        '{"v": 1, "event": {"type": "pickle"}}',
        '{"v": 1, "event": {"type": "laplace", "noise_multiplier": -1}}',
        '{"v": 1, "event": {"type": "laplace", "noise_multiplier": "1"}}',
        '{"v": 1, "event": {"type": "laplace", "noise_multiplier": 1, "x": 2}}',
        '{"v": 1, "event": {"type": "poisson_sampled", "sampling_probability": 1.5,'
        ' "event": {"type": "no_op"}}}',
        '{"v": 1, "event": {"type": "self_composed", "count": -1, "event": {"type": "no_op"}}}',
        '{"v": 1, "event": {"type": "composed", "events": 3}}',
        '{"v": 1, "event": {"type": "pure_epsilon", "epsilon": NaN}}',
    ],
)
def test_malformed_json_rejected(text: str) -> None:
    with pytest.raises(EventEncodingError):
        event_from_json(text)


def test_unsupported_event_type_not_encoded() -> None:
    with pytest.raises(EventEncodingError, match="unsupported"):
        event_to_json(dp_accounting.ZCDpEvent(0.1))
