"""Federation schema and the all-or-nothing site-table loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from participant.schema import (
    DataValidationError,
    FederationSchema,
    SchemaError,
    Task,
    load_site_table,
)

SCHEMA = FederationSchema.from_dict(
    {
        "name": "toy",
        "target": "event",
        "task": "binary",
        "features": [
            {"name": "age", "type": "int", "min": 18, "max": 90},
            {"name": "weight", "type": "float", "min": 30, "max": 200},
            {"name": "smoker", "type": "binary"},
            {"name": "arm", "type": "categorical", "levels": ["A", "B", "C"]},
        ],
    }
)

GOOD = "age,weight,smoker,arm,event,site_note\n18,30.0,0,A,0,x\n90,200,1,C,1,y\n54,115,1,B,0,z\n"


def write(tmp_path: Path, text: str, name: str = "site.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_csv_is_encoded_with_declared_ranges(tmp_path: Path) -> None:
    ds = load_site_table(write(tmp_path, GOOD), SCHEMA)
    assert ds.feature_names == ("age", "weight", "smoker", "arm=A", "arm=B", "arm=C")
    assert ds.X.dtype == np.float32 and ds.y.dtype == np.float32
    np.testing.assert_allclose(
        ds.X,
        [[0, 0, 0, 1, 0, 0], [1, 1, 1, 0, 0, 1], [36 / 72, 85 / 170, 1, 0, 1, 0]],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(ds.y, [0, 1, 0])


def test_parquet_matches_csv(tmp_path: Path) -> None:
    csv = load_site_table(write(tmp_path, GOOD), SCHEMA)
    frame = pd.read_csv(tmp_path / "site.csv")
    frame.to_parquet(tmp_path / "site.parquet")
    pq = load_site_table(tmp_path / "site.parquet", SCHEMA)
    np.testing.assert_array_equal(csv.X, pq.X)
    np.testing.assert_array_equal(csv.y, pq.y)


@pytest.mark.parametrize(
    ("text", "row", "column", "problem"),
    [
        ("age,weight,smoker,event\n20,70,0,1\n", None, "arm", "missing column"),
        ("age,weight,smoker,arm,event\n20,70,0,A,1\n20,heavy,0,A,1\n", 2, "weight", "finite"),
        ("age,weight,smoker,arm,event\n20.5,70,0,A,1\n", 1, "age", "not an integer"),
        ("age,weight,smoker,arm,event\n20,70,0,A,1\n20,70,0,A,\n", 2, "event", "missing"),
        ("age,weight,smoker,arm,event\n20,70,0,A,1\n20,70,0,A,nan\n", 2, "event", "missing"),
        ("age,weight,smoker,arm,event\n20,70,0,A,2\n", 1, "event", "binary label"),
        ("age,weight,smoker,arm,event\n20,70,2,A,1\n", 1, "smoker", "not 0 or 1"),
        ("age,weight,smoker,arm,event\n20,70,0,D,1\n", 1, "arm", "declared level"),
        ("age,weight,smoker,arm,event\n20,70,0,,1\n", 1, "arm", "missing"),
        ("age,weight,smoker,arm,event\n20,70,0,A,1\n17,70,0,A,1\n", 2, "age", "outside"),
        ("age,weight,smoker,arm,event\n", None, None, "no data rows"),
        ("", None, None, "empty"),
    ],
)
def test_bad_files_name_file_row_and_column(  # type: ignore[no-untyped-def]
    tmp_path: Path, text, row, column, problem
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataValidationError, match=problem) as info:
        load_site_table(path, SCHEMA)
    err = info.value
    assert err.source == str(path) and str(path) in str(err)
    assert err.row == row
    assert err.column == column
    if row is not None:
        assert f"row {row}" in str(err)
    if column is not None:
        assert repr(column) in str(err)


def test_parquet_with_nested_cells_is_a_clear_error(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "age": [20, 30],
            "weight": [[70.0], [80.0]],
            "smoker": [0, 1],
            "arm": ["A", "B"],
            "event": [0, 1],
        }
    )
    frame.to_parquet(tmp_path / "nested.parquet")
    with pytest.raises(DataValidationError, match="not a finite number") as info:
        load_site_table(tmp_path / "nested.parquet", SCHEMA)
    assert info.value.row == 1 and info.value.column == "weight"


def test_unsupported_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="no such file"):
        load_site_table(tmp_path / "absent.csv", SCHEMA)
    with pytest.raises(DataValidationError, match="unsupported file type"):
        load_site_table(write(tmp_path, GOOD, "site.xlsx"), SCHEMA)
    with pytest.raises(DataValidationError, match="cannot parse"):
        load_site_table(write(tmp_path, "not parquet", "site.parquet"), SCHEMA)


def test_regression_task_keeps_real_targets(tmp_path: Path) -> None:
    schema = FederationSchema.from_dict(
        {
            "target": "y",
            "task": "regression",
            "features": [{"name": "x", "type": "float", "min": 0, "max": 10}],
        }
    )
    ds = load_site_table(write(tmp_path, "x,y\n1,2.5\n3,-7.25\n"), schema)
    assert ds.task is Task.REGRESSION
    np.testing.assert_array_equal(ds.y, [2.5, -7.25])


def test_toml_round_trip(tmp_path: Path) -> None:
    toml = tmp_path / "fed.toml"
    toml.write_text(
        '[schema]\nname = "toy"\ntarget = "event"\ntask = "binary"\n'
        '[[schema.features]]\nname = "age"\ntype = "int"\nmin = 18\nmax = 90\n'
        '[[schema.features]]\nname = "arm"\ntype = "categorical"\nlevels = [0, 1]\n'
    )
    schema = FederationSchema.from_toml(toml)
    assert schema.feature_names == ("age", "arm=0", "arm=1")
    assert FederationSchema.from_dict(schema.to_dict()) == schema
    broken = tmp_path / "broken.toml"
    broken.write_text("[schema\n")
    for bad in (broken, tmp_path / "missing.toml"):
        with pytest.raises(SchemaError, match=bad.name):
            FederationSchema.from_toml(bad)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"target": "y", "features": []}, "features: at least one"),
        ({"target": "y", "features": "age"}, "features: expected a list"),
        ({"target": "y", "features": [{"name": "a", "type": "int"}]}, "need 'min' and 'max'"),
        (
            {"target": "y", "features": [{"name": "a", "type": "real", "min": 0, "max": 1}]},
            r"features\[0\]\.type",
        ),
        (
            {"target": "y", "features": [{"name": "a", "type": "float", "min": 2, "max": 1}]},
            "must be <",
        ),
        (
            {"target": "y", "features": [{"name": "a", "type": "categorical", "levels": [1]}]},
            "at least 2",
        ),
        ({"target": "a", "features": [{"name": "a", "type": "binary"}]}, "also listed"),
        (
            {"target": "y", "task": "survival", "features": [{"name": "a", "type": "binary"}]},
            "task",
        ),
        (
            {"target": "y", "features": [{"name": "a", "type": "binary", "units": "kg"}]},
            "unknown keys",
        ),
        ({"features": [{"name": "a", "type": "binary"}]}, "target"),
    ],
)
def test_schema_errors_name_the_field(table, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SchemaError, match=match):
        FederationSchema.from_dict(table)
