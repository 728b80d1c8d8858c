"""From a federation file to the objects the services run: site data, model, layout, trainer.

Shared by the participant and coordinator commands and the demo, and built to match
:func:`cipherfed.simulation.run_simulation` exactly (same partition of ACTG 175, same
initial model, same trainer seeds), so the encrypted federation can be compared with the
plaintext FedAvg reference run with the same configuration.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

import crypto
from cipherfed.config import FederationConfig, is_actg175_schema, resolve_preset
from participant.model import build_mlp, flatten_params, param_shapes

if TYPE_CHECKING:  # the data and training stack is imported where needed (start-up cost)
    from cipherfed.simulation import PrivacyStep, SimulationConfig
    from participant.partition import Partition
    from participant.privacy.step import SharingConfig
    from participant.schema import FederationSchema, SiteDataset
    from participant.training import TrainConfig

logger = logging.getLogger(__name__)


def train_config(cfg: FederationConfig) -> TrainConfig:
    from cipherfed.simulation import DEFAULT_TRAIN
    from participant.privacy.config import DPSGDConfig
    from participant.training import TrainConfig

    t = cfg.training
    d = cfg.privacy.dp_sgd
    dp_sgd = None
    if d is not None:  # patient-level DP-SGD inside each site, calibrated for all rounds
        dp_sgd = DPSGDConfig(
            target_epsilon=d.target_epsilon,
            target_delta=d.target_delta,
            max_grad_norm=d.max_grad_norm,
            planned_rounds=cfg.federation.rounds,
        )
    return TrainConfig(
        local_epochs=None if t.local_iters is not None else t.local_epochs,
        local_iters=t.local_iters,
        batch_size=t.batch_size,
        lr=t.lr,
        momentum_restart=t.momentum_restart,
        weight_decay=t.weight_decay,
        pos_weight=DEFAULT_TRAIN.pos_weight,
        dp_sgd=dp_sgd,
    )


def simulation_config(cfg: FederationConfig, rounds: int | None = None) -> SimulationConfig:
    """The plaintext simulation that a federation file describes (for the reference run)."""
    from cipherfed.simulation import SimulationConfig

    if not is_actg175_schema(cfg.schema):  # the reference run trains on ACTG 175 partitions
        raise ValueError(
            f"federation {cfg.federation.id!r} declares its own [schema]; "
            "the plaintext reference runs only on the embedded ACTG 175 data"
        )
    weighting = cfg.federation.weighting
    if weighting not in ("iterations", "uniform"):
        raise ValueError(f"[federation].weighting {weighting!r} has no plaintext reference")
    return SimulationConfig(
        rounds=rounds or cfg.federation.rounds,
        n_sites=len(cfg.sites),
        seed=cfg.training.seed,
        hidden=tuple(cfg.model.hidden),
        dropout=cfg.model.dropout,
        train=train_config(cfg),
        weighting=weighting,  # type: ignore[arg-type]
    )


def sharing_config(cfg: FederationConfig) -> SharingConfig | None:
    """What each site shares per round under ``[privacy]`` (``None``: the whole update).

    Used by the participant daemon and by the plaintext reference, so both apply the same
    mechanism with the same settings. DP-SGD (``[privacy.dp_sgd]``) is part of training
    (:func:`train_config`), not of this step.
    """
    from participant.privacy.config import PartialShareConfig, SVTConfig

    p = cfg.privacy
    if p.mechanism == "svt":
        return SVTConfig(
            fraction=p.sharing_fraction, gamma=p.gamma, tau=p.threshold, epsilon=p.epsilon
        )
    if p.mechanism == "partial":
        return PartialShareConfig(fraction=p.sharing_fraction, gamma=p.gamma)
    return None


def simulation_privacy_step(cfg: FederationConfig) -> PrivacyStep | None:
    """The sites' sharing step for :func:`cipherfed.simulation.run_simulation`.

    Same mechanism and settings as the daemons (:func:`sharing_config`), without a ledger
    (the reference spends nothing real) and with the simulation's own noise generators,
    so the reference's noise is independent of the federation's.
    """
    from participant.privacy.config import SVTConfig
    from participant.privacy.partial import partial_share
    from participant.privacy.svt import svt_select

    sharing = sharing_config(cfg)
    if sharing is None:
        return None

    def step(site: int, delta: np.ndarray, n_iters: int, rng: np.random.Generator) -> np.ndarray:
        if isinstance(sharing, SVTConfig):
            return svt_select(delta, n_iters, sharing, rng).sparse
        return partial_share(delta, n_iters, sharing).sparse

    return step


@functools.cache
def _actg175() -> SiteDataset:
    from participant.data import load_actg175

    return load_actg175()


def embedded_partition(cfg: FederationConfig) -> Partition:
    from participant.partition import make_partition

    sim = simulation_config(cfg)
    data = _actg175()
    return make_partition(
        data.y,
        data.extra.get("strat"),
        n_sites=sim.n_sites,
        alpha=sim.alpha,
        seed=sim.seed,
        validation_fraction=sim.validation_fraction,
        validation_seed=sim.validation_seed,
        min_size=sim.min_site_size,
    )


@dataclass(frozen=True)
class SiteData:
    dataset: SiteDataset
    index: int  # position of the site in the federation (seeds its trainer)


class EvaluationUnavailable(ValueError):
    """The federation has no validation set (custom schema without ``validation_data``)."""


def federation_schema(cfg: FederationConfig) -> FederationSchema:
    """The federation file's ``[schema]``, or the embedded ACTG 175 schema when absent."""
    if cfg.schema is not None:
        return cfg.schema
    from participant.data import ACTG175_SCHEMA

    return ACTG175_SCHEMA


def site_data(cfg: FederationConfig, site_id: str) -> SiteData:
    """The site's training rows: an embedded ACTG 175 partition or its own CSV/Parquet file
    (read against the federation's schema)."""
    site = cfg.site(site_id)
    index = cfg.site_ids.index(site_id)
    part_index = site.embedded_partition
    if part_index is None:
        from participant.schema import load_site_table

        return SiteData(load_site_table(site.data, federation_schema(cfg)), index)
    part = embedded_partition(cfg)
    if not 0 <= part_index < part.n_sites:
        raise ValueError(
            f"site {site_id!r}: data {site.data!r} names partition {part_index}, "
            f"the federation has partitions 0..{part.n_sites - 1}"
        )
    return SiteData(_actg175().subset(part.sites[part_index]), part_index)


def validation_set(cfg: FederationConfig) -> SiteDataset:
    """Held-out rows for evaluation: ``[federation].validation_data`` read against the
    federation's schema when set, else the embedded ACTG 175 validation split (only for a
    federation on the ACTG 175 schema; otherwise :class:`EvaluationUnavailable`)."""
    path = cfg.federation.validation_data
    if path is not None:
        from participant.schema import load_site_table

        return load_site_table(path, federation_schema(cfg))
    if not is_actg175_schema(cfg.schema):
        raise EvaluationUnavailable(
            f"federation {cfg.federation.id!r} declares its own [schema] but no "
            "[federation].validation_data file, so there is no validation set to evaluate on"
        )
    return _actg175().subset(embedded_partition(cfg).validation)


def in_features(cfg: FederationConfig) -> int:
    """The model's input width: the encoded width of the federation's schema."""
    return federation_schema(cfg).n_features


def model_factory(cfg: FederationConfig) -> Callable[[], nn.Module]:
    n_in, hidden, dropout = in_features(cfg), tuple(cfg.model.hidden), cfg.model.dropout
    return lambda: build_mlp(n_in, hidden, dropout)


def initial_model(cfg: FederationConfig) -> np.ndarray:
    """``W(0)``, seeded like the simulation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.training.seed)
        model = model_factory(cfg)()
    return flatten_params(model)


def ckks_params(cfg: FederationConfig) -> crypto.CkksParams:
    return crypto.PRESETS[resolve_preset(cfg)]


def chunk_layout(cfg: FederationConfig) -> crypto.ChunkLayout:
    shapes = param_shapes(model_factory(cfg)())
    return crypto.ChunkLayout.from_shapes(shapes, ckks_params(cfg).values_per_ciphertext)


def trainer_seed(cfg: FederationConfig, index: int) -> int:
    return cfg.training.seed * 1000 + index
