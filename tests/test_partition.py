"""Partitions: fixed stratified validation, disjoint covering sites, measurable skew."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from participant.data import load_actg175
from participant.partition import (
    PartitionError,
    column_partition,
    make_partition,
)


@pytest.fixture(scope="module")
def actg():  # type: ignore[no-untyped-def]
    return load_actg175()


def _check_disjoint_covering(part, n: int) -> None:  # type: ignore[no-untyped-def]
    everything = np.concatenate([*part.sites, part.validation])
    assert len(everything) == n  # disjoint (no index twice) ...
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))  # ... and covering


def test_default_partition_is_disjoint_covering_with_fixed_validation(actg) -> None:  # type: ignore[no-untyped-def]
    strata = actg.extra["strat"]
    part = make_partition(actg.y, strata, seed=0)
    assert part.n_sites == 13
    _check_disjoint_covering(part, len(actg))
    assert len(part.validation) == pytest.approx(0.15 * len(actg), abs=4)
    # stratified: validation positive rate close to the overall one
    assert actg.y[part.validation].mean() == pytest.approx(actg.y.mean(), abs=0.01)
    # the validation set is fixed: it does not depend on the site seed
    other = make_partition(actg.y, strata, seed=7, alpha=0.3)
    np.testing.assert_array_equal(part.validation, other.validation)
    pairs = zip(part.sites, other.sites, strict=True)
    assert any(len(a) != len(b) or np.any(a != b) for a, b in pairs)
    # deterministic under the seed
    again = make_partition(actg.y, strata, seed=0)
    for a, b in zip(part.sites, again.sites, strict=True):
        np.testing.assert_array_equal(a, b)


def _label_table(part, y: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([[np.sum(y[s] == 0), np.sum(y[s] == 1)] for s in part.sites])


def test_dirichlet_skew_is_measurable(actg) -> None:  # type: ignore[no-untyped-def]
    strata = actg.extra["strat"]
    skewed = make_partition(actg.y, strata, alpha=0.3, seed=0)
    iid = make_partition(actg.y, strata, alpha=1000.0, seed=0)
    p_skewed = chi2_contingency(_label_table(skewed, actg.y)).pvalue
    p_iid = chi2_contingency(_label_table(iid, actg.y)).pvalue
    assert p_skewed < 1e-6  # label mix clearly differs between sites
    assert p_iid > 0.01  # near-IID: no detectable difference
    sizes = [len(s) for s in skewed.sites]
    assert max(sizes) > 2 * min(sizes)  # unbalanced sites
    assert min(sizes) >= 10


def test_column_partition_groups_values(actg) -> None:  # type: ignore[no-untyped-def]
    part = make_partition(actg.y, actg.extra["strat"], n_sites=3, column=actg.extra["strat"])
    _check_disjoint_covering(part, len(actg))
    for site in part.sites:
        assert len(np.unique(actg.extra["strat"][site])) == 1
    idx = np.arange(10)
    values = np.array([5, 5, 1, 1, 1, 9, 9, 2, 2, 2])
    sites = column_partition(idx, values, 2)
    assert [sorted(set(values[s])) for s in sites] == [[1, 2], [5, 9]]


def test_errors_name_the_argument(actg) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PartitionError, match="n_sites"):
        make_partition(actg.y, None, n_sites=500)
    with pytest.raises(PartitionError, match="alpha"):
        make_partition(actg.y, None, alpha=0.0)
    with pytest.raises(PartitionError, match="fraction"):
        make_partition(actg.y, None, validation_fraction=1.5)
    with pytest.raises(PartitionError, match="n_sites"):
        make_partition(actg.y, None, n_sites=4, column=actg.extra["strat"])
