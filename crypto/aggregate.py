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

from crypto import _container, _rns
from crypto.ciphertext import (
    ChunkHeader,
    ChunkKind,
    decode_coeffs,
    decode_header,
    encode_chunk,
    header_size,
)
from crypto.context import PublicContext
from crypto.errors import InvalidUpdate
from crypto.packing import ChunkLayout
from crypto.update import EncryptedUpdate

logger = logging.getLogger(__name__)

MAGIC = b"CFag"
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
        extra = {cid: (n,) for cid, n in self.normalizers.items()}
        return _container.pack(
            MAGIC, _ENTRY, self.params_fingerprint, self.layout_fingerprint, self.chunks, extra
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> EncryptedAggregate:
        """Parse an untrusted aggregate container; chunk blobs are checked on decryption."""
        pfp, lfp, entries = _container.unpack(blob, MAGIC, _ENTRY, "aggregate")
        chunks = {cid: b for cid, (_, b) in entries.items()}
        norms = {cid: extra[0] for cid, (extra, _) in entries.items()}
        return cls(chunks, norms, pfp, lfp)


#: chunks summed together per numpy call: fewer calls, arrays still cache-sized (measured:
#: 8 chunks of N=4096 is ~25% faster than one at a time; larger groups fall out of cache,
#: and threads do not help at these sizes)
_GROUP_CHUNKS = 8


def _sum_group(
    ctx: PublicContext,
    group: list[int],
    by_chunk: Mapping[int, list[tuple[int, int, ChunkHeader]]],
    updates: Sequence[EncryptedUpdate],
    weights: Sequence[int],
    layout_fp: str,
) -> list[tuple[int, bytes, int]]:
    """Sum the chunks ``group`` with one unpack and one multiply-add per participant.

    A participant that did not send a chunk of the group contributes zero coefficients
    there (the encryption of nothing adds nothing); each chunk's normalizer counts only the
    participants that sent it.
    """
    params = ctx.params
    q = ctx.data_prime
    n_coeffs = 2 * params.poly_modulus_degree
    payload_len = _rns.packed_size(n_coeffs)
    hsize = header_size()
    zero = bytes(payload_len)
    senders: dict[int, set[int]] = {cid: {k for k, _, _ in by_chunk[cid]} for cid in group}
    members = sorted(set().union(*senders.values()))
    arrays = []
    for k in members:
        blobs = updates[k].chunks
        payload = b"".join(
            memoryview(blobs[cid])[hsize:] if k in senders[cid] else zero for cid in group
        )
        coeffs = _rns.unpack60(payload, n_coeffs * len(group))
        if int(coeffs.max()) >= q:
            for cid in group:  # name the offending chunk
                if k in senders[cid]:
                    h = next(h for kk, _, h in by_chunk[cid] if kk == k)
                    try:
                        decode_coeffs(params, q, h)
                    except InvalidUpdate as exc:
                        raise InvalidUpdate(f"update {k}, chunk {cid}: {exc}") from None
        arrays.append(coeffs)
    summed = _rns.weighted_sum_mod(arrays, [weights[k] for k in members], q).reshape(
        len(group), n_coeffs
    )
    out = []
    for i, cid in enumerate(group):
        n_values = by_chunk[cid][0][2].n_values
        blob = encode_chunk(
            params, ctx.key_id, ChunkKind.AGGREGATE, cid, n_values, layout_fp, summed[i]
        )
        out.append((cid, blob, sum(weights[k] for k in senders[cid])))
    return out


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
    # pass 1: every header (cheap); pass 2, in groups of chunks: coefficients, sum, encode
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
    lfp: str = layout_fp
    order = sorted(by_chunk)
    groups = [order[i : i + _GROUP_CHUNKS] for i in range(0, len(order), _GROUP_CHUNKS)]

    chunks: dict[int, bytes] = {}
    norms: dict[int, int] = {}
    for group in groups:
        for cid, blob, norm in _sum_group(ctx, group, by_chunk, updates, ws, lfp):
            chunks[cid] = blob
            norms[cid] = norm
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
