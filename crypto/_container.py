"""The versioned container both :class:`EncryptedUpdate` and :class:`EncryptedAggregate`
serialize to: magic, format version, params and layout fingerprints, then one table entry
(chunk id, per-chunk integers, blob length) and blob per chunk."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from crypto.errors import InvalidUpdate
from crypto.params import FORMAT_VERSION

_HEADER = struct.Struct("<4sB32s32sI")  # magic, version, params fp, layout fp, chunk count


def pack(
    magic: bytes,
    entry: struct.Struct,
    params_fingerprint: str,
    layout_fingerprint: str,
    chunks: Mapping[int, bytes],
    extra: Mapping[int, tuple[int, ...]] | None = None,
) -> bytes:
    """``entry`` packs ``(chunk id, *extra[chunk id], blob length)``."""
    parts = [
        _HEADER.pack(
            magic,
            FORMAT_VERSION,
            bytes.fromhex(params_fingerprint),
            bytes.fromhex(layout_fingerprint),
            len(chunks),
        )
    ]
    for cid, blob in chunks.items():
        parts.append(entry.pack(cid, *(extra[cid] if extra else ()), len(blob)))
        parts.append(blob)
    return b"".join(parts)


def unpack(
    blob: bytes, magic: bytes, entry: struct.Struct, what: str
) -> tuple[str, str, dict[int, tuple[tuple[int, ...], bytes]]]:
    """Parse an untrusted container: ``(params fp, layout fp, {chunk id: (extra, blob)})``.

    Every malformation raises :class:`InvalidUpdate` naming ``what`` was wrong.
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise InvalidUpdate(f"{what} must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise InvalidUpdate(f"{what} truncated (shorter than its header)")
    got_magic, version, pfp, lfp, count = _HEADER.unpack_from(blob)
    if got_magic != magic:
        raise InvalidUpdate(f"not a CipherFed encrypted {what} (bad magic)")
    if version != FORMAT_VERSION:
        raise InvalidUpdate(f"{what} format version {version}, expected {FORMAT_VERSION}")
    off = _HEADER.size
    chunks: dict[int, tuple[tuple[int, ...], bytes]] = {}
    for _ in range(count):
        if len(blob) < off + entry.size:
            raise InvalidUpdate(f"{what} truncated (chunk table)")
        cid, *extra, length = entry.unpack_from(blob, off)
        off += entry.size
        if len(blob) < off + length:
            raise InvalidUpdate(f"{what} truncated (chunk {cid})")
        if cid in chunks:
            raise InvalidUpdate(f"{what} repeats chunk {cid}")
        chunks[cid] = (tuple(extra), blob[off : off + length])
        off += length
    if off != len(blob):
        raise InvalidUpdate(f"{what} has trailing bytes")
    return pfp.hex(), lfp.hex(), chunks
