"""Patient-level DP-SGD for a site's local training, with Opacus.

Neighbouring relation: one patient (one training record) added or removed (Opacus' Poisson
sampling). This is the guarantee per patient that sites should rely on.

``attach_dp_sgd`` wires Opacus' parts directly (``GradSampleModule``, ``DPOptimizer``,
``DPDataLoader``) instead of ``PrivacyEngine`` so that both the Poisson sampling and the
gradient noise draw from a ``torch.Generator`` seeded from the injected
``numpy.random.Generator``. The noise multiplier is derived so that ``planned_rounds``
rounds of ``steps`` local steps reach the configured (ε, δ) under PLD accounting
(dp_accounting, discretization 1e-2: pessimistic, so the real ε is at most the target;
σ is searched from 0.3 upwards, so a very loose target gets σ = 0.3, more noise than needed).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

import dp_accounting
import numpy as np
import torch
from dp_accounting import mechanism_calibration
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader

from participant.privacy.config import DPSGDConfig

logger = logging.getLogger(__name__)


def dp_sgd_event(sample_rate: float, noise_multiplier: float, steps: int) -> dp_accounting.DpEvent:
    """``steps`` Poisson-sampled Gaussian steps (Opacus' DP-SGD)."""
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
        ),
        steps,
    )


@functools.lru_cache(maxsize=64)
def _calibrate(eps: float, delta: float, sample_rate: float, total_steps: int) -> float:
    sigma = mechanism_calibration.calibrate_dp_mechanism(
        lambda: PLDAccountant(value_discretization_interval=1e-2),
        lambda s: dp_sgd_event(sample_rate, s, total_steps),
        eps,
        delta,
        bracket_interval=mechanism_calibration.LowerEndpointAndGuess(0.3, 1.0),
        tol=0.005,
    )
    return float(sigma)


def derive_noise_multiplier(cfg: DPSGDConfig, sample_rate: float, steps_per_round: int) -> float:
    """σ reaching ``cfg``'s (ε, δ) after ``planned_rounds * steps_per_round`` steps."""
    if cfg.noise_multiplier is not None:
        return cfg.noise_multiplier
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if steps_per_round < 1:
        raise ValueError(f"steps must be >= 1, got {steps_per_round!r}")
    total = cfg.planned_rounds * int(steps_per_round)
    sigma = _calibrate(cfg.target_epsilon, cfg.target_delta, float(sample_rate), total)
    logger.info(
        "DP-SGD: sigma=%.4f for eps=%.3g, delta=%.1g, q=%.4f over %d steps",
        sigma,
        cfg.target_epsilon,
        cfg.target_delta,
        sample_rate,
        total,
    )
    return sigma


@dataclass
class DPSGDAttachment:
    """The Opacus-wrapped model, optimizer and loader, and the events they spend."""

    model: GradSampleModule
    optimizer: DPOptimizer
    loader: DataLoader[Any]
    noise_multiplier: float
    sample_rate: float
    planned_steps: int
    _steps_taken: list[int] = field(default_factory=lambda: [0])

    @property
    def steps_taken(self) -> int:
        return self._steps_taken[0]

    def planned_events(self) -> list[dp_accounting.DpEvent]:
        """Events of one round of ``planned_steps`` steps (check the budget with these)."""
        return [dp_sgd_event(self.sample_rate, self.noise_multiplier, self.planned_steps)]

    def events(self) -> list[dp_accounting.DpEvent]:
        """Events of the noisy optimizer steps actually taken so far."""
        if self.steps_taken == 0:
            return []
        return [dp_sgd_event(self.sample_rate, self.noise_multiplier, self.steps_taken)]


def _seed_from(generator: np.random.Generator | torch.Generator) -> int:
    """A seed for the torch generator Opacus needs, drawn from the injected generator."""
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(0, 2**63 - 1))
    if isinstance(generator, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=generator).item())
    raise TypeError(
        f"generator must be a numpy.random.Generator or torch.Generator, got {type(generator)}"
    )


def _strip_previous_attachment(model: torch.nn.Module) -> None:
    """Remove Opacus hooks left by an earlier round's attachment (one model, many rounds)."""
    handles = getattr(model, "autograd_grad_sample_hooks", None)
    if handles is None:
        return
    while handles:
        handles.pop().remove()
    delattr(model, "autograd_grad_sample_hooks")
    for p in model.parameters():
        for name in ("grad_sample", "_forward_counter", "_current_grad_sample"):
            if hasattr(p, name):
                delattr(p, name)


def attach_dp_sgd(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[Any],
    cfg: DPSGDConfig,
    *,
    steps: int,
    generator: np.random.Generator | torch.Generator,
) -> DPSGDAttachment:
    """Make ``model``/``optimizer``/``loader`` differentially private per patient.

    ``steps`` is the number of local optimizer steps per round. The model must already be
    Opacus-compatible (no BatchNorm); an incompatible one raises ``ValueError``. Attaching
    the same model again (next round) first removes the previous round's Opacus hooks.
    ``generator`` seeds Opacus' sampling and noise (a numpy Generator, or the trainer's
    torch Generator).
    """
    seed = _seed_from(generator)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"model is not compatible with DP-SGD: {errors[0]}")
    _strip_previous_attachment(model)
    torch_gen = torch.Generator()
    torch_gen.manual_seed(seed)
    dp_loader = DPDataLoader.from_data_loader(loader, generator=torch_gen)
    sample_rate = float(dp_loader.sample_rate)
    sigma = derive_noise_multiplier(cfg, sample_rate, steps)
    gs_model = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    batch = loader.batch_size if loader.batch_size is not None else 1
    dp_opt = DPOptimizer(
        optimizer,
        noise_multiplier=sigma,
        max_grad_norm=cfg.max_grad_norm,
        expected_batch_size=batch,
        loss_reduction="mean",
        generator=torch_gen,
    )
    counter = [0]

    def _count(_: DPOptimizer) -> None:
        counter[0] += 1

    dp_opt.attach_step_hook(_count)
    return DPSGDAttachment(
        model=gs_model,
        optimizer=dp_opt,
        loader=dp_loader,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        planned_steps=steps,
        _steps_taken=counter,
    )
