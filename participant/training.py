"""One site's local round: load the global weights, run N_k Adam steps, return (ΔW, N_k).

Rule for N_k: if ``TrainConfig.local_iters`` is set every site runs exactly that many
iterations (``local_epochs`` is then ignored); otherwise
``N_k = ceil(local_epochs * n_k / batch_size)``, so larger sites run more iterations and
weigh more in FedAvg (the paper's weighting by local iterations).

Momentum restart (default on): the Adam state (``exp_avg``, ``exp_avg_sq``, ``step``) is
discarded at the start of every round by creating a new optimizer. With it off, one
optimizer lives across rounds; the global weights are copied into the same parameter
tensors in place, so its state keeps tracking them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from participant.device import resolve_device
from participant.model import flatten_params, load_flat
from participant.schema import SiteDataset, Task

if TYPE_CHECKING:
    from dp_accounting import DpEvent

    from participant.privacy.config import DPSGDConfig

logger = logging.getLogger(__name__)

__all__ = [
    "EvalMetrics",
    "LocalResult",
    "LocalTrainer",
    "TrainConfig",
    "evaluate",
    "roc_auc",
]


@dataclass(frozen=True)
class TrainConfig:
    """Local-training hyper-parameters; invalid values raise ``ValueError`` naming the field.

    N_k rule: ``local_iters``, when set, fixes N_k for every site; otherwise
    ``N_k = ceil(local_epochs * n_k / batch_size)``. ``pos_weight`` up-weights positive
    labels in the binary loss. Field order follows docs/interfaces.md.
    """

    local_iters: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    momentum_restart: bool = True
    weight_decay: float = 0.0
    local_epochs: float | None = 1.0
    pos_weight: float | None = None
    dp_sgd: DPSGDConfig | None = None

    def __post_init__(self) -> None:
        if self.local_iters is None and self.local_epochs is None:
            raise ValueError("local_epochs/local_iters: set at least one of them")
        if self.local_iters is not None and (
            isinstance(self.local_iters, bool)
            or not isinstance(self.local_iters, int)
            or self.local_iters < 1
        ):
            raise ValueError(f"local_iters: {self.local_iters} must be an integer >= 1")
        if self.local_epochs is not None and not (
            math.isfinite(self.local_epochs) and self.local_epochs > 0
        ):
            raise ValueError(f"local_epochs: {self.local_epochs} must be > 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: {self.batch_size} must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: {self.lr} must be > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay: {self.weight_decay} must be >= 0")
        if self.pos_weight is not None and not (
            math.isfinite(self.pos_weight) and self.pos_weight > 0
        ):
            raise ValueError(f"pos_weight: {self.pos_weight} must be > 0")

    def iterations_for(self, n_samples: int) -> int:
        """N_k for a site holding ``n_samples`` rows."""
        if self.local_iters is not None:
            return int(self.local_iters)
        assert self.local_epochs is not None
        return max(1, math.ceil(self.local_epochs * n_samples / self.batch_size))


@dataclass(frozen=True)
class LocalResult:
    """ΔW = W_local − W(t−1) (float64), N_k and the mean training loss of the round."""

    delta: np.ndarray
    n_iters: int
    loss: float
    dp_events: list[DpEvent] = field(default_factory=list)


def _loss_fn(task: Task, pos_weight: float | None, device: torch.device) -> nn.Module:
    if task is Task.REGRESSION:
        return nn.MSELoss(reduction="sum")
    weight = None if pos_weight is None else torch.tensor([pos_weight], device=device)
    return nn.BCEWithLogitsLoss(reduction="sum", pos_weight=weight)


def _cycle(loader: DataLoader[tuple[torch.Tensor, ...]]) -> Iterator[tuple[torch.Tensor, ...]]:
    while True:
        yield from loader


class LocalTrainer:
    """Holds one site's model, data and (optionally persistent) optimizer."""

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        dataset: SiteDataset,
        config: TrainConfig,
        device: str | torch.device | None = None,
        seed: int = 0,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError(f"dataset: {dataset.source} has no rows")
        self.config = config
        self.dataset = dataset
        self.device = resolve_device(device)
        self.seed = seed
        self.model = model_factory().to(self.device)
        self.optimizer = self._new_optimizer()
        self._generator = torch.Generator().manual_seed(seed)
        self._rounds = 0
        self._data = TensorDataset(
            torch.from_numpy(dataset.X).to(self.device),
            torch.from_numpy(dataset.y).to(self.device),
        )
        self._loss = _loss_fn(dataset.task, config.pos_weight, self.device)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )

    @property
    def n_iters(self) -> int:
        """N_k this site runs per round."""
        return self.config.iterations_for(len(self.dataset))

    def run_round(self, global_flat: np.ndarray) -> LocalResult:
        """Train from ``global_flat`` for N_k iterations and return the update."""
        start = np.asarray(global_flat, dtype=np.float64)
        load_flat(self.model, start)
        if self.config.momentum_restart:
            self.optimizer = self._new_optimizer()
        n_iters = self.n_iters
        loader: DataLoader[tuple[torch.Tensor, ...]] = DataLoader(
            self._data,
            batch_size=min(self.config.batch_size, len(self.dataset)),
            shuffle=True,
            generator=self._generator,
        )
        model: nn.Module = self.model
        optimizer: torch.optim.Optimizer = self.optimizer
        events: list[DpEvent] = []
        if self.config.dp_sgd is not None:
            from participant.privacy.dpsgd import attach_dp_sgd

            attachment = attach_dp_sgd(
                self.model,
                self.optimizer,
                loader,
                self.config.dp_sgd,
                steps=n_iters,
                generator=self._generator,
            )
            model, optimizer, loader = attachment.model, attachment.optimizer, attachment.loader
        model.train()
        losses: list[float] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + self._rounds)  # dropout, reproducibly
            batches = _cycle(loader)
            for _ in range(n_iters):
                xb, yb = next(batches)
                optimizer.zero_grad(set_to_none=True)
                out = model(xb).reshape(-1)
                loss = self._loss(out, yb) / max(1, int(yb.shape[0]))
                loss.backward()
                optimizer.step()
                if yb.shape[0] > 0:
                    losses.append(float(loss.detach()))
        if self.config.dp_sgd is not None:
            events = list(attachment.events())
        self._rounds += 1
        delta = flatten_params(self.model) - start
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        logger.debug(
            "local round: N_k=%d loss=%.4f |ΔW|=%.4g",
            n_iters,
            mean_loss,
            float(np.linalg.norm(delta)),
        )
        return LocalResult(delta=delta, n_iters=n_iters, loss=mean_loss, dp_events=events)


@dataclass(frozen=True)
class EvalMetrics:
    """Validation metrics; ``auc``/``accuracy`` are ``None`` for regression or one class."""

    n: int
    loss: float
    auc: float | None
    accuracy: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "loss": self.loss, "auc": self.auc, "accuracy": self.accuracy}


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with midranks for ties)."""
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"scores: shape {s.shape} differs from y_true {y.shape}")
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = int(y.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("y_true: AUC needs both classes present")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate(
    model: nn.Module, dataset: SiteDataset, device: str | torch.device | None = None
) -> EvalMetrics:
    """Unweighted loss (log-loss or MSE), plus AUC and accuracy at 0.5 for binary tasks."""
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(dataset.X).to(dev)).reshape(-1).to("cpu", torch.float64)
    model.train()
    y = torch.from_numpy(dataset.y).to(torch.float64)
    if dataset.task is Task.REGRESSION:
        mse = float(torch.mean((out - y) ** 2))
        return EvalMetrics(n=len(dataset), loss=mse, auc=None, accuracy=None)
    loss = float(nn.functional.binary_cross_entropy_with_logits(out, y))
    prob = torch.sigmoid(out).numpy()
    accuracy = float(np.mean((prob >= 0.5) == (dataset.y == 1)))
    labels = dataset.y
    auc = roc_auc(labels, out.numpy()) if 0 < labels.sum() < len(labels) else None
    return EvalMetrics(n=len(dataset), loss=loss, auc=auc, accuracy=accuracy)
