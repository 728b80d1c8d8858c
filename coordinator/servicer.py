"""The coordinator's gRPC servicer: converts wire messages, delegates to the core, and maps
domain errors to status codes. No round logic lives here."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn, TypeVar

import grpc

import crypto
from coordinator.blobs import BlobCorrupted
from coordinator.errors import (
    CoordinatorError,
    DuplicateSubmission,
    InvalidSubmission,
    NotPermitted,
    TooLarge,
    WrongRound,
)
from coordinator.service import Coordinator, Upload
from proto import cipherfed_pb2 as pb
from proto import cipherfed_pb2_grpc as pb_grpc
from proto import streams, transport, wire

logger = logging.getLogger(__name__)

_STATUS: dict[type[CoordinatorError], grpc.StatusCode] = {
    InvalidSubmission: grpc.StatusCode.INVALID_ARGUMENT,
    WrongRound: grpc.StatusCode.FAILED_PRECONDITION,
    DuplicateSubmission: grpc.StatusCode.ALREADY_EXISTS,
    NotPermitted: grpc.StatusCode.PERMISSION_DENIED,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_PHASE = {
    "open": pb.ROUND_STATE_OPEN,
    "aggregating": pb.ROUND_STATE_AGGREGATING,
    "waiting": pb.ROUND_STATE_WAITING,
    "finished": pb.ROUND_STATE_FINISHED,
}

F = TypeVar("F", bound=Callable[..., Any])


def _abort(context: grpc.ServicerContext, exc: CoordinatorError) -> NoReturn:
    code = _STATUS.get(type(exc), grpc.StatusCode.INVALID_ARGUMENT)
    context.abort(code, str(exc))
    raise AssertionError("unreachable")  # context.abort raises


def _unary(fn: F) -> F:
    """Map domain errors of a unary-response handler to gRPC statuses."""

    @functools.wraps(fn)
    def wrapper(self: CoordinatorServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except CoordinatorError as exc:
            self.core.note_refusal(fn.__name__, exc)
            _abort(context, exc)

    return wrapper  # type: ignore[return-value]


def _streaming(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(
        self: CoordinatorServicer, request: Any, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except CoordinatorError as exc:
            self.core.note_refusal(fn.__name__, exc)
            _abort(context, exc)

    return wrapper  # type: ignore[return-value]


def peer_site(context: grpc.ServicerContext, known: Mapping[str, str]) -> str:
    """The common name of the caller's verified client certificate.

    ``known`` maps site ids to the fingerprint of the certificate provisioned for them; a
    certificate of the right name but not the provisioned one is refused.
    """
    try:
        peer = transport.peer_identity(context)
    except streams.TransportError as exc:
        transport.abort(context, exc)
    expected = known.get(peer.common_name)
    if expected and peer.cert_fingerprint and peer.cert_fingerprint != expected:
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"certificate of {peer.common_name!r} is not the one provisioned for it",
        )
    return peer.common_name


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, core: Coordinator, context_bytes: bytes) -> None:
        self.core = core
        self.context_bytes = context_bytes

    @_unary
    def Enrol(self, request: pb.EnrolRequest, context: grpc.ServicerContext) -> pb.EnrolResponse:
        caller = peer_site(context, self.core.spec.cert_fingerprints)
        spec = self.core.spec
        if request.federation_id != spec.federation_id:
            raise InvalidSubmission(f"federation id {request.federation_id!r} is not ours")
        self.core.enrol(caller, request.site_id, bytes(request.verify_key))
        return pb.EnrolResponse(
            federation_id=spec.federation_id,
            site_id=caller,
            current_round=self.core.state.round,
            total_rounds=spec.policy.rounds,
            min_participants=spec.policy.min_participants,
            params_fingerprint=self.core.ctx.fingerprint,
            layout_fingerprint=spec.layout.fingerprint,
            coordinator_verify_key=self.core.verify_key_bytes,
        )

    @_unary
    def GetRound(
        self, request: pb.RoundQuery, context: grpc.ServicerContext
    ) -> pb.RoundAnnouncement:
        caller = peer_site(context, self.core.spec.cert_fingerprints)
        if caller not in self.core.spec.roster:
            raise NotPermitted(f"{caller!r} is not a site of this federation")
        a = self.core.announcement(caller)
        spec = self.core.spec
        return pb.RoundAnnouncement(
            federation_id=spec.federation_id,
            round=a.round,
            state=_PHASE[a.phase],
            deadline_unix=a.deadline,
            min_participants=spec.policy.min_participants,
            total_rounds=spec.policy.rounds,
            model_sha256=a.model_digest,
            model_size=a.model_size,
            params_fingerprint=self.core.ctx.fingerprint,
            layout_fingerprint=spec.layout.fingerprint,
            submitted=a.submitted,
            attempt=a.attempt,
        )

    @_streaming
    def DownloadModel(
        self, request: pb.ModelRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BlobChunk]:
        caller = peer_site(context, self.core.spec.cert_fingerprints)
        if caller not in self.core.spec.roster:
            raise NotPermitted(f"{caller!r} is not a site of this federation")
        try:
            data = self.core.model_blob(int(request.round))
        except BlobCorrupted as exc:
            context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
        yield from streams.iter_blob_chunks(data)

    @_streaming
    def GetPublicContext(
        self, request: pb.ContextRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BlobChunk]:
        peer_site(context, self.core.spec.cert_fingerprints)
        fp = request.params_fingerprint
        if fp and fp != self.core.ctx.fingerprint:
            raise InvalidSubmission(
                f"parameter fingerprint {fp[:16]}... is not the federation's "
                f"{self.core.ctx.fingerprint[:16]}..."
            )
        yield from streams.iter_blob_chunks(self.context_bytes)

    @_unary
    def UploadUpdate(
        self, request_iterator: Iterator[pb.UploadMessage], context: grpc.ServicerContext
    ) -> pb.Receipt:
        caller = peer_site(context, self.core.spec.cert_fingerprints)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "header":
            raise InvalidSubmission("an upload must start with its header")
        header = first.header
        try:
            signed = wire.signed_envelope_from_proto(header.signed_envelope)
            env = crypto.UpdateEnvelope.from_canonical_bytes(signed.envelope)
        except (ValueError, TypeError, streams.TransportError, crypto.InvalidUpdate) as exc:
            raise InvalidSubmission(f"malformed envelope: {exc}") from exc
        total = int(header.total_size)
        self.core.check_upload_header(caller, env, total)
        t0 = time.perf_counter()
        try:
            body = streams.ChunkReassembler(total, self.core.spec.max_update_bytes)
            for msg in request_iterator:
                if msg.WhichOneof("kind") != "piece":
                    raise InvalidSubmission("only ciphertext pieces may follow the header")
                body.add(msg.piece)
            parts = body.finish()
        except streams.StreamTooLarge as exc:
            raise TooLarge(str(exc)) from exc
        except streams.MalformedStream as exc:
            raise InvalidSubmission(str(exc)) from exc
        timings = {str(k): float(v) for k, v in header.timings.items()}
        timings["upload_s"] = time.perf_counter() - t0
        receipt = self.core.submit(
            Upload(
                caller=caller,
                envelope=env,
                signature=signed.signature,
                chunks=parts,
                timings=timings,
            )
        )
        return wire.receipt_to_proto(receipt.fields, receipt.signature)
