"""Cutting large payloads into <= 1 MiB stream pieces and reassembling them within limits.

Nothing here relies on gRPC's message-size limits: a blob of any size travels as pieces of
at most :data:`PIECE_SIZE` bytes, and the receiver checks order, declared size, a maximum
size (before buffering anything) and the SHA-256 of the whole.

Errors carry the gRPC status a server should answer with: :class:`StreamTooLarge`
(``RESOURCE_EXHAUSTED``) and :class:`MalformedStream` (``INVALID_ARGUMENT``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping

import grpc

from . import cipherfed_pb2 as pb

logger = logging.getLogger(__name__)

PIECE_SIZE = 1024 * 1024


class TransportError(Exception):
    """A stream or message that the receiver refuses; ``code`` is the gRPC status to send."""

    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class MalformedStream(TransportError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class StreamTooLarge(TransportError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def _check_piece_size(piece_size: int) -> None:
    if not 0 < piece_size <= PIECE_SIZE:
        raise ValueError(f"piece_size must be in 1..{PIECE_SIZE}, got {piece_size}")


# ---------------------------------------------------------------------------- plain blobs


def iter_blob_chunks(data: bytes, piece_size: int = PIECE_SIZE) -> Iterator[pb.BlobChunk]:
    """The pieces of ``data`` (an empty blob is one empty piece)."""
    _check_piece_size(piece_size)
    digest = hashlib.sha256(data).hexdigest()
    view = memoryview(data)
    total = len(data)
    offset = 0
    while True:
        piece = bytes(view[offset : offset + piece_size])
        yield pb.BlobChunk(offset=offset, data=piece, total_size=total, sha256=digest)
        offset += len(piece)
        if offset >= total:
            return


class BlobAssembler:
    """Receiver of one blob's pieces: ``add`` each, then ``finish``."""

    def __init__(self, max_size: int, what: str = "blob") -> None:
        self.max_size = max_size
        self.what = what
        self._buf: bytearray | None = None
        self._total = -1
        self._sha = ""

    def add(self, chunk: pb.BlobChunk) -> None:
        if self._buf is None:
            if chunk.total_size > self.max_size:
                raise StreamTooLarge(
                    f"{self.what} of {chunk.total_size} bytes exceeds the limit of "
                    f"{self.max_size} bytes"
                )
            if len(chunk.sha256) != 64:
                raise MalformedStream(f"{self.what}: first piece lacks a SHA-256")
            self._buf = bytearray()
            self._total = chunk.total_size
            self._sha = chunk.sha256
        elif chunk.total_size != self._total or chunk.sha256 != self._sha:
            raise MalformedStream(f"{self.what}: pieces disagree on the blob's size or SHA-256")
        if chunk.offset != len(self._buf):
            raise MalformedStream(
                f"{self.what}: piece at offset {chunk.offset}, expected {len(self._buf)}"
            )
        if len(chunk.data) > PIECE_SIZE:
            raise MalformedStream(f"{self.what}: piece of {len(chunk.data)} bytes > {PIECE_SIZE}")
        if len(self._buf) + len(chunk.data) > self._total:
            raise MalformedStream(f"{self.what}: more bytes than the declared {self._total}")
        self._buf += chunk.data

    def finish(self) -> bytes:
        if self._buf is None:
            raise MalformedStream(f"{self.what}: the stream carried no piece")
        if len(self._buf) != self._total:
            raise MalformedStream(
                f"{self.what}: stream ended after {len(self._buf)} of {self._total} bytes"
            )
        data = bytes(self._buf)
        if hashlib.sha256(data).hexdigest() != self._sha:
            raise MalformedStream(f"{self.what}: SHA-256 of the reassembled blob does not match")
        return data


def assemble_blob(chunks: Iterable[pb.BlobChunk], max_size: int, what: str = "blob") -> bytes:
    """Reassemble a whole stream of :class:`BlobChunk` (checks order, size, limit, SHA-256)."""
    assembler = BlobAssembler(max_size, what)
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.finish()


# ---------------------------------------------------------------------------- chunked ciphertexts


def iter_ciphertext_pieces(
    chunks: Mapping[int, bytes], piece_size: int = PIECE_SIZE
) -> Iterator[pb.CiphertextPiece]:
    """Pieces of every chunk blob, chunk ids ascending, offsets ascending within a chunk."""
    _check_piece_size(piece_size)
    for chunk_id in sorted(chunks):
        blob = chunks[chunk_id]
        view = memoryview(blob)
        offset = 0
        while True:
            data = bytes(view[offset : offset + piece_size])
            yield pb.CiphertextPiece(chunk_id=chunk_id, offset=offset, data=data)
            offset += len(data)
            if offset >= len(blob):
                break


def total_size(chunks: Mapping[int, bytes]) -> int:
    return sum(len(b) for b in chunks.values())


#: most ciphertext chunks one stream may carry (2**16 chunks of 4096 values: 268M parameters)
MAX_CHUNKS = 1 << 16


class ChunkReassembler:
    """Receiver of :class:`CiphertextPiece` messages for a declared total size.

    Refuses (``StreamTooLarge``) a declared or actual total above ``max_total`` before
    buffering it, and (``MalformedStream``) out-of-order pieces, a chunk id seen again after
    another chunk, more bytes than declared, or fewer at the end.
    """

    def __init__(
        self,
        declared_total: int,
        max_total: int,
        what: str = "update",
        max_chunks: int = MAX_CHUNKS,
    ) -> None:
        if declared_total > max_total:
            raise StreamTooLarge(
                f"{what} of {declared_total} bytes exceeds the limit of {max_total} bytes"
            )
        self.declared_total = declared_total
        self.what = what
        self.max_chunks = max_chunks
        self._chunks: dict[int, bytearray] = {}
        self._current: int | None = None
        self._received = 0

    def add(self, piece: pb.CiphertextPiece) -> None:
        cid = piece.chunk_id
        if not piece.data and cid == self._current:  # only an empty chunk is one empty piece
            raise MalformedStream(f"{self.what}: empty piece within chunk {cid}")
        if cid != self._current:
            if len(self._chunks) >= self.max_chunks:
                raise StreamTooLarge(f"{self.what}: more than {self.max_chunks} chunks")
            if cid in self._chunks:
                raise MalformedStream(f"{self.what}: chunk {cid} resumed after another chunk")
            if self._current is not None and cid < self._current:
                raise MalformedStream(
                    f"{self.what}: chunk ids must ascend ({cid} after {self._current})"
                )
            self._chunks[cid] = bytearray()
            self._current = cid
        buf = self._chunks[cid]
        if piece.offset != len(buf):
            raise MalformedStream(
                f"{self.what}: chunk {cid} piece at offset {piece.offset}, expected {len(buf)}"
            )
        if len(piece.data) > PIECE_SIZE:
            raise MalformedStream(f"{self.what}: piece of {len(piece.data)} bytes > {PIECE_SIZE}")
        self._received += len(piece.data)
        if self._received > self.declared_total:
            raise StreamTooLarge(
                f"{self.what}: more than the declared {self.declared_total} bytes arrived"
            )
        buf += piece.data

    @property
    def received(self) -> int:
        return self._received

    def finish(self) -> dict[int, bytes]:
        if self._received != self.declared_total:
            raise MalformedStream(
                f"{self.what}: stream ended after {self._received} of the declared "
                f"{self.declared_total} bytes"
            )
        return {cid: bytes(buf) for cid, buf in self._chunks.items()}


# ---------------------------------------------------------------------------- uploads


def upload_messages(
    header: pb.UploadHeader, chunks: Mapping[int, bytes], piece_size: int = PIECE_SIZE
) -> Iterator[pb.UploadMessage]:
    """The client side of ``UploadUpdate``: the header (its ``total_size`` filled), then pieces."""
    header.total_size = total_size(chunks)
    yield pb.UploadMessage(header=header)
    for piece in iter_ciphertext_pieces(chunks, piece_size):
        yield pb.UploadMessage(piece=piece)


def read_upload(
    messages: Iterable[pb.UploadMessage], max_total: int
) -> tuple[pb.UploadHeader, dict[int, bytes]]:
    """The server side of ``UploadUpdate``: header first, then pieces, within ``max_total``."""
    it = iter(messages)
    first = next(it, None)
    if first is None or first.WhichOneof("kind") != "header":
        raise MalformedStream("upload must start with a header message")
    header = first.header
    reassembler = ChunkReassembler(header.total_size, max_total, "update")
    for message in it:
        if message.WhichOneof("kind") != "piece":
            raise MalformedStream("upload carries a second header or an empty message")
        reassembler.add(message.piece)
    return header, reassembler.finish()
