"""The federation schema in the federation file: parsing, round trip, site data, model width."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from cipherfed import site_setup
from cipherfed.config import (
    ConfigError,
    dumps_config,
    is_actg175_schema,
    load_config,
    loads_config,
)
from cipherfed.provisioning import load_kit, provision
from participant.data import ACTG175_SCHEMA
from participant.schema import ColumnKind, DataValidationError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "federation.toml"

SCHEMA = """
[schema]
name = "toy-trial"
target = "event"
task = "binary"

[[schema.features]]
name = "age"
type = "int"
min = 18
max = 90

[[schema.features]]
name = "weight"
type = "float"
min = 30
max = 200.5

[[schema.features]]
name = "smoker"
type = "binary"

[[schema.features]]
name = "arm"
type = "categorical"
levels = ["A", "B", "C"]
"""


def fed(sites: str = "", schema: str = SCHEMA, federation_extra: str = "") -> str:
    sites = sites or (
        '[[sites]]\nid = "s1"\ndata = "s1.csv"\n\n[[sites]]\nid = "s2"\ndata = "s2.csv"\n'
    )
    return (
        '[federation]\nid = "toy"\nmin_participants = 2\nrounds = 2\n'
        f"{federation_extra}\n{sites}\n{schema}"
    )


def write_site(path: Path, rows: list[tuple[object, ...]]) -> None:
    pd.DataFrame(rows, columns=["age", "weight", "smoker", "arm", "event"]).to_csv(
        path, index=False
    )


def test_schema_round_trips_through_dumps_config() -> None:
    cfg = loads_config(fed(federation_extra='validation_data = "val.csv"'))
    assert cfg.schema is not None and cfg.schema.name == "toy-trial"
    assert [f.kind for f in cfg.schema.features] == [
        ColumnKind.INT,
        ColumnKind.FLOAT,
        ColumnKind.BINARY,
        ColumnKind.CATEGORICAL,
    ]
    assert cfg.federation.validation_data == "val.csv"
    text = dumps_config(cfg)
    assert "[schema]" in text and text.count("[[schema.features]]") == 4
    assert loads_config(text) == cfg
    assert loads_config(dumps_config(loads_config(text))) == cfg


def test_absent_schema_is_actg175_and_is_not_written() -> None:
    cfg = loads_config(fed(schema=""))
    assert cfg.schema is None and cfg.federation.validation_data is None
    assert "[schema]" not in dumps_config(cfg) and "validation_data" not in dumps_config(cfg)
    assert site_setup.federation_schema(cfg) is ACTG175_SCHEMA
    assert site_setup.in_features(cfg) == ACTG175_SCHEMA.n_features


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        (SCHEMA.replace('type = "float"', 'type = "real"'), "[schema].features[1].type: 'real'"),
        (
            SCHEMA.replace("max = 200.5", "max = 200.5\nunit = 'kg'"),
            "[schema].features[1]: unknown",
        ),
        (SCHEMA.replace("max = 90\n", ""), "[schema] feature 'age': numeric features need"),
        (SCHEMA.replace('levels = ["A", "B", "C"]', 'levels = ["A"]'), "feature 'arm'"),
        (SCHEMA.replace('target = "event"', "target = 1"), "[schema].target: expected"),
        (SCHEMA.replace('task = "binary"', 'task = "survival"'), "[schema].task: 'survival'"),
        (SCHEMA.replace('name = "toy-trial"', 'name = "t"\ncolour = "red"'), "[schema] unknown"),
        (SCHEMA.replace('name = "smoker"', 'name = "age"'), "[schema].features: duplicate"),
        ("[schema]\ntarget = 'event'", "[schema].features: expected a list"),
    ],
)
def test_bad_schema_entries_name_the_field(schema: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads_config(fed(schema=schema), "fed.toml")
    assert str(err.value).startswith("fed.toml: ") and named in str(err.value)


def test_schema_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^fed.toml: \[schema\] must be a table, got str"):
        loads_config('schema = "actg175"\n' + fed(schema=""), "fed.toml")


def test_validation_data_must_be_a_path() -> None:
    with pytest.raises(ConfigError, match=r"\[federation\]\.validation_data must be a non-empty"):
        loads_config(fed(federation_extra="validation_data = 3"))


def test_custom_schema_refuses_embedded_actg175_sites() -> None:
    sites = '[[sites]]\nid = "s1"\ndata = "actg175:0"\n\n[[sites]]\nid = "s2"\ndata = "x.csv"\n'
    with pytest.raises(ConfigError, match=r"\[\[sites\]\] s1 use embedded 'actg175:' data"):
        loads_config(fed(sites=sites), "fed.toml")
    # A [schema] equal to ACTG 175's (whatever its name) keeps the embedded partitions.
    plain = loads_config(fed(sites=sites, schema=""))
    own = dataclasses.replace(ACTG175_SCHEMA, name="my-actg")
    cfg = loads_config(dumps_config(dataclasses.replace(plain, schema=own)))
    assert (
        cfg.schema is not None and cfg.schema.name == "my-actg" and "[schema]" in dumps_config(cfg)
    )
    assert is_actg175_schema(cfg.schema) and cfg.sites[0].embedded_partition == 0


def test_site_csv_is_read_against_the_federation_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_site(tmp_path / "s1.csv", [(40, 70.5, 0, "A", 1), (65, 90.0, 1, "C", 0)])
    write_site(tmp_path / "s2.csv", [(30, 55.0, 1, "B", 0), (91, 80.0, 0, "A", 1)])
    monkeypatch.chdir(tmp_path)
    cfg = loads_config(fed())
    data = site_setup.site_data(cfg, "s1")
    assert data.index == 0 and len(data.dataset) == 2
    assert data.dataset.feature_names == ("age", "weight", "smoker", "arm=A", "arm=B", "arm=C")
    assert data.dataset.X[0].tolist() == pytest.approx(
        [(40 - 18) / 72, (70.5 - 30) / 170.5, 0, 1, 0, 0]
    )
    assert data.dataset.y.tolist() == [1.0, 0.0]
    with pytest.raises(DataValidationError, match=r"row 2, column 'age'.*outside the declared"):
        site_setup.site_data(cfg, "s2")
    # The same file is not an ACTG 175 table: without [schema] it is refused.
    with pytest.raises(DataValidationError, match="missing column"):
        site_setup.site_data(loads_config(fed(schema="")), "s1")


def test_in_features_and_model_follow_the_schema() -> None:
    cfg = loads_config(fed())
    assert site_setup.in_features(cfg) == 6
    model = site_setup.model_factory(cfg)()
    first = next(p for p in model.parameters() if p.ndim == 2)
    assert first.shape[1] == 6
    assert site_setup.chunk_layout(cfg).total == site_setup.initial_model(cfg).size
    with pytest.raises(ValueError, match="plaintext reference runs only on the embedded ACTG"):
        site_setup.simulation_config(cfg)


def test_validation_set_for_a_custom_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(site_setup.EvaluationUnavailable, match="validation_data"):
        site_setup.validation_set(loads_config(fed()))
    write_site(tmp_path / "val.csv", [(50, 60.0, 1, "B", 1)])
    val = site_setup.validation_set(
        loads_config(fed(federation_extra='validation_data = "val.csv"'))
    )
    assert len(val) == 1 and val.X.shape[1] == 6


def test_example_federation_loads_with_its_sites(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the example's data paths are relative to the repository root
    cfg = load_config(EXAMPLE)
    assert cfg.schema is not None and not is_actg175_schema(cfg.schema)
    assert len(cfg.schema.features) == 8 and cfg.schema.target == "cens"
    assert {f.name for f in cfg.schema.features} < {f.name for f in ACTG175_SCHEMA.features}
    assert cfg.site_ids == ("site-a", "site-b", "site-c")
    assert all(s.embedded_partition is None for s in cfg.sites)
    width = site_setup.in_features(cfg)
    assert width == 11  # 7 numeric/binary + 4 levels of arms
    rows = []
    for sid in cfg.site_ids:
        data = site_setup.site_data(cfg, sid).dataset
        assert len(data) == 150 and data.X.shape == (150, width)
        assert 0 < float(data.y.mean()) < 1
        rows.append(pd.read_csv(cfg.site(sid).data))
    val = site_setup.validation_set(cfg)
    assert len(val) == 150 and val.X.shape[1] == width
    rows.append(pd.read_csv(str(cfg.federation.validation_data)))
    pooled = pd.concat(rows)
    assert len(pooled.drop_duplicates()) == len(pooled)  # disjoint slices
    assert loads_config(dumps_config(cfg)) == cfg


def test_provisioned_kits_carry_the_schema(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE)
    result = provision(cfg, tmp_path / "fed")
    for kit_path in (result.coordinator_kit, result.keyholder_kit, *result.site_kits.values()):
        kit = load_kit(kit_path)
        assert kit.config.schema == cfg.schema
        assert kit.config.federation.validation_data == "examples/validation.csv"
        assert kit.config == cfg
