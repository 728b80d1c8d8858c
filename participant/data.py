"""The embedded clinical-trial data set: ACTG 175, read from the ``lifelines`` package.

ACTG 175 (AIDS Clinical Trials Group study 175) randomised 2139 HIV-infected adults to four
antiretroviral arms. ``lifelines`` 0.30.3 ships it as ``lifelines/datasets/ACTG175.csv``; we
check the file's shape and SHA-256 before use, so a different or missing file fails loudly.

Features are baseline covariates only (:data:`ACTG175_FEATURES`, ``arms`` one-hot); the
target is ``cens``. Columns measured after randomisation (:data:`ACTG175_LEAKAGE`) leak the
outcome and are never features; ``pidnum`` and the unnamed first column are identifiers.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from participant.schema import (
    ColumnKind,
    FeatureSpec,
    FederationSchema,
    SiteDataset,
    Task,
    encode_frame,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ACTG175_FEATURES",
    "ACTG175_LEAKAGE",
    "ACTG175_NOT_FEATURES",
    "ACTG175_SCHEMA",
    "ACTG175_SHA256",
    "ACTG175_SHAPE",
    "DatasetUnavailable",
    "actg175_frame",
    "actg175_path",
    "load_actg175",
]

ACTG175_SHA256 = "56fba31fa0d7bfbff9667b7149fd96a97c352e72aa582871a62a935e812f0e07"
ACTG175_SHAPE = (2139, 28)
ACTG175_TARGET = "cens"

#: Baseline covariates used as features, in this order (``arms`` is one-hot encoded).
ACTG175_FEATURES: tuple[str, ...] = (
    "age",
    "wtkg",
    "hemo",
    "homo",
    "drugs",
    "karnof",
    "oprior",
    "z30",
    "preanti",
    "race",
    "gender",
    "str2",
    "strat",
    "symptom",
    "cd40",
    "cd80",
    "arms",
)
#: Measured after treatment starts; they leak the outcome.
ACTG175_LEAKAGE: frozenset[str] = frozenset({"cd420", "cd496", "cd820", "offtrt", "r"})
#: Every column that must never be a feature (leakage, outcome, ids, duplicates of arms).
ACTG175_NOT_FEATURES: frozenset[str] = ACTG175_LEAKAGE | {
    "cens",
    "days",
    "pidnum",
    "Unnamed: 0",
    "treat",
    "zprior",
}


def _num(name: str, lo: float, hi: float, kind: ColumnKind = ColumnKind.INT) -> FeatureSpec:
    return FeatureSpec(name=name, kind=kind, min=lo, max=hi)


def _bin(name: str) -> FeatureSpec:
    return FeatureSpec(name=name, kind=ColumnKind.BINARY)


# Ranges from clinical plausibility and the study's eligibility (age >= 12, Karnofsky >= 70),
# wide enough to hold every value in the file; they are the federation's scaling constants.
ACTG175_SCHEMA = FederationSchema(
    name="actg175",
    target=ACTG175_TARGET,
    task=Task.BINARY,
    features=(
        _num("age", 12, 90),  # years; eligibility >= 12
        _num("wtkg", 30, 200, ColumnKind.FLOAT),  # body weight, kg
        _bin("hemo"),  # haemophilia
        _bin("homo"),  # homosexual activity
        _bin("drugs"),  # history of IV drug use
        _num("karnof", 70, 100),  # Karnofsky score; eligibility >= 70
        _bin("oprior"),  # non-ZDV antiretroviral therapy pre-175
        _bin("z30"),  # ZDV in the 30 days prior to 175
        _num("preanti", 0, 3650),  # days of prior antiretroviral therapy
        _bin("race"),  # 0 white, 1 non-white
        _bin("gender"),  # 0 female, 1 male
        _bin("str2"),  # antiretroviral history: 0 naive
        _num("strat", 1, 3),  # history stratum (ordinal 1..3)
        _bin("symptom"),  # symptomatic indicator
        _num("cd40", 0, 1500),  # CD4 count at baseline, cells/mm3
        _num("cd80", 0, 6000),  # CD8 count at baseline, cells/mm3
        FeatureSpec(name="arms", kind=ColumnKind.CATEGORICAL, levels=(0, 1, 2, 3)),
    ),
)


class DatasetUnavailable(RuntimeError):
    """The embedded data file is missing or is not the expected one."""


def actg175_path() -> Path:
    """Where the installed ``lifelines`` keeps ACTG175.csv (it may not exist)."""
    try:
        root = resources.files("lifelines")
    except ModuleNotFoundError:
        raise DatasetUnavailable(
            "ACTG 175 ships inside the 'lifelines' package (0.30.3), which is not installed"
        ) from None
    return Path(str(root)) / "datasets" / "ACTG175.csv"


def actg175_frame(path: Path | None = None) -> pd.DataFrame:
    """The raw table, after checking the file's SHA-256 and shape."""
    p = actg175_path() if path is None else path
    if not p.is_file():
        raise DatasetUnavailable(
            f"{p} not found: install lifelines==0.30.3, which ships datasets/ACTG175.csv"
        )
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != ACTG175_SHA256:
        raise DatasetUnavailable(
            f"{p}: SHA-256 {digest} differs from the expected {ACTG175_SHA256} "
            "(lifelines 0.30.3); refusing to train on an unknown file"
        )
    frame = pd.read_csv(p)
    if frame.shape != ACTG175_SHAPE:
        raise DatasetUnavailable(f"{p}: shape {frame.shape} differs from {ACTG175_SHAPE}")
    return frame


def load_actg175(path: Path | None = None) -> SiteDataset:
    """ACTG 175 encoded with :data:`ACTG175_SCHEMA`.

    ``extra`` carries every raw feature column (e.g. ``extra["strat"]``, the stratum 1..3)
    for stratified or by-column partitioning.
    """
    frame = actg175_frame(path)
    source = str(actg175_path() if path is None else path)
    encoded = encode_frame(frame, ACTG175_SCHEMA, source=source)
    logger.debug("ACTG 175: %d rows, positive rate %.3f", len(encoded), float(encoded.y.mean()))
    return SiteDataset(
        X=encoded.X,
        y=encoded.y,
        feature_names=encoded.feature_names,
        task=encoded.task,
        source=source,
        extra={c: frame[c].to_numpy(dtype=np.float64) for c in ACTG175_FEATURES},
    )
