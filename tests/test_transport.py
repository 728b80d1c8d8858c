"""Real gRPC on 127.0.0.1 (port 0) with mutual TLS from provisioned kits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from cipherfed.config import loads_config
from cipherfed.provisioning import ProvisionResult, provision
from proto import cipherfed_pb2 as pb
from proto import cipherfed_pb2_grpc as pb_grpc
from proto.streams import (
    MalformedStream,
    StreamTooLarge,
    TransportError,
    assemble_blob,
    iter_blob_chunks,
    read_upload,
    upload_messages,
)
from proto.transport import (
    MAX_MESSAGE_BYTES,
    TlsIdentity,
    abort,
    check_health,
    create_channel,
    create_server,
    peer_identity,
    wait_ready,
)

FED = """
[federation]
id = "{fid}"
min_participants = 1
rounds = 1
[network]
coordinator = "127.0.0.1:0"
keyholder = "127.0.0.1:0"
[[sites]]
id = "site-a"
data = "actg175:0"
[[sites]]
id = "site-b"
data = "actg175:1"
"""
MAX_UPLOAD = 100 * 1024 * 1024
BIG = 80_000_000  # a 10M-parameter float64 model


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory) -> ProvisionResult:
    out = tmp_path_factory.mktemp("kits")
    return provision(loads_config(FED.format(fid="fed-one")), out / "fed")


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> ProvisionResult:
    out = tmp_path_factory.mktemp("foreign")
    return provision(loads_config(FED.format(fid="fed-other")), out / "fed")


@pytest.fixture(scope="module")
def big_blob() -> bytes:
    return np.random.default_rng(0).bytes(BIG)


class _Servicer(pb_grpc.CoordinatorServicer):
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def Enrol(self, request: pb.EnrolRequest, context: grpc.ServicerContext) -> pb.EnrolResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")
        raise AssertionError

    def GetPublicContext(
        self, request: pb.ContextRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BlobChunk]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")
        raise AssertionError

    def GetRound(
        self, request: pb.RoundQuery, context: grpc.ServicerContext
    ) -> pb.RoundAnnouncement:
        peer = peer_identity(context)
        return pb.RoundAnnouncement(federation_id=peer.common_name, round=1)

    def DownloadModel(
        self, request: pb.ModelRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BlobChunk]:
        yield from iter_blob_chunks(self.blob)

    def UploadUpdate(
        self, request_iterator: Iterator[pb.UploadMessage], context: grpc.ServicerContext
    ) -> pb.Receipt:
        peer = peer_identity(context)
        try:
            header, chunks = read_upload(request_iterator, MAX_UPLOAD)
        except TransportError as exc:
            abort(context, exc)
        digest = hashlib.sha256(b"".join(chunks[c] for c in sorted(chunks))).hexdigest()
        return pb.Receipt(
            site_id=peer.common_name,
            round=len(header.signed_envelope.envelope),
            envelope_digest=digest,
            accepted_unix_ms=len(chunks),
        )


@pytest.fixture(scope="module")
def server(kits: ProvisionResult, big_blob: bytes) -> Iterator[int]:
    identity = TlsIdentity.from_kit(kits.coordinator_kit)
    srv, port, _health = create_server("127.0.0.1:0", identity, max_workers=4)
    pb_grpc.add_CoordinatorServicer_to_server(_Servicer(big_blob), srv)
    srv.start()
    try:
        yield port
    finally:
        srv.stop(0).wait()


def _channel(kit: Path, port: int) -> grpc.Channel:
    return create_channel(f"127.0.0.1:{port}", TlsIdentity.from_kit(kit))


def test_identity_is_certificate_common_name(kits: ProvisionResult, server: int) -> None:
    with _channel(kits.site_kits["site-a"], server) as ch:
        wait_ready(ch, 10)
        assert check_health(ch)
        reply = pb_grpc.CoordinatorStub(ch).GetRound(pb.RoundQuery(), timeout=10)
        assert reply.federation_id == "site-a"
    with _channel(kits.keyholder_kit, server) as ch:
        reply = pb_grpc.CoordinatorStub(ch).GetRound(pb.RoundQuery(), timeout=10)
        assert reply.federation_id == "keyholder"


def test_server_name_override(kits: ProvisionResult, server: int) -> None:
    identity = TlsIdentity.from_kit(kits.site_kits["site-b"])
    with create_channel(f"localhost:{server}", identity, server_name="coordinator") as ch:
        assert check_health(ch)


def test_unknown_ca_client_is_refused(foreign: ProvisionResult, server: int) -> None:
    with _channel(foreign.site_kits["site-a"], server) as ch:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.CoordinatorStub(ch).GetRound(pb.RoundQuery(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_without_certificate_is_refused(kits: ProvisionResult, server: int) -> None:
    ca = (kits.coordinator_kit / "ca.pem").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(f"127.0.0.1:{server}", creds) as ch:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.CoordinatorStub(ch).GetRound(pb.RoundQuery(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_refuses_server_of_other_ca(kits: ProvisionResult, foreign: ProvisionResult) -> None:
    identity = TlsIdentity.from_kit(foreign.coordinator_kit)
    srv, port, _ = create_server("127.0.0.1:0", identity)
    srv.start()
    try:
        with _channel(kits.site_kits["site-a"], port) as ch:
            with pytest.raises(grpc.RpcError) as info:
                check_health(ch, timeout_s=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop(0).wait()


def test_80mb_model_streams_down(kits: ProvisionResult, server: int, big_blob: bytes) -> None:
    assert BIG > 4 * 1024 * 1024 and BIG > MAX_MESSAGE_BYTES
    with _channel(kits.site_kits["site-a"], server) as ch:
        stream = pb_grpc.CoordinatorStub(ch).DownloadModel(pb.ModelRequest(round=1), timeout=120)
        blob = assemble_blob(stream, max_size=MAX_UPLOAD, what="model")
    assert len(blob) == BIG and blob == big_blob


def test_80mb_update_streams_up(kits: ProvisionResult, server: int, big_blob: bytes) -> None:
    # 80 MB cut into 10 ciphertext chunks of 8 MB (each far above the 4 MiB default).
    size = BIG // 10
    chunks = {cid: big_blob[cid * size : (cid + 1) * size] for cid in range(10)}
    header = pb.UploadHeader(signed_envelope=pb.SignedEnvelope(envelope=b"env", signature=b"s"))
    with _channel(kits.site_kits["site-b"], server) as ch:
        receipt = pb_grpc.CoordinatorStub(ch).UploadUpdate(
            upload_messages(header, chunks), timeout=120
        )
    assert receipt.site_id == "site-b" and receipt.round == 3
    assert receipt.accepted_unix_ms == 10
    assert receipt.envelope_digest == hashlib.sha256(big_blob).hexdigest()


def test_oversized_upload_is_resource_exhausted(kits: ProvisionResult, server: int) -> None:
    header = pb.UploadHeader(total_size=MAX_UPLOAD + 1)

    def lying() -> Iterator[pb.UploadMessage]:
        yield pb.UploadMessage(header=header)
        yield pb.UploadMessage(piece=pb.CiphertextPiece(chunk_id=0, data=b"x"))

    with _channel(kits.site_kits["site-a"], server) as ch:
        stub = pb_grpc.CoordinatorStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadUpdate(lying(), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "exceeds the limit" in (info.value.details() or "")

        # Declaring little, then sending more than declared, is refused the same way.
        small = pb.UploadHeader()
        msgs = upload_messages(small, {0: b"a" * 10})
        first = next(msgs)
        first.header.total_size = 5
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadUpdate(iter([first, *msgs]), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        # A stream that does not start with a header is INVALID_ARGUMENT.
        garbage = iter([pb.UploadMessage(piece=pb.CiphertextPiece(chunk_id=0, data=b"zz"))])
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadUpdate(garbage, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_blob_assembly_refusals() -> None:
    data = bytes(range(256)) * 10
    pieces = list(iter_blob_chunks(data, piece_size=1000))
    assert len(pieces) == 3 and assemble_blob(pieces, 10_000) == data
    assert assemble_blob(iter_blob_chunks(b""), 10) == b""
    with pytest.raises(StreamTooLarge):
        assemble_blob(pieces, 100)
    with pytest.raises(MalformedStream, match="offset"):
        assemble_blob([pieces[0], pieces[2]], 10_000)
    with pytest.raises(MalformedStream, match="ended after"):
        assemble_blob(pieces[:2], 10_000)
    with pytest.raises(MalformedStream, match="no piece"):
        assemble_blob([], 10_000)
    tampered = pb.BlobChunk()
    tampered.CopyFrom(pieces[1])
    tampered.data = b"\x00" * len(pieces[1].data)
    with pytest.raises(MalformedStream, match="SHA-256"):
        assemble_blob([pieces[0], tampered, pieces[2]], 10_000)
    with pytest.raises(ValueError):
        list(iter_blob_chunks(data, piece_size=2 * 1024 * 1024))


def test_reassembler_refuses_empty_pieces_and_too_many_chunks() -> None:
    from proto import cipherfed_pb2 as pb
    from proto.streams import ChunkReassembler, MalformedStream, StreamTooLarge

    r = ChunkReassembler(100, 100)
    r.add(pb.CiphertextPiece(chunk_id=0, offset=0, data=b"a"))
    with pytest.raises(MalformedStream, match="empty piece"):
        r.add(pb.CiphertextPiece(chunk_id=0, offset=1, data=b""))
    r = ChunkReassembler(100, 100, max_chunks=2)
    r.add(pb.CiphertextPiece(chunk_id=0, offset=0, data=b"a"))
    r.add(pb.CiphertextPiece(chunk_id=1, offset=0, data=b"b"))
    with pytest.raises(StreamTooLarge, match="more than 2 chunks"):
        r.add(pb.CiphertextPiece(chunk_id=2, offset=0, data=b"c"))
