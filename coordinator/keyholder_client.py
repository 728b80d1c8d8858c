"""gRPC client of the key holder: fetch the public context, ask for an aggregate's decryption.

Decrypt requests are signed by the coordinator; answers must carry a valid key-holder
signature (from the roster) or they are refused.
"""

from __future__ import annotations

import logging

import grpc

import crypto
from coordinator.keyholder_link import (
    DecryptJob,
    DecryptOutcome,
    KeyholderRefused,
    KeyholderUnavailable,
)
from proto import streams, transport, wire
from proto.clients import KeyHolderClient

logger = logging.getLogger(__name__)

_TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN}
)


class GrpcKeyholder:
    def __init__(
        self,
        address: str,
        identity: transport.TlsIdentity,
        *,
        federation_id: str,
        params_fingerprint: str,
        layout: crypto.ChunkLayout,
        signing_key: crypto.SigningKey,
        keyholder_key: crypto.VerifyKey,
        server_name: str | None = "keyholder",
        timeout_s: float = 120.0,
    ) -> None:
        self._channel = transport.create_channel(address, identity, server_name=server_name)
        self._client = KeyHolderClient(self._channel, timeout_s=timeout_s)
        self.federation_id = federation_id
        self.params_fingerprint = params_fingerprint
        self.layout = layout
        self._key = signing_key
        self._kh_key = keyholder_key

    def close(self) -> None:
        self._channel.close()

    def _rpc_error(self, what: str, exc: grpc.RpcError) -> Exception:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code in _TRANSIENT:
            return KeyholderUnavailable(f"{what}: {code.name}: {details}")
        return KeyholderRefused(f"{what}: {code.name}: {details}")

    def public_context(self) -> bytes:
        try:
            return self._client.public_context(self.federation_id, self.params_fingerprint)
        except grpc.RpcError as exc:
            raise self._rpc_error("public context", exc) from None

    def decrypt(self, job: DecryptJob) -> DecryptOutcome:
        req = wire.DecryptRequest(
            federation_id=self.federation_id,
            round=job.round,
            normalizers=dict(job.normalizers),
            envelopes=tuple(job.envelopes),
            params_fingerprint=self.params_fingerprint,
            layout_fingerprint=self.layout.fingerprint,
            aggregate=job.aggregate,
        )
        req = req.with_signature(
            crypto.sign_message(self._key, wire.DECRYPT_REQUEST_DOMAIN, req.digest())
        )
        try:
            result = self._client.decrypt(req, max_values=self.layout.total)
        except grpc.RpcError as exc:
            raise self._rpc_error(f"decrypt round {job.round}", exc) from None
        except streams.TransportError as exc:
            raise KeyholderRefused(f"decrypt round {job.round}: malformed answer: {exc}") from exc
        if result.federation_id != self.federation_id or result.round != job.round:
            raise KeyholderRefused(f"answer names round {result.round} of {result.federation_id}")
        extra = set(result.sums) - set(job.normalizers)
        if extra:
            raise KeyholderRefused(f"answer has chunks {sorted(extra)} the aggregate lacks")
        withheld = sorted(set(job.normalizers) - set(result.sums))
        if withheld:  # fewer than K contributors: those chunks keep W(t-1)
            logger.info("round %d: key holder withheld chunks %s", job.round, withheld)
        try:
            crypto.verify_message(
                self._kh_key,
                wire.DECRYPT_RESULT_DOMAIN,
                result.digest(),
                result.keyholder_signature,
            )
        except crypto.InvalidUpdate as exc:
            raise KeyholderRefused(f"key-holder signature does not verify: {exc}") from exc
        return DecryptOutcome(sums=dict(result.sums), flooding_std=dict(result.flooding_std))
