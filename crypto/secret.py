"""The key holder's secret CKKS context. Never imported by ``coordinator/``.

Decryption only of aggregates, and only with noise flooding (see :mod:`crypto.flooding`).
The secret key leaves this object only through :meth:`SecretContext.export_secret_key_encrypted`
(scrypt + AES-256-GCM, KDF parameters in the authenticated header).
"""

from __future__ import annotations

import logging
import os
import struct

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from crypto import _seal, flooding
from crypto.aggregate import EncryptedAggregate
from crypto.ciphertext import ChunkKind, decode_chunk
from crypto.context import PublicContext
from crypto.errors import InvalidUpdate
from crypto.params import CkksParams, pack_params_header, unpack_params_header

logger = logging.getLogger(__name__)

MAGIC = b"CFsk"
_KDF = struct.Struct("<BBBB16s12s")  # kdf id (1 = scrypt), log2 n, r, p, salt, nonce
_KDF_SCRYPT = 1
_LEN = struct.Struct("<I")
DEFAULT_SCRYPT_LOG2_N = 15
_MAX_SCRYPT_LOG2_N = 20


def _derive(passphrase: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(passphrase)


class SecretContext:
    """Secret key + public key of one parameter set; decrypts aggregates with flooding."""

    def __init__(
        self,
        params: CkksParams,
        secret_key_blob: bytes,
        public_key_blob: bytes,
        *,
        flood_factor: float = flooding.DEFAULT_FLOOD_FACTOR,
    ) -> None:
        if not flood_factor >= flooding.MIN_FLOOD_FACTOR:
            raise ValueError(f"flood_factor must be >= 2**20, got {flood_factor}")
        self._params = params
        self._seal_ctx = _seal.SealContext(params)
        self._decryptor = _seal.SealDecryptor(self._seal_ctx, secret_key_blob)
        self._secret_key_blob = secret_key_blob
        self._public = PublicContext(params, public_key_blob, _seal_ctx=self._seal_ctx)
        self._flood_factor = float(flood_factor)

    def __repr__(self) -> str:
        return f"SecretContext(params={self._params.name!r})"

    @classmethod
    def generate(
        cls, params: CkksParams, *, flood_factor: float = flooding.DEFAULT_FLOOD_FACTOR
    ) -> SecretContext:
        """Fresh keys from SEAL's CSPRNG."""
        if not isinstance(params, CkksParams):
            raise TypeError(f"params must be CkksParams, got {type(params).__name__}")
        sk, pk = _seal.generate_keys(_seal.SealContext(params))
        return cls(params, sk, pk, flood_factor=flood_factor)

    @property
    def params(self) -> CkksParams:
        return self._params

    @property
    def fingerprint(self) -> str:
        return self._params.fingerprint

    @property
    def flood_factor(self) -> float:
        return self._flood_factor

    def is_private(self) -> bool:
        return True

    def public(self) -> PublicContext:
        """The public context (public key only) for participants and the coordinator."""
        return self._public

    # ------------------------------------------------------------------ key at rest
    def export_secret_key_encrypted(
        self, passphrase: bytes, *, scrypt_log2_n: int = DEFAULT_SCRYPT_LOG2_N
    ) -> bytes:
        """The ONLY way secret-key bytes leave this object: scrypt + AES-256-GCM."""
        if not isinstance(passphrase, bytes) or not passphrase:
            raise ValueError("passphrase must be non-empty bytes")
        if not 10 <= scrypt_log2_n <= _MAX_SCRYPT_LOG2_N:
            raise ValueError(f"scrypt_log2_n must be in [10, {_MAX_SCRYPT_LOG2_N}]")
        r, p = 8, 1
        salt, nonce = os.urandom(16), os.urandom(12)
        header = pack_params_header(MAGIC, self._params) + _KDF.pack(
            _KDF_SCRYPT, scrypt_log2_n, r, p, salt, nonce
        )
        pk = self._public._public_key_blob
        plain = _LEN.pack(len(self._secret_key_blob)) + self._secret_key_blob + pk
        key = _derive(passphrase, salt, scrypt_log2_n, r, p)
        return header + AESGCM(key).encrypt(nonce, plain, header)

    @classmethod
    def import_secret_key_encrypted(
        cls,
        blob: bytes,
        passphrase: bytes,
        *,
        flood_factor: float = flooding.DEFAULT_FLOOD_FACTOR,
    ) -> SecretContext:
        """Inverse of :meth:`export_secret_key_encrypted`; :class:`InvalidUpdate` on a wrong
        passphrase, tampering, truncation or a wrong format/version."""
        if not isinstance(passphrase, bytes) or not passphrase:
            raise ValueError("passphrase must be non-empty bytes")
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise InvalidUpdate(f"secret-key blob must be bytes, got {type(blob).__name__}")
        blob = bytes(blob)
        params, off = unpack_params_header(blob, MAGIC, "secret-key blob", min_rest=_KDF.size + 16)
        kdf, log2_n, r, p, salt, nonce = _KDF.unpack_from(blob, off)
        off += _KDF.size
        if (
            kdf != _KDF_SCRYPT
            or not 10 <= log2_n <= _MAX_SCRYPT_LOG2_N
            or not (1 <= r <= 32 and 1 <= p <= 16)
        ):
            raise InvalidUpdate("secret-key blob: unsupported KDF parameters")
        header = blob[:off]
        key = _derive(passphrase, salt, log2_n, r, p)
        try:
            plain = AESGCM(key).decrypt(nonce, blob[off:], header)
        except InvalidTag:
            raise InvalidUpdate("secret-key blob: wrong passphrase or tampered data") from None
        (sk_len,) = _LEN.unpack_from(plain)
        sk = plain[_LEN.size : _LEN.size + sk_len]
        pk = plain[_LEN.size + sk_len :]
        try:
            return cls(params, sk, pk, flood_factor=flood_factor)
        except _seal.SealError as exc:
            raise InvalidUpdate(f"secret-key blob: {exc}") from exc

    # ------------------------------------------------------------------ decryption
    def decryption_error_std_bound(self, weight_sum: int) -> float:
        return flooding.decryption_error_std_bound(self._params, weight_sum)

    def flood_std(self, weight_sum: int) -> float:
        return flooding.flood_std(self._params, weight_sum, self._flood_factor)

    def _decrypt_exact(self, agg: EncryptedAggregate) -> dict[int, npt.NDArray[np.float64]]:
        """Exact CKKS decryption of every chunk. Private: never release these values."""
        if not isinstance(agg, EncryptedAggregate):
            raise TypeError(f"agg must be an EncryptedAggregate, got {type(agg).__name__}")
        if agg.params_fingerprint != self.fingerprint:
            raise InvalidUpdate(
                f"aggregate made for CKKS parameters {agg.params_fingerprint[:16]}…, "
                f"this key is {self._params.name} ({self.fingerprint[:16]}…)"
            )
        out: dict[int, npt.NDArray[np.float64]] = {}
        for cid, blob in agg.chunks.items():
            try:
                ct = decode_chunk(self._params, self._seal_ctx.q, self._public.key_id, blob)
            except InvalidUpdate as exc:
                raise InvalidUpdate(f"aggregate chunk {cid}: {exc}") from None
            if ct.kind is not ChunkKind.AGGREGATE:
                raise InvalidUpdate(f"aggregate chunk {cid}: not an aggregate (refusing)")
            if ct.chunk_id != cid or ct.layout_fingerprint != agg.layout_fingerprint:
                raise InvalidUpdate(f"aggregate chunk {cid}: chunk id or layout mismatch")
            norm = agg.normalizers[cid]
            if not 1 <= norm <= self._params.max_weight_sum:
                raise InvalidUpdate(
                    f"aggregate chunk {cid}: normalizer {norm} outside "
                    f"[1, {self._params.max_weight_sum}]"
                )
            try:
                values = self._decryptor.decrypt(ct.coeffs)
            except _seal.SealError as exc:
                raise InvalidUpdate(f"aggregate chunk {cid}: {exc}") from exc
            out[cid] = values[: ct.n_values]
        return out

    def decrypt_aggregate(
        self, agg: EncryptedAggregate, rng: np.random.Generator
    ) -> dict[int, npt.NDArray[np.float64]]:
        """Noise-flooded weighted sums per chunk (length per the chunk layout).

        Each chunk gets Gaussian noise of std ``flood_factor * decryption_error_std_bound(W_c)``
        and is rounded to a power-of-two grid ~2**10 below that std.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        exact = self._decrypt_exact(agg)
        released = {
            cid: flooding.flood(vals, self.flood_std(agg.normalizers[cid]), rng)
            for cid, vals in exact.items()
        }
        logger.info("released %d flooded aggregate chunks", len(released))
        return released
