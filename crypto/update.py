"""Participant side: encrypt a model update chunk by chunk; boundary check of chunk blobs."""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from crypto import _container
from crypto.ciphertext import (
    KEY_ID_OFFSET,
    LAYOUT_FP_OFFSET,
    ChunkCiphertext,
    ChunkKind,
    decode_chunk,
    encode_chunk,
)
from crypto.ciphertext import MAGIC as CHUNK_MAGIC
from crypto.context import PublicContext
from crypto.packing import ChunkLayout

logger = logging.getLogger(__name__)

MAGIC = b"CFup"
_ENTRY = struct.Struct("<II")  # chunk id, blob length
_CHUNK_FP_END = LAYOUT_FP_OFFSET + 32  # end of the layout fingerprint in a chunk header


def _frozen(chunks: Mapping[int, bytes]) -> Mapping[int, bytes]:
    return MappingProxyType({int(k): bytes(chunks[k]) for k in sorted(chunks)})


@dataclass(frozen=True)
class EncryptedUpdate:
    """One participant's encrypted chunks (chunk id -> versioned, fingerprinted blob)."""

    chunks: Mapping[int, bytes]
    params_fingerprint: str = ""
    layout_fingerprint: str = ""
    _digests: dict[int, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", _frozen(self.chunks))

    @classmethod
    def from_chunks(cls, chunks: Mapping[int, bytes]) -> EncryptedUpdate:
        """Wrap received chunk blobs; fingerprints are read from the first chunk's header
        (every blob is validated again by :func:`load_chunk` / :func:`weighted_sum`)."""
        pfp = lfp = ""
        for blob in chunks.values():
            head = bytes(blob[:_CHUNK_FP_END])
            if len(head) == _CHUNK_FP_END and head[:4] == CHUNK_MAGIC:
                pfp, lfp = head[6:KEY_ID_OFFSET].hex(), head[LAYOUT_FP_OFFSET:].hex()
            break
        return cls(chunks, pfp, lfp)

    @property
    def chunk_ids(self) -> tuple[int, ...]:
        return tuple(self.chunks)

    def digests(self) -> dict[int, str]:
        """Hex SHA-256 of every chunk blob, by chunk id (sorted)."""
        if not self._digests:
            self._digests.update(
                {cid: hashlib.sha256(blob).hexdigest() for cid, blob in self.chunks.items()}
            )
        return dict(self._digests)

    def wire_bytes(self) -> int:
        return sum(len(b) for b in self.chunks.values())

    def to_bytes(self) -> bytes:
        if not (self.params_fingerprint and self.layout_fingerprint):
            raise ValueError("an update without fingerprints cannot be serialized")
        return _container.pack(
            MAGIC, _ENTRY, self.params_fingerprint, self.layout_fingerprint, self.chunks
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> EncryptedUpdate:
        """Split an untrusted update container (chunk blobs are checked by ``load_chunk``)."""
        pfp, lfp, entries = _container.unpack(blob, MAGIC, _ENTRY, "update")
        return cls({cid: b for cid, (_, b) in entries.items()}, pfp, lfp)


def _check_layout(ctx: PublicContext, layout: ChunkLayout) -> None:
    if not isinstance(layout, ChunkLayout):
        raise TypeError(f"layout must be a ChunkLayout, got {type(layout).__name__}")
    if layout.chunk_size != ctx.params.values_per_ciphertext:
        raise ValueError(
            f"layout chunk_size {layout.chunk_size} != values per ciphertext "
            f"{ctx.params.values_per_ciphertext} of preset {ctx.params.name}"
        )


def encrypt_update(
    ctx: PublicContext,
    layout: ChunkLayout,
    vector: np.ndarray,
    chunk_ids: Sequence[int] | None = None,
) -> EncryptedUpdate:
    """Encrypt ``vector`` (length ``layout.total``) chunk by chunk.

    ``chunk_ids=None`` encrypts every chunk that has a non-zero entry (block sparsity);
    otherwise exactly the chunks named. Raises ``ValueError`` for NaN/inf, values beyond
    ``ctx.params.value_bound`` or a wrong length, ``TypeError`` for wrong types.
    """
    if not isinstance(ctx, PublicContext):
        raise TypeError(f"ctx must be a PublicContext, got {type(ctx).__name__}")
    _check_layout(ctx, layout)
    if not isinstance(vector, np.ndarray):
        raise TypeError(f"vector must be a numpy array, got {type(vector).__name__}")
    if vector.ndim != 1 or vector.shape[0] != layout.total:
        raise ValueError(f"vector must be 1-D of length {layout.total}, got shape {vector.shape}")
    if not np.issubdtype(vector.dtype, np.floating) and not np.issubdtype(vector.dtype, np.integer):
        raise TypeError(f"vector must be real-valued, got dtype {vector.dtype}")
    vec = vector.astype(np.float64, copy=False)
    if not np.isfinite(vec).all():
        raise ValueError("vector contains NaN or inf")
    bound = ctx.params.value_bound
    peak = float(np.abs(vec).max()) if vec.size else 0.0
    if peak > bound:
        raise ValueError(
            f"vector has |value| {peak:g} above the preset's value_bound {bound:g} "
            "(clip the update first)"
        )
    if chunk_ids is None:
        ids = [cid for cid, (a, b) in enumerate(layout.chunk_bounds()) if np.any(vec[a:b] != 0.0)]
    else:
        ids = [int(c) for c in chunk_ids]
        if len(set(ids)) != len(ids):
            raise ValueError("chunk_ids repeats a chunk")
        for cid in ids:
            if not 0 <= cid < layout.n_chunks:
                raise ValueError(f"chunk id {cid} outside [0, {layout.n_chunks})")
        ids.sort()
    enc = ctx._encryptor_()
    lfp = layout.fingerprint
    chunks: dict[int, bytes] = {}
    for cid in ids:
        sl = layout.chunk_slice(cid)
        part = vec[sl]
        coeffs = enc.encrypt(part)
        chunks[cid] = encode_chunk(
            ctx.params, ctx.key_id, ChunkKind.UPDATE, cid, part.shape[0], lfp, coeffs
        )
    logger.debug("encrypted %d of %d chunks", len(ids), layout.n_chunks)
    return EncryptedUpdate(chunks, ctx.fingerprint, lfp)


def load_chunk(ctx: PublicContext, blob: bytes) -> ChunkCiphertext:
    """Validate an untrusted chunk blob against ``ctx``; raises :class:`InvalidUpdate`."""
    if not isinstance(ctx, PublicContext):
        raise TypeError(f"ctx must be a PublicContext, got {type(ctx).__name__}")
    return decode_chunk(ctx.params, ctx.data_prime, ctx.key_id, blob)
