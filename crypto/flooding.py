"""Decryption-error bound and noise flooding (pure math, no TenSEAL).

Why: a party that knows a CKKS ciphertext and its exact decryption learns a linear equation
in the secret key (Li & Micciancio 2021); the coordinator knows the aggregate ciphertext and
the released model, so the key holder releases ``decryption + Gaussian(flood_std)`` with
``flood_std >= 2**20 * (bound on the decryption-error std)`` and rounds to a grid.

Error model (per coefficient, one fresh ciphertext, SEAL public-key encryption at the key
level followed by the mod switch that drops the special prime ``p``):
  * encoding rounds each coefficient to an integer: variance 1/12;
  * the mod switch rounds ``c0`` and ``c1`` after dividing by ``p``: ``d0 + d1 * s`` with
    ``d`` uniform in [-1/2, 1/2] and ``s`` uniform ternary (mean square 2/3):
    variance 1/12 + N * (1/12) * (2/3) = 1/12 + N/18;
  * the fresh encryption noise ``e0 + e1 s + e u`` (sigma 3.2) divided by ``p``: negligible,
    but counted: (1 + 4N/3) * 3.2**2 / p**2.
A weighted sum multiplies a ciphertext's error by ``w``; errors of different ciphertexts are
independent, so the coefficient variance is ``sum(w**2) * v <= (sum w)**2 * v``. Decoding
evaluates the polynomial at N/2 complex roots of unity and divides by the scale: each real
output value (real or imaginary part of a slot) has variance ``(N/2) * v / scale**2``.
The bound uses ``sum(w)`` (the normalizer, checked by the key holder) instead of
``sqrt(sum w**2)`` and a margin of 1.2 over the derived standard deviation.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from crypto.params import CkksParams

MIN_FLOOD_FACTOR = 2.0**20
DEFAULT_FLOOD_FACTOR = 2.0**20
MARGIN = 1.2
_ERROR_SIGMA = 3.2
_GRID_BITS_BELOW_FLOOD = 10


def fresh_error_std(params: CkksParams) -> float:
    """Derived std of the error of one real value of one fresh ciphertext (no margin)."""
    n = params.poly_modulus_degree
    p = 2.0 ** params.coeff_mod_bit_sizes[1]
    var_coeff = 1 / 12 + 1 / 12 + n / 18 + (1 + 4 * n / 3) * _ERROR_SIGMA**2 / p**2
    return math.sqrt(n / 2 * var_coeff) / params.scale


def decryption_error_std_bound(params: CkksParams, weight_sum: int) -> float:
    """Upper bound on the error std of one real value of a weighted sum with weights summing
    to ``weight_sum`` (all weights positive integers)."""
    if weight_sum < 1:
        raise ValueError(f"weight_sum must be >= 1, got {weight_sum}")
    return MARGIN * weight_sum * fresh_error_std(params)


def flood_std(params: CkksParams, weight_sum: int, flood_factor: float) -> float:
    if not flood_factor >= MIN_FLOOD_FACTOR:
        raise ValueError(f"flood_factor must be >= 2**20, got {flood_factor}")
    return flood_factor * decryption_error_std_bound(params, weight_sum)


def grid_step(std: float) -> float:
    """Power of two about 2**10 below ``std``: the release grid."""
    return float(2.0 ** (math.floor(math.log2(std)) - _GRID_BITS_BELOW_FLOOD))


def flood(
    values: npt.NDArray[np.float64], std: float, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """``values + N(0, std)`` rounded to :func:`grid_step` ``(std)``."""
    noisy = values + rng.normal(0.0, std, size=values.shape)
    step = grid_step(std)
    out: npt.NDArray[np.float64] = np.round(noisy / step) * step
    return out
