"""The public CKKS context: encrypt and add, never decrypt (it holds no secret key)."""

from __future__ import annotations

import hashlib
import logging
import struct
import threading

from crypto import _seal
from crypto.errors import InvalidUpdate
from crypto.params import CkksParams, pack_params_header, unpack_params_header

logger = logging.getLogger(__name__)

MAGIC = b"CFpc"
_LEN = struct.Struct("<I")


class PublicContext:
    """Parameters + public key. Participants encrypt with it; the coordinator adds with it.

    There is no secret key in this object or in :meth:`to_bytes`: SEAL's public key only.
    """

    def __init__(
        self,
        params: CkksParams,
        public_key_blob: bytes,
        *,
        _seal_ctx: _seal.SealContext | None = None,
    ) -> None:
        self._params = params
        self._seal_ctx = _seal_ctx if _seal_ctx is not None else _seal.SealContext(params)
        try:
            _seal.load_check(self._seal_ctx, "public_key", public_key_blob)
        except _seal.SealError as exc:
            raise InvalidUpdate(f"public key does not fit parameters {params.name}: {exc}") from exc
        self._public_key_blob = bytes(public_key_blob)
        self._key_id = hashlib.sha256(self._public_key_blob).hexdigest()
        self._encryptor: _seal.SealEncryptor | None = None
        self._lock = threading.Lock()

    @property
    def params(self) -> CkksParams:
        return self._params

    @property
    def fingerprint(self) -> str:
        return self._params.fingerprint

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the public key; every ciphertext chunk names it."""
        return self._key_id

    @property
    def data_prime(self) -> int:
        return self._seal_ctx.q

    def is_private(self) -> bool:
        """Always ``False``: a public context cannot decrypt."""
        return False

    def _encryptor_(self) -> _seal.SealEncryptor:
        with self._lock:
            if self._encryptor is None:
                self._encryptor = _seal.SealEncryptor(self._seal_ctx, self._public_key_blob)
            return self._encryptor

    def to_bytes(self) -> bytes:
        return (
            pack_params_header(MAGIC, self._params)
            + _LEN.pack(len(self._public_key_blob))
            + self._public_key_blob
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> PublicContext:
        """Parse an untrusted public-context blob; raises :class:`InvalidUpdate`."""
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise InvalidUpdate(f"public context must be bytes, got {type(blob).__name__}")
        blob = bytes(blob)
        params, off = unpack_params_header(blob, MAGIC, "public context", min_rest=_LEN.size)
        (klen,) = _LEN.unpack_from(blob, off)
        off += _LEN.size
        if len(blob) != off + klen:
            raise InvalidUpdate("public context truncated or padded (public key)")
        return cls(params, blob[off:])
