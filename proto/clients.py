"""Thin client helpers over the generated stubs (streams in, domain objects out)."""

from __future__ import annotations

import logging

import grpc

from . import cipherfed_pb2 as pb
from . import cipherfed_pb2_grpc as pb_grpc
from .streams import assemble_blob
from .wire import DecryptRequest, DecryptResult, decrypt_request_messages, read_decrypt_result

logger = logging.getLogger(__name__)

MAX_CONTEXT_BYTES = 64 * 1024 * 1024


class KeyHolderClient:
    """The coordinator's view of the key holder (errors surface as ``grpc.RpcError``)."""

    def __init__(self, channel: grpc.Channel, *, timeout_s: float = 300.0) -> None:
        self._stub = pb_grpc.KeyHolderStub(channel)
        self._timeout = timeout_s

    def public_context(self, federation_id: str = "", params_fingerprint: str = "") -> bytes:
        """The serialized public CKKS context (``crypto.PublicContext.from_bytes`` it)."""
        stream = self._stub.GetPublicContext(
            pb.ContextRequest(federation_id=federation_id, params_fingerprint=params_fingerprint),
            timeout=self._timeout,
        )
        return assemble_blob(stream, MAX_CONTEXT_BYTES, "public context")

    def decrypt(self, request: DecryptRequest, *, max_values: int) -> DecryptResult:
        """Stream a signed decrypt request; return the (unverified) flooded sums.

        Verify ``result.keyholder_signature`` over ``result.digest()`` with the key holder's
        verify key (domain ``proto.wire.DECRYPT_RESULT_DOMAIN``) before using the sums.
        """
        stream = self._stub.DecryptAggregate(
            decrypt_request_messages(request), timeout=self._timeout
        )
        return read_decrypt_result(stream, max_values)
