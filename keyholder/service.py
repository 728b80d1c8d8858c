"""The key holder's gRPC servicer: converts messages, checks the caller, delegates.

``DecryptAggregate`` is answered only to the coordinator (certificate common name
``coordinator`` and the certificate fingerprint from the roster); ``GetPublicContext`` to
any member of the federation (the mutual-TLS handshake already proved CA membership).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
from grpc_health.v1 import health, health_pb2

from proto import cipherfed_pb2 as pb
from proto import cipherfed_pb2_grpc as pb_grpc
from proto.streams import TransportError, iter_blob_chunks
from proto.transport import TlsIdentity, abort, create_server, peer_identity
from proto.wire import decrypt_result_messages, read_decrypt_request

from .engine import KeyHolder
from .policy import PolicyRefusal

logger = logging.getLogger(__name__)

COORDINATOR_NAME = "coordinator"
SERVICE_NAME = "cipherfed.v1.KeyHolder"


class KeyHolderService(pb_grpc.KeyHolderServicer):
    def __init__(
        self,
        engine: KeyHolder,
        *,
        coordinator_cert_fingerprint: str,
        max_request_bytes: int,
    ) -> None:
        self._engine = engine
        self._coordinator_fp = coordinator_cert_fingerprint
        self._max_request_bytes = max_request_bytes

    def GetPublicContext(
        self, request: pb.ContextRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BlobChunk]:
        try:
            peer = peer_identity(context)
            if request.federation_id and request.federation_id != self._engine.policy.federation_id:
                raise TransportError(
                    f"this key holder serves federation {self._engine.policy.federation_id!r}",
                    grpc.StatusCode.PERMISSION_DENIED,
                )
            if (
                request.params_fingerprint
                and request.params_fingerprint != self._engine.params_fingerprint
            ):
                raise TransportError(
                    "CKKS parameter fingerprint differs from the key holder's",
                    grpc.StatusCode.FAILED_PRECONDITION,
                )
        except TransportError as exc:
            abort(context, exc)
        logger.debug("public context to %s", peer.common_name)
        yield from iter_blob_chunks(self._engine.public_context_bytes)

    def DecryptAggregate(
        self, request_iterator: Iterator[pb.DecryptMessage], context: grpc.ServicerContext
    ) -> Iterator[pb.DecryptResultMessage]:
        try:
            peer = peer_identity(context)
        except TransportError as exc:
            abort(context, exc)
        if peer.common_name != COORDINATOR_NAME or peer.cert_fingerprint != self._coordinator_fp:
            reason = f"only the coordinator may request decryption (caller {peer.common_name!r})"
            self._engine.refuse("PERMISSION_DENIED", reason, peer=peer.common_name)
            abort(context, TransportError(reason, grpc.StatusCode.PERMISSION_DENIED))
        try:
            req = read_decrypt_request(request_iterator, self._max_request_bytes)
        except TransportError as exc:
            self._engine.refuse(exc.code.name, str(exc), peer=peer.common_name)
            abort(context, exc)
        try:
            result = self._engine.decrypt(req, peer.common_name)
        except PolicyRefusal as refusal:
            abort(context, TransportError(refusal.reason, grpc.StatusCode[refusal.code]))
        yield from decrypt_result_messages(result)


def build_server(
    service: KeyHolderService, identity: TlsIdentity, address: str, *, max_workers: int = 4
) -> tuple[grpc.Server, int, health.HealthServicer | None]:
    """A mutual-TLS server with the key-holder and health services (not started)."""
    server, port, health_servicer = create_server(address, identity, max_workers=max_workers)
    pb_grpc.add_KeyHolderServicer_to_server(service, server)
    if health_servicer is not None:
        health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer
