"""CKKS parameter presets, their fingerprints and the numeric bounds they imply.

Every preset keeps ciphertexts at ONE 60-bit data prime ``q0`` (plus SEAL's special prime,
used only inside public-key encryption, which mod-switches down to ``q0``). Two real values
travel in every complex slot, so one ciphertext carries ``poly_modulus_degree`` reals.

Headroom: a decrypted coefficient of a weighted sum is at most
``sqrt(2) * value_bound * sum(weights) * 2**scale_bits`` in absolute value (plus noise) and
must stay below ``q0 / 2``; :attr:`CkksParams.max_weight_sum` is the largest sum of
weights that satisfies this with a 1 % margin.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import struct
from dataclasses import dataclass

from crypto.errors import InvalidUpdate

FORMAT_VERSION = 1
"""Version of every blob format in this package (ciphertexts, contexts, aggregates, keys)."""

# SEAL's 128-bit security limits on the total coefficient-modulus bits (HomomorphicEncryption.org).
_MAX_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
_HEADROOM_MARGIN = 0.99


@dataclass(frozen=True)
class CkksParams:
    """One named CKKS parameter set (immutable; its fingerprint travels with every blob)."""

    name: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    value_bound: float
    """Largest absolute plaintext value :func:`crypto.encrypt_update` accepts."""

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in _MAX_BITS_128:
            raise ValueError(f"poly_modulus_degree must be one of {sorted(_MAX_BITS_128)}, got {n}")
        bits = self.coeff_mod_bit_sizes
        if len(bits) != 2:
            raise ValueError(
                "coeff_mod_bit_sizes must be [data prime, special prime] (one data level), "
                f"got {list(bits)}"
            )
        if bits[0] != 60:
            raise ValueError(f"the data prime must have 60 bits, got {bits[0]}")
        if not 20 <= bits[1] <= 60:
            raise ValueError(f"special prime bits must be in [20, 60], got {bits[1]}")
        if sum(bits) > _MAX_BITS_128[n]:
            raise ValueError(
                f"{sum(bits)} modulus bits exceed the 128-bit security limit "
                f"{_MAX_BITS_128[n]} for N={n}"
            )
        if not 20 <= self.scale_bits <= 55:
            raise ValueError(f"scale_bits must be in [20, 55], got {self.scale_bits}")
        if not (math.isfinite(self.value_bound) and self.value_bound > 0):
            raise ValueError(f"value_bound must be finite and positive, got {self.value_bound}")
        if self.max_weight_sum < 1:
            raise ValueError("no headroom: value_bound * 2**scale_bits is too large for q0")

    @property
    def slot_count(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def values_per_ciphertext(self) -> int:
        """Real values per ciphertext: two per complex slot."""
        return self.poly_modulus_degree

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def max_weight_sum(self) -> int:
        """Largest ``sum(weights)`` a weighted sum may use without wrapping modulo ``q0``.

        Uses ``q0 >= 2**59`` (the data prime has 60 bits).
        """
        limit = _HEADROOM_MARGIN * 2.0**59 / (math.sqrt(2.0) * self.value_bound * self.scale)
        return min(int(limit), 2**20 - 1)

    def canonical_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "poly_modulus_degree": self.poly_modulus_degree,
                "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
                "scale_bits": self.scale_bits,
                "value_bound": self.value_bound,
                "format_version": FORMAT_VERSION,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_canonical_json(cls, text: str) -> CkksParams:
        """Rebuild from :meth:`canonical_json`; raises ``ValueError`` on anything else."""
        try:
            d = json.loads(text)
            params = cls(
                name=str(d["name"]),
                poly_modulus_degree=int(d["poly_modulus_degree"]),
                coeff_mod_bit_sizes=tuple(int(b) for b in d["coeff_mod_bit_sizes"]),
                scale_bits=int(d["scale_bits"]),
                value_bound=float(d["value_bound"]),
            )
            version = int(d["format_version"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(1e400): overflow
            raise ValueError(f"bad CKKS parameter description: {exc}") from exc
        if version != FORMAT_VERSION:
            raise ValueError(f"parameter format version {version}, expected {FORMAT_VERSION}")
        return params

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the canonical JSON (includes the format version)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @functools.cached_property
    def fingerprint_bytes(self) -> bytes:
        return bytes.fromhex(self.fingerprint)


_PARAMS_HEADER = struct.Struct("<4sB32sI")  # magic, version, params fingerprint, JSON length


def pack_params_header(magic: bytes, params: CkksParams) -> bytes:
    """``magic | version | fingerprint | len | params JSON``: the head of a keyed blob."""
    pj = params.canonical_json().encode()
    return _PARAMS_HEADER.pack(magic, FORMAT_VERSION, params.fingerprint_bytes, len(pj)) + pj


def unpack_params_header(
    blob: bytes, magic: bytes, what: str, *, min_rest: int = 0
) -> tuple[CkksParams, int]:
    """Parse :func:`pack_params_header` from untrusted ``blob``: the parameters and the offset
    after them. :class:`InvalidUpdate` (naming ``what``) unless magic, version, length
    (with at least ``min_rest`` bytes after the header) and fingerprint check out."""
    if len(blob) < _PARAMS_HEADER.size:
        raise InvalidUpdate(f"{what} truncated (shorter than its header)")
    got_magic, version, fp, plen = _PARAMS_HEADER.unpack_from(blob)
    if got_magic != magic:
        raise InvalidUpdate(f"not a CipherFed {what} (bad magic)")
    if version != FORMAT_VERSION:
        raise InvalidUpdate(f"{what} format version {version}, expected {FORMAT_VERSION}")
    off = _PARAMS_HEADER.size
    if len(blob) < off + plen + min_rest:
        raise InvalidUpdate(f"{what} truncated (parameters)")
    try:
        params = CkksParams.from_canonical_json(blob[off : off + plen].decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidUpdate(f"{what}: {exc}") from exc
    if params.fingerprint_bytes != fp:
        raise InvalidUpdate(f"{what}: parameter fingerprint does not match")
    return params, off + plen


PRESETS: dict[str, CkksParams] = {
    # Default: N=4096, q0 60 bits + 49-bit special prime (109 bits, the 128-bit maximum).
    # 4096 reals per ciphertext (a demo MLP of ~3.5k parameters is one ciphertext);
    # half the decryption noise of N=8192 at the same speed per parameter.
    "n4096": CkksParams(
        name="n4096",
        poly_modulus_degree=4096,
        coeff_mod_bit_sizes=(60, 49),
        scale_bits=46,
        value_bound=4.0,
    ),
    # Fewer, larger blobs for big models: 8192 reals per ciphertext. The decryption noise is
    # twice that of n4096, so the scale is one bit larger and the headroom half.
    "n8192": CkksParams(
        name="n8192",
        poly_modulus_degree=8192,
        coeff_mod_bit_sizes=(60, 60),
        scale_bits=47,
        value_bound=4.0,
    ),
}
DEFAULT_PRESET = "n4096"
