"""Wire <-> domain conversion and the canonical digests that parties sign.

Generated protobuf types stay in ``proto/``: services convert with these functions and
work with the frozen dataclasses below. This module imports nothing of the project
outside ``proto`` (the coordinator, key holder and participants all use it).

Signed messages (Ed25519 via ``crypto.sign_message(key, domain, payload)``):

* receipt — domain :data:`RECEIPT_DOMAIN`, payload :meth:`ReceiptFields.canonical_bytes`
* decrypt request — domain :data:`DECRYPT_REQUEST_DOMAIN`, payload :meth:`DecryptRequest.digest`
* decrypt result — domain :data:`DECRYPT_RESULT_DOMAIN`, payload :meth:`DecryptResult.digest`

Update envelopes are signed by sites over ``crypto.UpdateEnvelope.canonical_bytes()`` and
travel as exactly those bytes (:class:`SignedEnvelope`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import cipherfed_pb2 as pb
from .streams import PIECE_SIZE, BlobAssembler, MalformedStream, iter_blob_chunks

RECEIPT_DOMAIN = "cipherfed/receipt/v1"
DECRYPT_REQUEST_DOMAIN = "cipherfed/decrypt-request/v1"
DECRYPT_RESULT_DOMAIN = "cipherfed/decrypt-result/v1"


def canonical_json(obj: object) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# ---------------------------------------------------------------------------- envelopes


@dataclass(frozen=True)
class SignedEnvelope:
    """A site's envelope (``crypto.UpdateEnvelope.canonical_bytes()``) and its signature.

    Parsing and verification belong to the receiver (``crypto.verify_envelope_bytes``).
    """

    envelope: bytes
    signature: bytes

    def digest(self) -> str:
        """Hex SHA-256 of the envelope's canonical bytes (the receipt's ``envelope_digest``)."""
        return envelope_digest(self.envelope)


def envelope_digest(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def signed_envelope_to_proto(env: SignedEnvelope) -> pb.SignedEnvelope:
    return pb.SignedEnvelope(envelope=env.envelope, signature=env.signature)


def signed_envelope_from_proto(msg: pb.SignedEnvelope) -> SignedEnvelope:
    """Shape checks only: non-empty envelope (<= 1 MiB), a 64-byte signature."""
    if not msg.envelope:
        raise MalformedStream("signed envelope is empty")
    if len(msg.envelope) > PIECE_SIZE:
        raise MalformedStream("signed envelope is larger than 1 MiB")
    if len(msg.signature) != 64:
        raise MalformedStream("envelope signature must be 64 bytes (Ed25519)")
    return SignedEnvelope(bytes(msg.envelope), bytes(msg.signature))


# ---------------------------------------------------------------------------- receipts


@dataclass(frozen=True)
class ReceiptFields:
    federation_id: str
    round: int
    site_id: str
    envelope_digest: str
    accepted_unix_ms: int

    def canonical_bytes(self) -> bytes:
        return canonical_json(
            {
                "federation_id": self.federation_id,
                "round": self.round,
                "site_id": self.site_id,
                "envelope_digest": self.envelope_digest,
                "accepted_unix_ms": self.accepted_unix_ms,
            }
        )


def receipt_to_proto(fields: ReceiptFields, signature: bytes) -> pb.Receipt:
    return pb.Receipt(
        federation_id=fields.federation_id,
        round=fields.round,
        site_id=fields.site_id,
        envelope_digest=fields.envelope_digest,
        accepted_unix_ms=fields.accepted_unix_ms,
        signature=signature,
    )


def receipt_from_proto(msg: pb.Receipt) -> tuple[ReceiptFields, bytes]:
    fields = ReceiptFields(
        federation_id=msg.federation_id,
        round=msg.round,
        site_id=msg.site_id,
        envelope_digest=msg.envelope_digest,
        accepted_unix_ms=msg.accepted_unix_ms,
    )
    return fields, bytes(msg.signature)


# ---------------------------------------------------------------------------- decrypt request


@dataclass(frozen=True)
class DecryptRequest:
    """What the coordinator asks the key holder to decrypt, with the evidence for it."""

    federation_id: str
    round: int
    normalizers: Mapping[int, int]
    envelopes: tuple[SignedEnvelope, ...]
    params_fingerprint: str
    layout_fingerprint: str
    aggregate: bytes  # crypto.EncryptedAggregate.to_bytes()
    coordinator_signature: bytes = b""

    @property
    def aggregate_sha256(self) -> str:
        return hashlib.sha256(self.aggregate).hexdigest()

    def digest(self) -> bytes:
        """SHA-256 over the canonical JSON of every field except the signature."""
        doc = {
            "domain": DECRYPT_REQUEST_DOMAIN,
            "federation_id": self.federation_id,
            "round": self.round,
            "normalizers": [[int(k), int(v)] for k, v in sorted(self.normalizers.items())],
            "envelopes": sorted([e.digest(), e.signature.hex()] for e in self.envelopes),
            "params_fingerprint": self.params_fingerprint,
            "layout_fingerprint": self.layout_fingerprint,
            "aggregate_size": len(self.aggregate),
            "aggregate_sha256": self.aggregate_sha256,
        }
        return hashlib.sha256(canonical_json(doc)).digest()

    def with_signature(self, signature: bytes) -> DecryptRequest:
        return DecryptRequest(
            federation_id=self.federation_id,
            round=self.round,
            normalizers=self.normalizers,
            envelopes=self.envelopes,
            params_fingerprint=self.params_fingerprint,
            layout_fingerprint=self.layout_fingerprint,
            aggregate=self.aggregate,
            coordinator_signature=signature,
        )


def decrypt_request_messages(
    req: DecryptRequest, piece_size: int = PIECE_SIZE
) -> Iterator[pb.DecryptMessage]:
    """Client side of ``DecryptAggregate``: the header, then the aggregate in pieces."""
    header = pb.DecryptHeader(
        federation_id=req.federation_id,
        round=req.round,
        normalizers={int(k): int(v) for k, v in req.normalizers.items()},
        envelopes=[signed_envelope_to_proto(e) for e in req.envelopes],
        params_fingerprint=req.params_fingerprint,
        layout_fingerprint=req.layout_fingerprint,
        aggregate_size=len(req.aggregate),
        aggregate_sha256=req.aggregate_sha256,
        coordinator_signature=req.coordinator_signature,
    )
    yield pb.DecryptMessage(header=header)
    for piece in iter_blob_chunks(req.aggregate, piece_size):
        yield pb.DecryptMessage(aggregate_piece=piece)


def read_decrypt_request(messages: Iterable[pb.DecryptMessage], max_size: int) -> DecryptRequest:
    """Server side: parse and shape-check a request stream (signatures are the caller's job)."""
    it = iter(messages)
    first = next(it, None)
    if first is None or first.WhichOneof("kind") != "header":
        raise MalformedStream("decrypt request must start with a header message")
    h = first.header
    if not h.federation_id or h.round < 1:
        raise MalformedStream("decrypt header needs a federation id and a round >= 1")
    if not h.normalizers:
        raise MalformedStream("decrypt header has no normalizers")
    if any(v < 1 for v in h.normalizers.values()):
        raise MalformedStream("decrypt header has a normalizer < 1")
    if len(h.coordinator_signature) != 64:
        raise MalformedStream("decrypt header lacks a 64-byte coordinator signature")
    envelopes = tuple(signed_envelope_from_proto(e) for e in h.envelopes)
    assembler = BlobAssembler(max_size, "aggregate")
    for message in it:
        if message.WhichOneof("kind") != "aggregate_piece":
            raise MalformedStream("decrypt request carries a second header or an empty message")
        assembler.add(message.aggregate_piece)
    aggregate = assembler.finish()
    if len(aggregate) != h.aggregate_size or hashlib.sha256(aggregate).hexdigest() != (
        h.aggregate_sha256
    ):
        raise MalformedStream("aggregate size or SHA-256 differs from the header")
    return DecryptRequest(
        federation_id=h.federation_id,
        round=h.round,
        normalizers=dict(h.normalizers),
        envelopes=envelopes,
        params_fingerprint=h.params_fingerprint,
        layout_fingerprint=h.layout_fingerprint,
        aggregate=aggregate,
        coordinator_signature=bytes(h.coordinator_signature),
    )


# ---------------------------------------------------------------------------- decrypt result


@dataclass(frozen=True)
class DecryptResult:
    """The key holder's answer: noise-flooded sums per chunk and the flooding std used."""

    federation_id: str
    round: int
    sums: Mapping[int, np.ndarray]
    flooding_std: Mapping[int, float]
    keyholder_signature: bytes = b""
    _packed: dict[int, bytes] = field(default_factory=dict, repr=False, compare=False)

    def packed(self, chunk_id: int) -> bytes:
        cached = self._packed.get(chunk_id)
        if cached is None:
            cached = np.ascontiguousarray(self.sums[chunk_id], dtype="<f8").tobytes()
            self._packed[chunk_id] = cached
        return cached

    def digest(self) -> bytes:
        doc = {
            "domain": DECRYPT_RESULT_DOMAIN,
            "federation_id": self.federation_id,
            "round": self.round,
            "chunks": [
                [
                    int(cid),
                    len(self.sums[cid]),
                    hashlib.sha256(self.packed(cid)).hexdigest(),
                    float(self.flooding_std[cid]).hex(),
                ]
                for cid in sorted(self.sums)
            ],
        }
        return hashlib.sha256(canonical_json(doc)).digest()

    def with_signature(self, signature: bytes) -> DecryptResult:
        return DecryptResult(
            self.federation_id, self.round, self.sums, self.flooding_std, signature, self._packed
        )


def decrypt_result_messages(
    res: DecryptResult, piece_size: int = PIECE_SIZE
) -> Iterator[pb.DecryptResultMessage]:
    """Server side: every chunk's sums in pieces of <= ``piece_size`` bytes, then the trailer."""
    values_per_piece = max(1, piece_size // 8)
    for cid in sorted(res.sums):
        packed = res.packed(cid)
        length = len(res.sums[cid])
        std = float(res.flooding_std[cid])
        start = 0
        while True:
            stop = min(start + values_per_piece, length)
            yield pb.DecryptResultMessage(
                sums=pb.ChunkSums(
                    chunk_id=cid,
                    offset=start,
                    values=packed[start * 8 : stop * 8],
                    length=length,
                    flooding_std=std,
                )
            )
            start = stop
            if start >= length:
                break
    yield pb.DecryptResultMessage(
        trailer=pb.DecryptTrailer(
            federation_id=res.federation_id,
            round=res.round,
            keyholder_signature=res.keyholder_signature,
        )
    )


def read_decrypt_result(
    messages: Iterable[pb.DecryptResultMessage], max_values: int
) -> DecryptResult:
    """Client side: reassemble the sums (at most ``max_values`` in all); check the trailer."""
    buffers: dict[int, bytearray] = {}
    lengths: dict[int, int] = {}
    stds: dict[int, float] = {}
    total = 0
    trailer: pb.DecryptTrailer | None = None
    for message in messages:
        kind = message.WhichOneof("kind")
        if trailer is not None:
            raise MalformedStream("decrypt result continues after its trailer")
        if kind == "trailer":
            trailer = message.trailer
            continue
        if kind != "sums":
            raise MalformedStream("decrypt result carries an empty message")
        s = message.sums
        if s.chunk_id not in buffers:
            total += s.length
            if total > max_values:
                raise MalformedStream(f"decrypt result has more than {max_values} values")
            buffers[s.chunk_id] = bytearray()
            lengths[s.chunk_id] = s.length
            stds[s.chunk_id] = s.flooding_std
        buf = buffers[s.chunk_id]
        if s.length != lengths[s.chunk_id] or s.flooding_std != stds[s.chunk_id]:
            raise MalformedStream(f"decrypt result chunk {s.chunk_id}: pieces disagree")
        if s.offset * 8 != len(buf) or len(s.values) % 8:
            raise MalformedStream(f"decrypt result chunk {s.chunk_id}: piece out of order")
        if len(buf) + len(s.values) > s.length * 8:
            raise MalformedStream(f"decrypt result chunk {s.chunk_id}: too many values")
        buf += s.values
    if trailer is None:
        raise MalformedStream("decrypt result ended without its trailer")
    sums: dict[int, np.ndarray] = {}
    for cid, buf in buffers.items():
        if len(buf) != lengths[cid] * 8:
            raise MalformedStream(f"decrypt result chunk {cid}: incomplete")
        arr = np.frombuffer(bytes(buf), dtype="<f8").astype(np.float64)
        if not np.all(np.isfinite(arr)) or not math.isfinite(stds[cid]):
            raise MalformedStream(f"decrypt result chunk {cid}: non-finite values")
        sums[cid] = arr
    return DecryptResult(
        federation_id=trailer.federation_id,
        round=trailer.round,
        sums=sums,
        flooding_std=stds,
        keyholder_signature=bytes(trailer.keyholder_signature),
    )


__all__ = [
    "DECRYPT_REQUEST_DOMAIN",
    "DECRYPT_RESULT_DOMAIN",
    "RECEIPT_DOMAIN",
    "DecryptRequest",
    "DecryptResult",
    "ReceiptFields",
    "SignedEnvelope",
    "canonical_json",
    "decrypt_request_messages",
    "decrypt_result_messages",
    "envelope_digest",
    "read_decrypt_request",
    "read_decrypt_result",
    "receipt_from_proto",
    "receipt_to_proto",
    "signed_envelope_from_proto",
    "signed_envelope_to_proto",
]
