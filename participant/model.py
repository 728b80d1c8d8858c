"""The tabular MLP and its flat parameter vector (the unit every update is made of).

The flat vector is the concatenation of ``model.named_parameters()`` in order, each
flattened row-major, as float64. Encryption chunk layouts are derived from
:func:`param_shapes`, so the order here is a federation-wide contract.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["build_mlp", "flatten_params", "load_flat", "n_params", "param_shapes"]


def build_mlp(
    in_features: int, hidden: Sequence[int] = (64, 32), dropout: float = 0.0
) -> nn.Module:
    """Linear -> ReLU (-> Dropout) per hidden width, then one output logit."""
    if in_features < 1:
        raise ValueError(f"in_features: {in_features} must be >= 1")
    if any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden: every width must be >= 1, got {list(hidden)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: {dropout} must be in [0, 1)")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, int(h)))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def param_shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` for every parameter, in ``named_parameters()`` order."""
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def n_params(model: nn.Module) -> int:
    return sum(int(p.numel()) for p in model.parameters())


def flatten_params(model: nn.Module) -> np.ndarray:
    """A float64 copy of all parameters as one 1-D vector."""
    with torch.no_grad():
        parts = [p.detach().reshape(-1).to("cpu", torch.float64) for p in model.parameters()]
    return torch.cat(parts).numpy().copy() if parts else np.zeros(0, dtype=np.float64)


def load_flat(model: nn.Module, vec: np.ndarray) -> None:
    """Copy ``vec`` into the parameters in place (optimizers keep tracking the same tensors)."""
    flat = np.asarray(vec)
    total = n_params(model)
    if flat.ndim != 1 or flat.shape[0] != total:
        raise ValueError(f"vec: shape {flat.shape} does not match the model's ({total},)")
    if not np.all(np.isfinite(flat)):
        raise ValueError("vec: contains NaN or infinite values")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = int(p.numel())
            chunk = torch.from_numpy(np.ascontiguousarray(flat[offset : offset + n]))
            p.copy_(chunk.reshape(p.shape).to(device=p.device, dtype=p.dtype))
            offset += n
