"""Federation schema and the all-or-nothing loader for a site's own table.

A federation agrees on one :class:`FederationSchema`: the feature columns with their types
and declared value ranges, the target column and the task. Every site encodes its table
against it, so the feature vector means the same at every site. Scaling uses the
schema-declared ``[min, max]`` ranges, never statistics of pooled data: a numeric value x
becomes ``(x - min) / (max - min)`` in [0, 1]; a value outside the declared range is an
error, not silently clipped. Binary columns must hold 0 or 1; categorical columns are
one-hot encoded over their declared levels (an undeclared level is an error).
Missing values are errors everywhere (features and target).
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "ColumnKind",
    "DataValidationError",
    "FeatureSpec",
    "FederationSchema",
    "SchemaError",
    "SiteDataset",
    "Task",
    "encode_frame",
    "load_site_table",
]


class ColumnKind(StrEnum):
    FLOAT = "float"
    INT = "int"
    BINARY = "binary"
    CATEGORICAL = "categorical"


class Task(StrEnum):
    BINARY = "binary"
    REGRESSION = "regression"


class SchemaError(ValueError):
    """The schema itself is malformed; the message names the offending field."""


class DataValidationError(ValueError):
    """A site's table does not match the schema.

    ``source`` is the file (or data-set name), ``row`` the 1-based data row (``None`` when
    the problem concerns the whole table), ``column`` the column name (or ``None``).
    """

    def __init__(self, source: str, row: int | None, column: str | None, problem: str) -> None:
        self.source = source
        self.row = row
        self.column = column
        self.problem = problem
        where = [f"file {source}"]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


Level = int | str


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column: its kind and, for numeric kinds, the declared range."""

    name: str
    kind: ColumnKind
    min: float | None = None
    max: float | None = None
    levels: tuple[Level, ...] = ()

    def __post_init__(self) -> None:
        where = f"feature {self.name!r}"
        if not self.name:
            raise SchemaError("feature name: must be a non-empty string")
        if self.kind in (ColumnKind.FLOAT, ColumnKind.INT):
            if self.min is None or self.max is None:
                raise SchemaError(f"{where}: numeric features need 'min' and 'max'")
            if not (math.isfinite(self.min) and math.isfinite(self.max)):
                raise SchemaError(f"{where}: 'min' and 'max' must be finite")
            if not self.min < self.max:
                raise SchemaError(f"{where}: 'min' ({self.min}) must be < 'max' ({self.max})")
            if self.levels:
                raise SchemaError(f"{where}: 'levels' is only for categorical features")
        elif self.kind is ColumnKind.CATEGORICAL:
            if len(self.levels) < 2:
                raise SchemaError(f"{where}: categorical features need at least 2 'levels'")
            if len(set(self.levels)) != len(self.levels):
                raise SchemaError(f"{where}: 'levels' must be distinct")
            if self.min is not None or self.max is not None:
                raise SchemaError(f"{where}: 'min'/'max' are only for numeric features")
        elif self.min is not None or self.max is not None or self.levels:
            raise SchemaError(f"{where}: binary features take no 'min', 'max' or 'levels'")

    @property
    def encoded_names(self) -> tuple[str, ...]:
        """Names of the model inputs this column becomes (one per level if categorical)."""
        if self.kind is ColumnKind.CATEGORICAL:
            return tuple(f"{self.name}={level}" for level in self.levels)
        return (self.name,)


@dataclass(frozen=True)
class FederationSchema:
    """The columns every site must provide and how they are encoded."""

    features: tuple[FeatureSpec, ...]
    target: str
    task: Task = Task.BINARY
    name: str = "federation"

    def __post_init__(self) -> None:
        if not self.features:
            raise SchemaError("features: at least one feature column is required")
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"features: duplicate column names {dupes}")
        if not self.target:
            raise SchemaError("target: must be a non-empty column name")
        if self.target in names:
            raise SchemaError(f"target: {self.target!r} is also listed as a feature")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the encoded model inputs, in order."""
        return tuple(n for f in self.features for n in f.encoded_names)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def columns(self) -> tuple[str, ...]:
        """The raw table columns the schema reads (features then target)."""
        return (*(f.name for f in self.features), self.target)

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> FederationSchema:
        """Build from a plain mapping (e.g. a TOML table)::

        {"name": "...", "target": "y", "task": "binary",
         "features": [{"name": "age", "type": "int", "min": 18, "max": 90},
                      {"name": "arm", "type": "categorical", "levels": [0, 1, 2]}]}
        """
        if not isinstance(table, Mapping):
            raise SchemaError("schema: expected a table/mapping")
        unknown = set(table) - {"name", "target", "task", "features"}
        if unknown:
            raise SchemaError(f"schema: unknown keys {sorted(unknown)}")
        raw_features = table.get("features")
        if not isinstance(raw_features, Sequence) or isinstance(raw_features, str | bytes):
            raise SchemaError("features: expected a list of feature tables")
        features = tuple(_feature_from_dict(i, f) for i, f in enumerate(raw_features))
        target = table.get("target")
        if not isinstance(target, str):
            raise SchemaError("target: expected a column name (string)")
        task_raw = table.get("task", Task.BINARY.value)
        try:
            task = Task(task_raw)
        except ValueError:
            raise SchemaError(
                f"task: {task_raw!r} is not one of {[t.value for t in Task]}"
            ) from None
        name = table.get("name", "federation")
        if not isinstance(name, str):
            raise SchemaError("name: expected a string")
        return cls(features=features, target=target, task=task, name=name)

    @classmethod
    def from_toml(cls, path: str | Path, table: str | None = "schema") -> FederationSchema:
        """Load from a TOML file; ``table`` names the sub-table holding the schema."""
        try:
            with open(path, "rb") as fh:
                data: dict[str, Any] = tomllib.load(fh)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SchemaError(f"{path}: cannot read the schema: {exc}") from None
        if table is not None:
            if table not in data:
                raise SchemaError(f"{path}: no [{table}] table")
            data = data[table]
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        feats: list[dict[str, Any]] = []
        for f in self.features:
            d: dict[str, Any] = {"name": f.name, "type": f.kind.value}
            if f.kind in (ColumnKind.FLOAT, ColumnKind.INT):
                d["min"], d["max"] = f.min, f.max
            if f.kind is ColumnKind.CATEGORICAL:
                d["levels"] = list(f.levels)
            feats.append(d)
        return {
            "name": self.name,
            "target": self.target,
            "task": self.task.value,
            "features": feats,
        }


def _feature_from_dict(index: int, raw: Any) -> FeatureSpec:
    where = f"features[{index}]"
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{where}: expected a table")
    unknown = set(raw) - {"name", "type", "min", "max", "levels"}
    if unknown:
        raise SchemaError(f"{where}: unknown keys {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{where}.name: expected a non-empty string")
    try:
        kind = ColumnKind(str(raw.get("type")))
    except ValueError:
        raise SchemaError(
            f"{where}.type: {raw.get('type')!r} is not one of {[k.value for k in ColumnKind]}"
        ) from None
    bounds: dict[str, float | None] = {}
    for key in ("min", "max"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise SchemaError(f"{where}.{key}: expected a number")
        bounds[key] = None if value is None else float(value)
    levels_raw = raw.get("levels", ())
    if not isinstance(levels_raw, Sequence) or isinstance(levels_raw, str | bytes):
        raise SchemaError(f"{where}.levels: expected a list")
    for level in levels_raw:
        if isinstance(level, bool) or not isinstance(level, int | str):
            raise SchemaError(f"{where}.levels: {level!r} is not an integer or string")
    return FeatureSpec(
        name=name, kind=kind, min=bounds["min"], max=bounds["max"], levels=tuple(levels_raw)
    )


@dataclass(frozen=True)
class SiteDataset:
    """An encoded, validated table: ``X`` (n, d) float32 in [0, 1], ``y`` (n,) float32."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    task: Task = Task.BINARY
    source: str = "<memory>"
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.y.ndim != 1 or self.X.shape[0] != self.y.shape[0]:
            raise ValueError(f"SiteDataset: X {self.X.shape} and y {self.y.shape} disagree")
        if self.X.shape[1] != len(self.feature_names):
            raise ValueError("SiteDataset: X columns and feature_names disagree")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray) -> SiteDataset:
        """The rows ``indices`` (a copy), keeping names, task and extra columns aligned."""
        idx = np.asarray(indices, dtype=np.int64)
        return SiteDataset(
            X=self.X[idx],
            y=self.y[idx],
            feature_names=self.feature_names,
            task=self.task,
            source=self.source,
            extra={k: v[idx] for k, v in self.extra.items()},
        )


def load_site_table(path: str | Path, schema: FederationSchema) -> SiteDataset:
    """Read a CSV (``.csv``) or Parquet (``.parquet``/``.pq``) file and encode it.

    All-or-nothing: any problem raises :class:`DataValidationError` naming the file, the
    1-based data row and the column, and nothing is returned.
    """
    p = Path(path)
    source = str(p)
    if not p.is_file():
        raise DataValidationError(source, None, None, "no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(p, dtype=object, keep_default_na=True)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(p)
        else:
            raise DataValidationError(
                source, None, None, f"unsupported file type {suffix!r} (use .csv or .parquet)"
            )
    except DataValidationError:
        raise
    except pd.errors.EmptyDataError:
        raise DataValidationError(source, None, None, "file is empty (no header)") from None
    except Exception as exc:  # parser errors of every kind become one clear error
        raise DataValidationError(source, None, None, f"cannot parse: {exc}") from None
    dataset = encode_frame(frame, schema, source=source)
    logger.info("loaded %s: %d rows, %d features", source, len(dataset), dataset.X.shape[1])
    return dataset


def encode_frame(frame: pd.DataFrame, schema: FederationSchema, source: str) -> SiteDataset:
    """Validate ``frame`` against ``schema`` and encode it (see the module docstring)."""
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise DataValidationError(
            source, None, missing[0], f"missing column(s) {missing} required by the schema"
        )
    if len(frame) == 0:
        raise DataValidationError(source, None, None, "no data rows")
    blocks = [_encode_feature(frame[f.name], f, source) for f in schema.features]
    X = np.concatenate(blocks, axis=1).astype(np.float32)
    y = _encode_target(frame[schema.target], schema, source)
    return SiteDataset(
        X=X, y=y, feature_names=schema.feature_names, task=schema.task, source=source
    )


def _numeric(column: pd.Series, name: str, source: str) -> np.ndarray:
    """The column as float64; a missing or non-numeric cell is an error naming its row."""
    try:
        values: np.ndarray = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    except (TypeError, ValueError):  # cells pandas cannot even coerce (lists, dicts, ...)
        values = np.array([_to_float(cell) for cell in column.tolist()], dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        cell = column.iloc[i]
        if cell is None or (isinstance(cell, float) and math.isnan(cell)):
            problem = "missing value"
        else:
            problem = f"{cell!r} is not a finite number"
        raise DataValidationError(source, i + 1, name, problem)
    return values


def _to_float(cell: Any) -> float:
    if isinstance(cell, bool):
        return float(cell)
    try:
        return float(cell)
    except (TypeError, ValueError):
        return math.nan


def _encode_feature(column: pd.Series, spec: FeatureSpec, source: str) -> np.ndarray:
    n = len(column)
    if spec.kind is ColumnKind.CATEGORICAL:
        return _encode_categorical(column, spec, source)
    values = _numeric(column, spec.name, source)
    if spec.kind is ColumnKind.BINARY:
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                source, i + 1, spec.name, f"{column.iloc[i]!r} is not 0 or 1 (binary column)"
            )
        return values.reshape(n, 1)
    if spec.kind is ColumnKind.INT:
        bad = values != np.round(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                source, i + 1, spec.name, f"{column.iloc[i]!r} is not an integer"
            )
    assert spec.min is not None and spec.max is not None  # guaranteed by FeatureSpec
    bad = (values < spec.min) | (values > spec.max)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataValidationError(
            source,
            i + 1,
            spec.name,
            f"{values[i]:g} is outside the declared range [{spec.min:g}, {spec.max:g}]",
        )
    return ((values - spec.min) / (spec.max - spec.min)).reshape(n, 1)


def _encode_categorical(column: pd.Series, spec: FeatureSpec, source: str) -> np.ndarray:
    out = np.zeros((len(column), len(spec.levels)), dtype=np.float64)
    lookup: dict[str, int] = {str(level): j for j, level in enumerate(spec.levels)}
    for i, cell in enumerate(column.tolist()):
        key = _level_key(cell)
        if key is None:
            raise DataValidationError(source, i + 1, spec.name, "missing value")
        j = lookup.get(key)
        if j is None:
            raise DataValidationError(
                source,
                i + 1,
                spec.name,
                f"{cell!r} is not a declared level {list(spec.levels)}",
            )
        out[i, j] = 1.0
    return out


def _level_key(cell: Any) -> str | None:
    """A canonical string for a categorical cell (so 2, 2.0 and '2' match level 2)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    if isinstance(cell, float | np.floating) and float(cell).is_integer():
        return str(int(cell))
    if isinstance(cell, np.integer):
        return str(int(cell))
    text = str(cell).strip()
    try:
        as_float = float(text)
    except ValueError:
        return text
    return str(int(as_float)) if as_float.is_integer() else text


def _encode_target(column: pd.Series, schema: FederationSchema, source: str) -> np.ndarray:
    values = _numeric(column, schema.target, source)
    if schema.task is Task.BINARY:
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                source, i + 1, schema.target, f"{column.iloc[i]!r} is not a binary label 0/1"
            )
    return values.astype(np.float32)
