"""Coordinator side: weighted sum of encrypted updates, and applying a released aggregate.

``S_c = sum_{k sent c} w_k * ct_{k,c}`` per chunk, with positive integer weights (local
iteration counts by default) applied as exact constants modulo the data prime: no rescale,
no level consumed, the result stays at the one data prime. ``W_c = sum_{k sent c} w_k``
travels as the chunk's plaintext normalizer.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from crypto import _rns
from crypto.ciphertext import ChunkHeader, ChunkKind, decode_coeffs, decode_header, encode_chunk
from crypto.context import PublicContext
from crypto.errors import InvalidUpdate
from crypto.packing import ChunkLayout
from crypto.params import FORMAT_VERSION
from crypto.update import EncryptedUpdate

logger = logging.getLogger(__name__)

MAGIC = b"CFag"
_HEADER = struct.Struct("<4sB32s32sI")  # magic, version, params fp, layout fp, chunk count
_ENTRY = struct.Struct("<IQI")  # chunk id, normalizer, blob length


@dataclass(frozen=True)
class EncryptedAggregate:
    """Encrypted weighted sums per chunk and their plaintext normalizers."""

    chunks: Mapping[int, bytes]
    normalizers: Mapping[int, int]
    params_fingerprint: str
    layout_fingerprint: str

    def __post_init__(self) -> None:
        if set(self.chunks) != set(self.normalizers):
            raise ValueError("chunks and normalizers must name the same chunk ids")
        object.__setattr__(
            self,
            "chunks",
            MappingProxyType({int(k): bytes(self.chunks[k]) for k in sorted(self.chunks)}),
        )
        object.__setattr__(
            self,
            "normalizers",
            MappingProxyType({int(k): int(self.normalizers[k]) for k in sorted(self.normalizers)}),
        )

    def to_bytes(self) -> bytes:
        parts = [
            _HEADER.pack(
                MAGIC,
                FORMAT_VERSION,
                bytes.fromhex(self.params_fingerprint),
                bytes.fromhex(self.layout_fingerprint),
                len(self.chunks),
            )
        ]
        for cid, blob in self.chunks.items():
            parts.append(_ENTRY.pack(cid, self.normalizers[cid], len(blob)))
            parts.append(blob)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, blob: bytes) -> EncryptedAggregate:
        """Parse an untrusted aggregate container; chunk blobs are checked on decryption."""
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise InvalidUpdate(f"aggregate must be bytes, got {type(blob).__name__}")
        blob = bytes(blob)
        if len(blob) < _HEADER.size:
            raise InvalidUpdate("aggregate truncated (shorter than its header)")
        magic, version, pfp, lfp, count = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise InvalidUpdate("not a CipherFed encrypted aggregate (bad magic)")
        if version != FORMAT_VERSION:
            raise InvalidUpdate(f"aggregate format version {version}, expected {FORMAT_VERSION}")
        off = _HEADER.size
        chunks: dict[int, bytes] = {}
        norms: dict[int, int] = {}
        for _ in range(count):
            if len(blob) < off + _ENTRY.size:
                raise InvalidUpdate("aggregate truncated (chunk table)")
            cid, norm, length = _ENTRY.unpack_from(blob, off)
            off += _ENTRY.size
            if len(blob) < off + length:
                raise InvalidUpdate(f"aggregate truncated (chunk {cid})")
            if cid in chunks:
                raise InvalidUpdate(f"aggregate repeats chunk {cid}")
            chunks[cid] = blob[off : off + length]
            norms[cid] = norm
            off += length
        if off != len(blob):
            raise InvalidUpdate("aggregate has trailing bytes")
        return cls(chunks, norms, pfp.hex(), lfp.hex())


def _check_weights(weights: Sequence[int], n_updates: int) -> list[int]:
    if len(weights) != n_updates:
        raise ValueError(f"{len(weights)} weights for {n_updates} updates")
    out = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, int | np.integer):
            raise TypeError(f"weight {i} must be an int, got {type(w).__name__}")
        if w < 1:
            raise ValueError(f"weight {i} must be a positive integer, got {w}")
        out.append(int(w))
    return out


def weighted_sum(
    ctx: PublicContext, updates: Sequence[EncryptedUpdate], weights: Sequence[int]
) -> EncryptedAggregate:
    """``S_c = sum_k w_k ct_{k,c}`` for every chunk any update sent, and ``W_c = sum w_k``.

    Every chunk blob is validated (:class:`InvalidUpdate` names the update and chunk that
    failed). Raises ``ValueError`` when a chunk's weight sum exceeds
    ``ctx.params.max_weight_sum`` (the plaintext would wrap modulo the data prime).
    """
    if not isinstance(ctx, PublicContext):
        raise TypeError(f"ctx must be a PublicContext, got {type(ctx).__name__}")
    if not updates:
        raise ValueError("weighted_sum needs at least one update")
    ws = _check_weights(weights, len(updates))
    params = ctx.params
    q = ctx.data_prime
    # pass 1: every header (cheap); pass 2, chunk by chunk: coefficients, sum, encode
    by_chunk: dict[int, list[tuple[int, int, ChunkHeader]]] = {}
    layout_fp: str | None = None
    for k, upd in enumerate(updates):
        if not isinstance(upd, EncryptedUpdate):
            raise TypeError(f"update {k} must be an EncryptedUpdate, got {type(upd).__name__}")
        for cid, blob in upd.chunks.items():
            try:
                h = decode_header(params, ctx.key_id, blob)
            except InvalidUpdate as exc:
                raise InvalidUpdate(f"update {k}, chunk {cid}: {exc}") from None
            if h.kind is not ChunkKind.UPDATE:
                raise InvalidUpdate(f"update {k}, chunk {cid}: not a participant chunk")
            if h.chunk_id != cid:
                raise InvalidUpdate(f"update {k}: chunk {cid} carries chunk id {h.chunk_id}")
            if layout_fp is None:
                layout_fp = h.layout_fingerprint
            elif h.layout_fingerprint != layout_fp:
                raise InvalidUpdate(f"update {k}, chunk {cid}: another chunk layout")
            by_chunk.setdefault(cid, []).append((k, ws[k], h))
    if layout_fp is None:
        raise ValueError("no update carries any chunk")
    for cid, entries in by_chunk.items():
        n_values = {h.n_values for _, _, h in entries}
        if len(n_values) != 1:
            raise InvalidUpdate(f"chunk {cid}: updates disagree on its length {sorted(n_values)}")
        total = sum(w for _, w, _ in entries)
        if total > params.max_weight_sum:
            raise ValueError(
                f"chunk {cid}: weight sum {total} exceeds max_weight_sum "
                f"{params.max_weight_sum} of preset {params.name}"
            )
    chunks: dict[int, bytes] = {}
    norms: dict[int, int] = {}
    for cid in sorted(by_chunk):
        entries = by_chunk[cid]
        arrays = []
        for k, _, h in entries:
            try:
                arrays.append(decode_coeffs(params, q, h))
            except InvalidUpdate as exc:
                raise InvalidUpdate(f"update {k}, chunk {cid}: {exc}") from None
        weights_c = [w for _, w, _ in entries]
        summed = _rns.weighted_sum_mod(arrays, weights_c, q)
        chunks[cid] = encode_chunk(
            params, ctx.key_id, ChunkKind.AGGREGATE, cid, entries[0][2].n_values, layout_fp, summed
        )
        norms[cid] = sum(weights_c)
    logger.debug("weighted sum of %d updates over %d chunks", len(updates), len(chunks))
    return EncryptedAggregate(chunks, norms, params.fingerprint, layout_fp)


def apply_aggregate(
    global_flat: npt.NDArray[np.float64],
    layout: ChunkLayout,
    sums: Mapping[int, npt.NDArray[np.float64]],
    normalizers: Mapping[int, int],
) -> npt.NDArray[np.float64]:
    """``W(t) = W(t-1) + S_c / W_c`` per chunk; chunks nobody sent stay unchanged."""
    if not isinstance(layout, ChunkLayout):
        raise TypeError(f"layout must be a ChunkLayout, got {type(layout).__name__}")
    glob = np.asarray(global_flat, dtype=np.float64)
    if glob.ndim != 1 or glob.shape[0] != layout.total:
        raise ValueError(f"global_flat must be 1-D of length {layout.total}, got {glob.shape}")
    out = glob.copy()
    for cid, s in sums.items():
        sl = layout.chunk_slice(int(cid))
        if cid not in normalizers:
            raise ValueError(f"no normalizer for chunk {cid}")
        w = normalizers[cid]
        if not w > 0:
            raise ValueError(f"normalizer of chunk {cid} must be positive, got {w}")
        arr = np.asarray(s, dtype=np.float64)
        if arr.shape != (sl.stop - sl.start,):
            raise ValueError(
                f"sum for chunk {cid} has shape {arr.shape}, expected ({sl.stop - sl.start},)"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"sum for chunk {cid} contains NaN or inf")
        out[sl] += arr / w
    return out
