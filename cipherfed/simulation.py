"""In-process federated simulation (no crypto, no network) and its centralized baseline.

:func:`run_simulation` partitions a data set into sites plus a fixed validation set, then
for every round: each site trains locally from the global weights (:class:`LocalTrainer`),
an optional per-site privacy step transforms its delta, an aggregation function (plaintext
FedAvg by default) produces the new global weights, and the global model is evaluated on
the validation set. A centralized model with the same architecture is trained on the union
of the sites' rows with the same number of optimizer steps per round (Σ_k N_k), so both
have processed the same number of mini-batches at every round.

Two plug-in points let later work reuse this loop unchanged:

* ``privacy_step(site_id, delta, n_iters, rng) -> shared_delta`` (clipping, SVT, ...);
* ``aggregate(global_flat, deltas, n_iters) -> new_global_flat`` (e.g. CKKS aggregation).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from coordinator.fedavg import Weighting, fedavg
from participant.data import load_actg175
from participant.model import build_mlp, flatten_params, load_flat, n_params
from participant.partition import Partition, make_partition
from participant.schema import SiteDataset, Task
from participant.training import EvalMetrics, LocalTrainer, TrainConfig, evaluate

logger = logging.getLogger(__name__)

__all__ = [
    "Aggregator",
    "PrivacyStep",
    "RoundMetrics",
    "SimulationConfig",
    "SimulationResult",
    "majority_baseline",
    "run_simulation",
]

PrivacyStep = Callable[[int, np.ndarray, int, np.random.Generator], np.ndarray]
Aggregator = Callable[[np.ndarray, Sequence[np.ndarray], Sequence[int]], np.ndarray]
RoundCallback = Callable[["RoundMetrics"], None]

#: Defaults tuned on ACTG 175 (13 sites, seed 0): see docs/training.md.
DEFAULT_TRAIN = TrainConfig(local_epochs=1.0, batch_size=32, lr=1e-3, pos_weight=3.0)


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines a simulation run (validated; errors name the field)."""

    rounds: int = 30
    n_sites: int = 13
    seed: int = 0
    alpha: float = 1.0
    partition_column: str | None = None
    validation_fraction: float = 0.15
    validation_seed: int = 0
    min_site_size: int = 10
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.0
    train: TrainConfig = DEFAULT_TRAIN
    weighting: Weighting = "iterations"
    centralized: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds: {self.rounds} must be >= 1")
        if self.n_sites < 1:
            raise ValueError(f"n_sites: {self.n_sites} must be >= 1")
        if not self.alpha > 0:
            raise ValueError(f"alpha: {self.alpha} must be > 0")
        if self.weighting not in ("iterations", "uniform"):
            raise ValueError(f"weighting: {self.weighting!r} is not 'iterations' or 'uniform'")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: {self.hidden} must be non-empty widths >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["train"]["dp_sgd"] = None if self.train.dp_sgd is None else repr(self.train.dp_sgd)
        return d


@dataclass(frozen=True)
class RoundMetrics:
    round: int
    federated: EvalMetrics
    centralized: EvalMetrics | None
    mean_train_loss: float
    total_iters: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "federated": self.federated.as_dict(),
            "centralized": None if self.centralized is None else self.centralized.as_dict(),
            "mean_train_loss": self.mean_train_loss,
            "total_iters": self.total_iters,
            "seconds": self.seconds,
        }


@dataclass
class SimulationResult:
    config: SimulationConfig
    rounds: list[RoundMetrics]
    federated: EvalMetrics
    centralized: EvalMetrics | None
    majority: EvalMetrics
    site_sizes: list[int]
    site_iters: list[int]
    site_positive_rate: list[float]
    validation_size: int
    n_params: int
    wall_seconds: float
    final_flat: np.ndarray = field(repr=False)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "seed": self.config.seed,
            "n_params": self.n_params,
            "sites": {
                "sizes": self.site_sizes,
                "n_iters": self.site_iters,
                "positive_rate": self.site_positive_rate,
            },
            "validation_size": self.validation_size,
            "rounds": [r.as_dict() for r in self.rounds],
            "federated": self.federated.as_dict(),
            "centralized": None if self.centralized is None else self.centralized.as_dict(),
            "majority_class": self.majority.as_dict(),
            "wall_seconds": self.wall_seconds,
        }


def majority_baseline(train_y: np.ndarray, val: SiteDataset) -> EvalMetrics:
    """A constant predictor: the training prevalence (log-loss), the majority class (accuracy)."""
    y = val.y.astype(np.float64)
    if val.task is Task.REGRESSION:
        return EvalMetrics(
            n=len(val), loss=float(np.mean((y - train_y.mean()) ** 2)), auc=None, accuracy=None
        )
    p = float(np.clip(train_y.mean(), 1e-7, 1 - 1e-7))
    loss = float(-np.mean(y * math.log(p) + (1 - y) * math.log(1 - p)))
    accuracy = float(np.mean(y == (1.0 if p >= 0.5 else 0.0)))
    return EvalMetrics(n=len(val), loss=loss, auc=0.5, accuracy=accuracy)


def _partition(config: SimulationConfig, data: SiteDataset) -> Partition:
    strata = data.extra.get("strat")
    column = None
    if config.partition_column is not None:
        if config.partition_column not in data.extra:
            raise ValueError(
                f"partition_column: {config.partition_column!r} not among the data set's raw "
                f"columns {sorted(data.extra)}"
            )
        column = data.extra[config.partition_column]
    return make_partition(
        data.y,
        strata,
        n_sites=config.n_sites,
        alpha=config.alpha,
        seed=config.seed,
        validation_fraction=config.validation_fraction,
        validation_seed=config.validation_seed,
        column=column,
        min_size=config.min_site_size,
    )


def run_simulation(
    config: SimulationConfig,
    *,
    dataset: SiteDataset | None = None,
    privacy_step: PrivacyStep | None = None,
    aggregate: Aggregator | None = None,
    on_round: RoundCallback | None = None,
) -> SimulationResult:
    """Run ``config.rounds`` federated rounds (ACTG 175 unless ``dataset`` is given)."""
    started = time.perf_counter()
    data = load_actg175() if dataset is None else dataset
    part = _partition(config, data)
    val = data.subset(part.validation)
    sites = [data.subset(idx) for idx in part.sites]
    in_features = data.X.shape[1]

    def factory() -> nn.Module:
        return build_mlp(in_features, config.hidden, config.dropout)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        global_model = factory()
    global_flat = flatten_params(global_model)
    trainers = [
        LocalTrainer(factory, site, config.train, device=config.device, seed=config.seed * 1000 + k)
        for k, site in enumerate(sites)
    ]
    site_iters = [t.n_iters for t in trainers]
    agg: Aggregator = aggregate or functools.partial(fedavg, weighting=config.weighting)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(len(sites))]

    central: LocalTrainer | None = None
    central_flat = global_flat.copy()
    if config.centralized:
        union = data.subset(part.train)
        central_cfg = replace(
            config.train, local_epochs=None, local_iters=sum(site_iters), momentum_restart=False
        )
        central = LocalTrainer(
            factory, union, central_cfg, device=config.device, seed=config.seed * 1000 + 999
        )
    eval_model = factory().to(trainers[0].device)

    history: list[RoundMetrics] = []
    for t in range(1, config.rounds + 1):
        t0 = time.perf_counter()
        deltas: list[np.ndarray] = []
        losses: list[float] = []
        for k, trainer in enumerate(trainers):
            res = trainer.run_round(global_flat)
            delta = res.delta
            if privacy_step is not None:
                delta = np.asarray(privacy_step(k, delta, res.n_iters, rngs[k]), dtype=np.float64)
            deltas.append(delta)
            losses.append(res.loss)
        global_flat = agg(global_flat, deltas, site_iters)
        load_flat(eval_model, global_flat)
        fed_metrics = evaluate(eval_model, val)
        central_metrics = None
        if central is not None:
            central_flat = central_flat + central.run_round(central_flat).delta
            load_flat(eval_model, central_flat)
            central_metrics = evaluate(eval_model, val)
        metrics = RoundMetrics(
            round=t,
            federated=fed_metrics,
            centralized=central_metrics,
            mean_train_loss=float(np.nanmean(losses)),
            total_iters=sum(site_iters),
            seconds=time.perf_counter() - t0,
        )
        history.append(metrics)
        logger.debug("round %d: %s", t, metrics.as_dict())
        if on_round is not None:
            on_round(metrics)

    return SimulationResult(
        config=config,
        rounds=history,
        federated=history[-1].federated,
        centralized=history[-1].centralized,
        majority=majority_baseline(data.y[part.train], val),
        site_sizes=[len(s) for s in sites],
        site_iters=site_iters,
        site_positive_rate=[float(s.y.mean()) for s in sites],
        validation_size=len(val),
        n_params=n_params(global_model),
        wall_seconds=time.perf_counter() - started,
        final_flat=global_flat,
    )
