"""Device choice for local training: CUDA when available, else CPU, overridable."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA if available, else CPU; otherwise the named device.

    Asking for CUDA on a machine without it is a clear ``ValueError``.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        chosen = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device: {device!r} is not a torch device ({exc})") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available")
    logger.debug("training device: %s", chosen)
    return chosen
