"""ACTG 175: integrity checks and the leakage exclusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from participant.data import (
    ACTG175_FEATURES,
    ACTG175_LEAKAGE,
    ACTG175_NOT_FEATURES,
    ACTG175_SCHEMA,
    DatasetUnavailable,
    actg175_frame,
    actg175_path,
    load_actg175,
)


@pytest.fixture(scope="module")
def actg():  # type: ignore[no-untyped-def]
    return load_actg175()


def test_file_shape_and_target(actg) -> None:  # type: ignore[no-untyped-def]
    frame = actg175_frame()
    assert frame.shape == (2139, 28)
    assert len(actg) == 2139
    assert actg.y.dtype == np.float32 and actg.X.dtype == np.float32
    assert set(np.unique(actg.y)) == {0.0, 1.0}
    assert actg.y.mean() == pytest.approx(521 / 2139, abs=1e-6)  # 24.4 % events
    np.testing.assert_array_equal(actg.y, frame["cens"].to_numpy(dtype=np.float32))


def test_features_are_exactly_the_baseline_covariates(actg) -> None:  # type: ignore[no-untyped-def]
    raw_columns = {f.name for f in ACTG175_SCHEMA.features}
    assert raw_columns == set(ACTG175_FEATURES)
    assert ACTG175_SCHEMA.target == "cens"
    expected = [c for c in ACTG175_FEATURES if c != "arms"] + [f"arms={a}" for a in range(4)]
    assert list(actg.feature_names) == expected
    assert actg.X.shape == (2139, 20)


def test_leakage_columns_are_never_features(actg) -> None:  # type: ignore[no-untyped-def]
    assert {"cd420", "cd496", "cd820", "offtrt", "r"} == set(ACTG175_LEAKAGE)
    encoded = {name.split("=")[0] for name in actg.feature_names}
    raw = {f.name for f in ACTG175_SCHEMA.features}
    for banned in ACTG175_NOT_FEATURES:
        assert banned not in encoded and banned not in raw, banned
    # and no encoded column equals a leakage column up to scaling
    frame = actg175_frame()
    for col in ("cd420", "cd820", "offtrt", "r"):
        leak = frame[col].to_numpy(dtype=np.float64)
        for j in range(actg.X.shape[1]):
            corr = np.corrcoef(leak, actg.X[:, j])[0, 1]
            assert abs(corr) < 0.99, (col, actg.feature_names[j])


def test_scaling_uses_declared_ranges(actg) -> None:  # type: ignore[no-untyped-def]
    assert actg.X.min() >= 0.0 and actg.X.max() <= 1.0
    frame = actg175_frame()
    j = actg.feature_names.index("cd40")
    np.testing.assert_allclose(actg.X[:, j], frame["cd40"].to_numpy() / 1500.0, rtol=1e-6)
    arms = actg.X[:, -4:]
    np.testing.assert_array_equal(arms.sum(axis=1), np.ones(2139))
    np.testing.assert_array_equal(arms.argmax(axis=1), frame["arms"].to_numpy())


def test_missing_or_altered_file_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="not found"):
        load_actg175(tmp_path / "ACTG175.csv")
    altered = tmp_path / "ACTG175.csv"
    data = actg175_path().read_bytes()
    altered.write_bytes(data.replace(b",948,", b",949,", 1))
    assert altered.read_bytes() != data
    with pytest.raises(DatasetUnavailable, match="SHA-256"):
        load_actg175(altered)
