"""Exact arithmetic on raw ciphertext coefficients modulo the 60-bit data prime (numpy).

A ciphertext at one data prime in NTT form is ``uint64[2, N]`` with entries in ``[0, q)``.
Multiplying by an integer weight ``w`` is what SEAL's ``multiply_plain`` does with a constant
plaintext encoded at scale 1 (its NTT is ``w`` in every slot): ``w * c mod q`` per entry, no
rescale, no level consumed. Adding is ``+ mod q``. Doing both here, vectorised, is exact and
equals SEAL bit for bit (tested), without a round trip through SEAL's file-based loader.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]

_MASK30 = np.uint64((1 << 30) - 1)
_MASK60 = np.uint64((1 << 60) - 1)
_S30 = np.uint64(30)
_S60 = np.uint64(60)
_S4 = np.uint64(4)
MAX_WEIGHT_SUM = 2**20 - 1


def pack60(coeffs: U64) -> bytes:
    """Pack values below ``2**60`` into 7.5 bytes each (two values in 15 bytes).

    Pair ``i`` occupies bytes ``[15 i, 15 i + 15)`` as the 120-bit little-endian integer
    ``a + b * 2**60``; it is written as two overlapping 8-byte words (bytes 0-7 and 7-14),
    which agree on their shared byte.
    """
    flat = np.ascontiguousarray(coeffs, dtype=np.uint64).reshape(-1)
    if flat.size % 2:
        raise ValueError("pack60 needs an even number of values")
    pairs = flat.size // 2
    if pairs == 0:
        return b""
    a = flat[0::2]
    b = flat[1::2]
    buf = bytearray(pairs * 15 + 1)  # one spare byte so the last 8-byte word fits
    low = np.ndarray((pairs,), dtype="<u8", buffer=buf, offset=0, strides=(15,))
    high = np.ndarray((pairs,), dtype="<u8", buffer=buf, offset=7, strides=(15,))
    low[...] = a | (b << _S60)
    high[...] = (b << _S4) | ((a >> np.uint64(56)) & np.uint64(0xF))
    return bytes(buf[: pairs * 15])


def unpack60(data: bytes | memoryview, count: int) -> U64:
    """Inverse of :func:`pack60` for ``count`` values; ``len(data)`` must be exact."""
    if count % 2 or len(data) != count // 2 * 15:
        raise ValueError(f"packed length {len(data)} does not hold {count} values")
    pairs = count // 2
    if pairs == 0:
        return np.zeros(0, dtype=np.uint64)
    buf = memoryview(data)
    out = np.empty((pairs, 2), dtype=np.uint64)
    # the last pair's low word would overrun by one byte: read it separately
    low = np.ndarray((pairs - 1,), dtype="<u8", buffer=buf, offset=0, strides=(15,))
    high = np.ndarray((pairs,), dtype="<u8", buffer=buf, offset=7, strides=(15,))
    np.bitwise_and(low, _MASK60, out=out[:-1, 0])
    tail = int.from_bytes(bytes(buf[(pairs - 1) * 15 : (pairs - 1) * 15 + 8]), "little")
    out[-1, 0] = tail & ((1 << 60) - 1)
    np.right_shift(high, _S4, out=out[:, 1])
    return out.reshape(-1)


def packed_size(count: int) -> int:
    return count // 2 * 15


def weighted_sum_mod(arrays: Sequence[U64], weights: Sequence[int], q: int) -> U64:
    """``sum_k weights[k] * arrays[k] mod q`` exactly, for ``q`` in ``(2**59, 2**60)`` with
    ``2**60 mod q < 2**40``, entries in ``[0, q)`` and ``sum(weights) <= MAX_WEIGHT_SUM``.

    Each entry is split into 30-bit halves so no product exceeds 64 bits:
    ``c = hi * 2**30 + lo``; ``A = sum w lo``, ``B = sum w hi`` (both < 2**50);
    ``B * 2**30 = (B >> 30) * 2**60 + (B & mask) * 2**30`` and ``2**60 = r (mod q)``.
    """
    if len(arrays) != len(weights) or not arrays:
        raise ValueError("need one weight per array and at least one array")
    if sum(weights) > MAX_WEIGHT_SUM or min(weights) < 0:
        raise ValueError(f"weights must be non-negative with sum <= {MAX_WEIGHT_SUM}")
    r = (1 << 60) % q
    if not (1 << 59) < q < (1 << 60) or r >= 1 << 40:
        raise ValueError("modulus outside the supported range")
    acc_lo = np.zeros(arrays[0].shape, dtype=np.uint64)
    acc_hi = np.zeros(arrays[0].shape, dtype=np.uint64)
    tmp = np.empty(arrays[0].shape, dtype=np.uint64)
    for arr, w in zip(arrays, weights, strict=True):
        wu = np.uint64(w)
        np.bitwise_and(arr, _MASK30, out=tmp)
        tmp *= wu
        acc_lo += tmp
        np.right_shift(arr, _S30, out=tmp)
        tmp *= wu
        acc_hi += tmp
    total = (acc_hi >> _S30) * np.uint64(r) + ((acc_hi & _MASK30) << _S30) + acc_lo
    return total % np.uint64(q)
