"""Wire <-> domain conversion: round trips, digests that cover every field, bad streams."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from proto import cipherfed_pb2 as pb
from proto.streams import (
    ChunkReassembler,
    MalformedStream,
    StreamTooLarge,
    iter_ciphertext_pieces,
    read_upload,
    upload_messages,
)
from proto.wire import (
    DecryptRequest,
    DecryptResult,
    ReceiptFields,
    SignedEnvelope,
    decrypt_request_messages,
    decrypt_result_messages,
    read_decrypt_request,
    read_decrypt_result,
    receipt_from_proto,
    receipt_to_proto,
    signed_envelope_from_proto,
    signed_envelope_to_proto,
)


def _request() -> DecryptRequest:
    rng = np.random.default_rng(0)
    return DecryptRequest(
        federation_id="fed",
        round=3,
        normalizers={0: 7, 2: 5},
        envelopes=(
            SignedEnvelope(b"env-a" * 10, bytes(range(64))),
            SignedEnvelope(b"env-b" * 10, bytes(range(1, 65))),
        ),
        params_fingerprint="a" * 64,
        layout_fingerprint="b" * 64,
        aggregate=rng.bytes(5000),
        coordinator_signature=b"\x07" * 64,
    )


def test_decrypt_request_round_trip_in_pieces() -> None:
    req = _request()
    messages = list(decrypt_request_messages(req, piece_size=1024))
    assert messages[0].WhichOneof("kind") == "header" and len(messages) == 1 + 5
    again = read_decrypt_request(messages, max_size=10_000)
    assert again == req and again.digest() == req.digest()


def test_decrypt_request_digest_covers_every_field_but_signature() -> None:
    req = _request()
    base = req.digest()
    assert len(base) == 32
    assert req.with_signature(b"\x00" * 64).digest() == base
    # Envelope order does not matter (the set of signed envelopes does).
    assert dataclasses.replace(req, envelopes=req.envelopes[::-1]).digest() == base
    changes = {
        "federation_id": "fed2",
        "round": 4,
        "normalizers": {0: 7, 2: 6},
        "envelopes": req.envelopes[:1],
        "params_fingerprint": "c" * 64,
        "layout_fingerprint": "d" * 64,
        "aggregate": req.aggregate[:-1] + b"\x00",
    }
    for name, value in changes.items():
        assert dataclasses.replace(req, **{name: value}).digest() != base, name  # type: ignore[arg-type]


def test_decrypt_request_bad_streams() -> None:
    req = _request()
    msgs = list(decrypt_request_messages(req, piece_size=1024))
    with pytest.raises(MalformedStream, match="start with a header"):
        read_decrypt_request(msgs[1:], 10_000)
    with pytest.raises(MalformedStream, match="second header"):
        read_decrypt_request([*msgs, msgs[0]], 10_000)
    with pytest.raises(StreamTooLarge):
        read_decrypt_request(msgs, 4000)
    with pytest.raises(MalformedStream, match="ended after"):
        read_decrypt_request(msgs[:-1], 10_000)
    unsigned = list(decrypt_request_messages(req.with_signature(b""), piece_size=1024))
    with pytest.raises(MalformedStream, match="coordinator signature"):
        read_decrypt_request(unsigned, 10_000)
    bad_sig = dataclasses.replace(req, envelopes=(SignedEnvelope(b"x", b"short"),))
    with pytest.raises(MalformedStream, match="64 bytes"):
        read_decrypt_request(list(decrypt_request_messages(bad_sig)), 10_000)


def _result() -> DecryptResult:
    rng = np.random.default_rng(1)
    return DecryptResult(
        federation_id="fed",
        round=3,
        sums={0: rng.normal(size=300), 4: rng.normal(size=17)},
        flooding_std={0: 1e-6, 4: 2e-6},
        keyholder_signature=b"\x09" * 64,
    )


def test_decrypt_result_round_trip_in_pieces() -> None:
    res = _result()
    messages = list(decrypt_result_messages(res, piece_size=800))  # 100 values per piece
    assert sum(m.WhichOneof("kind") == "sums" for m in messages) == 3 + 1
    assert messages[-1].WhichOneof("kind") == "trailer"
    again = read_decrypt_result(messages, max_values=1000)
    assert again.digest() == res.digest() and again.keyholder_signature == res.keyholder_signature
    for cid in res.sums:
        assert np.array_equal(again.sums[cid], res.sums[cid])
    changed = DecryptResult("fed", 3, {**res.sums, 4: res.sums[4] + 1e-12}, res.flooding_std)
    assert changed.digest() != res.digest()


def test_decrypt_result_bad_streams() -> None:
    msgs = list(decrypt_result_messages(_result(), piece_size=800))
    with pytest.raises(MalformedStream, match="without its trailer"):
        read_decrypt_result(msgs[:-1], 1000)
    with pytest.raises(MalformedStream, match="after its trailer"):
        read_decrypt_result([*msgs, msgs[0]], 1000)
    with pytest.raises(MalformedStream, match="more than"):
        read_decrypt_result(msgs, 100)
    with pytest.raises(MalformedStream, match="out of order"):
        read_decrypt_result([msgs[1], msgs[0], *msgs[2:]], 1000)
    with pytest.raises(MalformedStream, match="incomplete"):
        read_decrypt_result([msgs[0], *msgs[3:]], 1000)
    nan = DecryptResult("fed", 1, {0: np.array([1.0, np.nan])}, {0: 1.0})
    with pytest.raises(MalformedStream, match="non-finite"):
        read_decrypt_result(decrypt_result_messages(nan), 1000)


def test_receipt_and_envelope_conversion() -> None:
    fields = ReceiptFields("fed", 2, "site-a", "e" * 64, 1_700_000_000_123)
    msg = receipt_to_proto(fields, b"\x01" * 64)
    again, sig = receipt_from_proto(pb.Receipt.FromString(msg.SerializeToString()))
    assert again == fields and sig == b"\x01" * 64
    assert fields.canonical_bytes() == again.canonical_bytes()
    assert b'"round":2' in fields.canonical_bytes()
    env = SignedEnvelope(b"canonical", b"\x02" * 64)
    assert signed_envelope_from_proto(signed_envelope_to_proto(env)) == env
    with pytest.raises(MalformedStream, match="empty"):
        signed_envelope_from_proto(pb.SignedEnvelope(signature=b"\x02" * 64))
    with pytest.raises(MalformedStream, match="64 bytes"):
        signed_envelope_from_proto(pb.SignedEnvelope(envelope=b"x", signature=b"\x02"))


def test_upload_reassembly() -> None:
    chunks = {0: b"a" * 2500, 3: b"b" * 10, 7: b""}
    header = pb.UploadHeader(signed_envelope=pb.SignedEnvelope(envelope=b"e", signature=b"s"))
    messages = list(upload_messages(header, chunks, piece_size=1000))
    got_header, got = read_upload(messages, max_total=10_000)
    assert got_header.total_size == 2510 and got == chunks

    def stream(*pieces: pb.CiphertextPiece, total: int = 20) -> Iterator[pb.UploadMessage]:
        yield pb.UploadMessage(header=pb.UploadHeader(total_size=total))
        for p in pieces:
            yield pb.UploadMessage(piece=p)

    P = pb.CiphertextPiece
    with pytest.raises(MalformedStream, match="resumed"):
        read_upload(
            stream(
                P(chunk_id=1, data=b"x"),
                P(chunk_id=2, data=b"y"),
                P(chunk_id=1, offset=1, data=b"z"),
            ),
            100,
        )
    with pytest.raises(MalformedStream, match="ascend"):
        read_upload(stream(P(chunk_id=2, data=b"x"), P(chunk_id=1, data=b"y")), 100)
    with pytest.raises(MalformedStream, match="offset"):
        read_upload(stream(P(chunk_id=1, offset=5, data=b"x")), 100)
    with pytest.raises(MalformedStream, match="declared"):
        read_upload(stream(P(chunk_id=1, data=b"x")), 100)
    with pytest.raises(StreamTooLarge, match="more than the declared"):
        read_upload(stream(P(chunk_id=1, data=b"x" * 21)), 100)
    with pytest.raises(StreamTooLarge, match="exceeds the limit"):
        ChunkReassembler(101, 100)
    assert [p.offset for p in iter_ciphertext_pieces({5: b"q" * 2048}, 1024)] == [0, 1024]
