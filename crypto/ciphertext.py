"""Wire format of one encrypted chunk, and its validation at the boundary.

``b"CFct" | version u8 | kind u8 | params fingerprint (32) | public-key id (32) |
layout fingerprint (32) | chunk id u32 | number of real values u32 |
2*N coefficients packed at 60 bits``
(little-endian). The coefficients are a size-2 CKKS ciphertext at the single data prime, in
NTT form; 15 bytes per real value.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from crypto import _rns
from crypto.errors import InvalidUpdate
from crypto.params import FORMAT_VERSION, CkksParams

MAGIC = b"CFct"
_HEADER = struct.Struct("<4sBB32s32s32sII")
KEY_ID_OFFSET = 38
LAYOUT_FP_OFFSET = 70


class ChunkKind(IntEnum):
    UPDATE = 1
    """One participant's encrypted chunk."""
    AGGREGATE = 2
    """A coordinator-side weighted sum of chunks."""


@dataclass(frozen=True, eq=False)
class ChunkCiphertext:
    """A validated ciphertext of one chunk (the handle :func:`crypto.load_chunk` returns)."""

    kind: ChunkKind
    chunk_id: int
    n_values: int
    params_fingerprint: str
    key_id: str
    """Hex SHA-256 of the public key the chunk was encrypted under."""
    layout_fingerprint: str
    coeffs: npt.NDArray[np.uint64]
    """Read-only ``uint64[2, N]``, every entry below the data prime."""


def encode_chunk(
    params: CkksParams,
    key_id: str,
    kind: ChunkKind,
    chunk_id: int,
    n_values: int,
    layout_fingerprint: str,
    coeffs: npt.NDArray[np.uint64],
) -> bytes:
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        int(kind),
        params.fingerprint_bytes,
        bytes.fromhex(key_id),
        bytes.fromhex(layout_fingerprint),
        chunk_id,
        n_values,
    )
    return header + _rns.pack60(coeffs)


def blob_size(params: CkksParams) -> int:
    return _HEADER.size + _rns.packed_size(2 * params.poly_modulus_degree)


@dataclass(frozen=True)
class ChunkHeader:
    """The validated header of a chunk blob (coefficients not yet read)."""

    kind: ChunkKind
    chunk_id: int
    n_values: int
    layout_fingerprint: str
    blob: bytes


def decode_header(params: CkksParams, key_id: str, blob: bytes) -> ChunkHeader:
    """Validate everything but the coefficient range; raises :class:`InvalidUpdate`."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise InvalidUpdate(f"chunk blob must be bytes, got {type(blob).__name__}")
    if not isinstance(blob, bytes):
        blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise InvalidUpdate(f"chunk blob truncated: {len(blob)} bytes, header needs {_HEADER.size}")
    magic, version, kind, pfp, kid, lfp, chunk_id, n_values = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise InvalidUpdate("not a CipherFed ciphertext chunk (bad magic)")
    if version != FORMAT_VERSION:
        raise InvalidUpdate(f"ciphertext format version {version}, expected {FORMAT_VERSION}")
    try:
        chunk_kind = ChunkKind(kind)
    except ValueError:
        raise InvalidUpdate(f"unknown ciphertext chunk kind {kind}") from None
    if pfp != params.fingerprint_bytes:
        raise InvalidUpdate(
            f"ciphertext made for CKKS parameters {pfp.hex()[:16]}…, this context is "
            f"{params.name} ({params.fingerprint[:16]}…)"
        )
    if kid.hex() != key_id:
        raise InvalidUpdate(
            f"ciphertext encrypted under another public key ({kid.hex()[:16]}…, "
            f"this context's is {key_id[:16]}…)"
        )
    n = params.poly_modulus_degree
    if not 0 < n_values <= params.values_per_ciphertext:
        raise InvalidUpdate(f"chunk holds {n_values} values, must be in [1, {n}]")
    expected = blob_size(params)
    if len(blob) != expected:
        raise InvalidUpdate(
            f"chunk blob has {len(blob)} bytes, expected {expected} (truncated or padded)"
        )
    return ChunkHeader(chunk_kind, chunk_id, n_values, lfp.hex(), blob)


def decode_coeffs(params: CkksParams, q: int, header: ChunkHeader) -> npt.NDArray[np.uint64]:
    """The read-only ``uint64[2, N]`` coefficients; :class:`InvalidUpdate` if any is >= q."""
    n = params.poly_modulus_degree
    coeffs = _rns.unpack60(memoryview(header.blob)[_HEADER.size :], 2 * n).reshape(2, n)
    if int(coeffs.max()) >= q:
        raise InvalidUpdate("ciphertext coefficient not reduced modulo the data prime")
    coeffs.setflags(write=False)
    return coeffs


def decode_chunk(params: CkksParams, q: int, key_id: str, blob: bytes) -> ChunkCiphertext:
    """Parse and validate an untrusted chunk blob made for ``params`` under the public key
    ``key_id``; raises :class:`InvalidUpdate`."""
    h = decode_header(params, key_id, blob)
    coeffs = decode_coeffs(params, q, h)
    return ChunkCiphertext(
        h.kind, h.chunk_id, h.n_values, params.fingerprint, key_id, h.layout_fingerprint, coeffs
    )
