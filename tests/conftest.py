"""Shared pytest configuration."""

from __future__ import annotations

import os

# Keep BLAS/torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
